import sys

from harness.embed.cli import main

sys.exit(main())
