"""``python -m tabgrid.cli``."""

import sys

from tabgrid.cli.commands import main

sys.exit(main())
