import sys

from harness.prepare.cli import main

sys.exit(main())
