import sys

from brainstream.cli import main

sys.exit(main())
