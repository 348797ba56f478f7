import sys

from harness.predict.cli import main

sys.exit(main())
