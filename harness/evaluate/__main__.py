import sys

from harness.evaluate.cli import main

sys.exit(main())
