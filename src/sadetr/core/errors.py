"""User-facing exception types: bad data, bad config, bad checkpoint, bad submission.

Every error a user can cause is one of these; the CLI turns them into one message and exit code 2.
Each carries where the problem is (file, line, field) so that the message can point at it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


class SadetrError(Exception):
    """Base class of errors caused by user input (never by a bug in sadetr)."""


class DataError(SadetrError):
    """Malformed annotation line or feature file.

    >>> str(DataError("start >= end", path="a.jsonl", line=3, field="relevant_windows[0]"))
    'a.jsonl:3: relevant_windows[0]: start >= end'
    """

    def __init__(
        self,
        message: str,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class FeatureError(DataError):
    """Missing, truncated or corrupt feature file, wrong dimension, NaN/Inf values."""


class ConfigError(SadetrError):
    """Unknown config key, wrong type or bad override; names the dotted key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        shown = key if key is None or key.isprintable() else repr(key)  # a key typed with a newline: one line
        super().__init__(f"{shown}: {message}" if key else message)


class CheckpointError(SadetrError):
    """Unreadable checkpoint, or one whose model/feature set cannot be reproduced."""


def format_qids(qids: Iterable[object], limit: int = 20) -> str:
    """The first `limit` qids, comma-separated; strings quoted, and each with its type when int and str
    qids are mixed (so that 24 and '24' cannot look alike).

    >>> format_qids([24, "24"])
    "24 (int), '24' (str)"
    >>> format_qids(["a", "b"])
    "'a', 'b'"
    """
    shown = list(qids)[:limit]
    mixed = len({type(q) for q in shown}) > 1
    return ", ".join(f"{q!r} ({type(q).__name__})" if mixed else repr(q) for q in shown)


class SubmissionError(SadetrError):
    """Malformed prediction file; lists the offending qids."""

    def __init__(self, message: str, qids: Iterable[object] = ()) -> None:
        self.qids = list(qids)
        shown = format_qids(self.qids)
        more = f" (+{len(self.qids) - 20} more)" if len(self.qids) > 20 else ""
        super().__init__(f"{message}: qids {shown}{more}" if self.qids else message)


class OutputError(SadetrError):
    """An output could not be written (full disk, no permission); the previous file is left intact."""


def state_mismatch(
    expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]], show: int = 3
) -> str:
    """Short summary of how two state dicts (key -> shape) differ; "" when they match.

    >>> state_mismatch({"a": (2,), "b": (3,)}, {"a": (4,), "c": (1,)})
    '1 missing (b), 1 unexpected (c), 1 with another shape (a: [4] vs [2])'
    """

    def listed(items: list[str]) -> str:
        return ", ".join(items[:show]) + (f", ... (+{len(items) - show})" if len(items) > show else "")

    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [
        f"{k}: {list(got[k])} vs {list(expected[k])}"
        for k in sorted(set(got) & set(expected))
        if tuple(got[k]) != tuple(expected[k])
    ]
    parts = [
        f"{len(items)} {label} ({listed(items)})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("with another shape", shapes))
        if items
    ]
    return ", ".join(parts)


def user_io_error_line(err: BaseException) -> str | None:
    """One line for an OS, decoding or JSON/YAML error that escaped a read site; None for anything else.

    The CLI's safety net: read sites should already turn these into a `SadetrError` naming the file.
    """
    import json

    name = type(err).__name__
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    if isinstance(err, UnicodeDecodeError):
        return f"not a UTF-8 text file ({err.reason} at byte {err.start})"
    if isinstance(err, json.JSONDecodeError):
        return f"invalid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
    if type(err).__module__.split(".")[0] == "yaml" and isinstance(err, Exception):
        first = (str(err).strip().splitlines() or [name])[0]
        return f"invalid YAML ({first})"
    return None


class DivergedError(SadetrError):
    """A training whose outputs, losses, gradients or weights became NaN/inf (e.g. a learning rate far
    too high); names the step, the non-finite terms and the last checkpoint written before it."""
