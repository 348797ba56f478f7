import sys

from harness.config.cli import main

sys.exit(main())
