"""Command-line entry point: `sadetr <command>`; each command lives in `sadetr.cli.commands.<name>`.

A command module exposes `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
Command modules are imported only when their command is parsed (`COMMANDS` holds the names and one-line
helps that `sadetr --help` shows), so `sadetr --help` and the commands that do not need torch never import it.
User errors (`SadetrError`) become one message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

from sadetr import __version__
from sadetr.core.errors import SadetrError, user_io_error_line
from sadetr.core.ranges import check_args

# command -> the one-line help of `sadetr --help`; the module `sadetr.cli.commands.<command with _ for ->`
# is imported only when the command is parsed. tests/test_cli_lazy.py checks that every module is here.
COMMANDS: dict[str, str] = {
    "app": "browser app: moments of a video, search of an index",
    "bench": "training/inference speed, memory and evaluation time",
    "bench-corpus": "benchmark corpus search (latency, memory, two-stage recall)",
    "compare": "train several models identically and compare them (table + mAP curves)",
    "cut": "cut [start, end) seconds of a video into a clip",
    "demo": "generate synthetic data, train, evaluate and predict (minutes, CPU)",
    "evaluate": "score a submission (JSON lines) against ground truth",
    "evaluate-corpus": "VCMR / SVMR / VR recall of a corpus index on an annotation split",
    "export": "export a trained model: portable model folder, ONNX graph (+ int8)",
    "extract": "extract CLIP and SlowFast clip features from videos",
    "extract-text": "extract CLIP text features of queries",
    "import-checkpoint": "convert a released Moment-DETR/QD-DETR checkpoint",
    "index": "index a video library for corpus search (sadetr search)",
    "predict": "predict moments and saliency for a split (or a video)",
    "reproduce": "print the commands that reproduce a table of the paper",
    "search": "search an indexed video library (sadetr index) for a text query",
    "serve": "HTTP service: moments of a video, search of an index",
    "synth": "generate a synthetic dataset in the real feature layout",
    "train": "train a model (single process, or distributed under torchrun)",
}


def command_module(name: str) -> str:
    """`sadetr.cli.commands` module of a command name: `extract-text` -> `extract_text`."""
    return name.replace("-", "_")


class _LazyCommandParser(argparse.ArgumentParser):
    """A command's parser that imports its module and lets it add its arguments on first use."""

    def __init__(self, *args: Any, module: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module = module

    def _load(self) -> None:
        if self._module is not None:
            module, self._module = self._module, None
            importlib.import_module(f"sadetr.cli.commands.{module}").register(_IntoParser(self))

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._load()
        return super().format_help()


class _IntoParser:
    """Stands in for the subparsers action in `register`: `add_parser` fills the existing lazy parser."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        for key in ("description", "epilog", "formatter_class"):
            if key in kwargs:
                setattr(self.parser, key, kwargs[key])
        return self.parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sadetr", description="SA-DETR: video moment retrieval and highlight detection."
    )
    parser.add_argument("--version", action="version", version=f"sadetr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_LazyCommandParser)
    for name in sorted(COMMANDS):
        sub.add_parser(name, help=COMMANDS[name], module=command_module(name))
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
        check_args(args)  # the flags declared with `sadetr.core.ranges.add_ranged`
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
