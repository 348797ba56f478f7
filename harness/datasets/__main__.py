import sys

from harness.datasets.cli import main

sys.exit(main())
