"""``python -m fleetscan`` runs the command line."""

import sys

from fleetscan.cli import main

sys.exit(main())
