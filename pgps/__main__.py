import sys

from pgps.cli import main

sys.exit(main())
