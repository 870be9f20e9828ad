"""`python -m sadetr` runs the CLI."""

import sys

from sadetr.cli import main

sys.exit(main())
