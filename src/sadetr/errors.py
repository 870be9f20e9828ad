"""User-facing exception types: bad data, bad config, bad checkpoint, bad submission.

Every error a user can cause is one of these; the CLI turns them into one message and exit code 2.
Each carries where the problem is (file, line, field) so that the message can point at it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


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
        path: str | Path | None = None,
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
        super().__init__(f"{key}: {message}" if key else message)


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


class DivergedError(SadetrError):
    """A training whose outputs, losses, gradients or weights became NaN/inf (e.g. a learning rate far
    too high); names the step, the non-finite terms and the last checkpoint written before it."""
