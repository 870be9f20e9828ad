"""Command-line entry point: `sadetr <command>`; each command lives in `sadetr.commands.<name>`.

A command module exposes `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
User errors (`SadetrError`) become one message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from sadetr import __version__, commands
from sadetr.errors import SadetrError, user_io_error_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sadetr", description="SA-DETR: video moment retrieval and highlight detection."
    )
    parser.add_argument("--version", action="version", version=f"sadetr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"sadetr.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except SadetrError as err:
        print(f"sadetr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sadetr {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # safety net: OS / decoding / JSON / YAML errors a read site missed
        line = user_io_error_line(err)
        if line is None:
            raise  # a genuine bug: keep its traceback
        print(f"sadetr {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
