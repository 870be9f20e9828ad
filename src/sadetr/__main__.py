"""`python -m sadetr` runs the CLI."""

import sys

from sadetr.cli.main import main

sys.exit(main())
