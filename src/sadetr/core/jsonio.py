"""Atomic file output for run directories: text, JSON, JSON lines (temp file + `os.replace`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from sadetr.core.atomic import atomic_write_text  # re-exported for the engine


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Any]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
