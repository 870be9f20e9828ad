"""Reading JSON-lines files (errors name file and line) and writing metrics JSON atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sadetr.core.atomic import atomic_write_text
from sadetr.core.errors import DataError
from sadetr.core.paths import read_user_text


def load_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per line; blank lines are skipped; a bad line raises `DataError(path, line)`."""
    path = Path(path)
    text = read_user_text(path, "JSON-lines file")
    records: list[dict] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            message = f"invalid JSON ({err.msg} at column {err.colno})"
            raise DataError(message, path=path, line=line_no) from err
        except RecursionError:
            raise DataError("invalid JSON (nested too deeply)", path=path, line=line_no) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object, got {type(record).__name__}", path=path, line=line_no)
        records.append(record)
    return records


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON via a temp file in the same folder, then `os.replace`."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
