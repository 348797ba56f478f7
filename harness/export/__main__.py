import sys

from harness.export.cli import main

sys.exit(main())
