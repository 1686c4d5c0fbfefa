import sys

from clipcrawl.cli import main

sys.exit(main())
