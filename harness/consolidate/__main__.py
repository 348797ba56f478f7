import sys

from harness.consolidate.cli import main

sys.exit(main())
