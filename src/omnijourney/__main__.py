import sys

from omnijourney.cli import main

sys.exit(main())
