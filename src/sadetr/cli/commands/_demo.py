"""The `--demo [DIR]` option of `search`, `serve` and `app`: the output of `sadetr demo` as an input.

Not a command of its own (the leading underscore hides it from discovery).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sadetr.core.paths import DEMO_DIR


def add_demo_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """`--demo` alone means DEMO_DIR; `--demo DIR` names another; absent, `args.demo` is None."""
    parser.add_argument("--demo", type=Path, nargs="?", const=DEMO_DIR, metavar="DIR", help=help)
