"""The allowed range of every number a user sets, in one place: CLI flags and HTTP fields share them.

A `Range` is typed (int or float), refuses NaN and infinities, and has inclusive or exclusive bounds.
On the command line, `add_ranged` declares a flag with its range and `check_args` (called by the CLI
before a command runs) refuses a value outside it in one line (`--port: must be an integer in
[1, 65535], got 99999`); the HTTP schemas take the same bounds through `Range.field`, and the service
limits (`sadetr.serve.limits.Limits`) check theirs with `Range.check`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

from sadetr.core.errors import ConfigError

RANGED = "_ranged_flags"  # the parser default under which `add_ranged` records its flags


@dataclass(frozen=True)
class Range:
    """`kind` values in [lo, hi] (`lo_open`: lo excluded), finite only; `note` explains a special value."""

    kind: type[int] | type[float]
    lo: float
    hi: float
    lo_open: bool = False
    note: str = ""

    def describe(self) -> str:
        """What a valid value is, e.g. 'an integer in [1, 65535]' or 'a number in (0, 1e+05]'.

        >>> Range(int, 0, 1024, note="0: all cores").describe()
        'an integer in [0, 1024] (0: all cores)'
        >>> Range(float, 0, 60, lo_open=True).describe()
        'a finite number in (0, 60]'
        """
        what = "an integer" if self.kind is int else "a finite number"
        interval = f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"
        return f"{what} in {interval}" + (f" ({self.note})" if self.note else "")

    def ok(self, value: object) -> bool:
        """True when `value` is of the kind (an int is a valid float, a bool is neither) and in range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        return above and value <= self.hi

    def check(self, value: Any, key: str) -> Any:
        """`value` itself, or a `ConfigError` on `key` saying what is allowed.

        >>> Range(float, 0, 10, lo_open=True).check(float("nan"), "--timeout-s")
        Traceback (most recent call last):
        ...
        sadetr.core.errors.ConfigError: --timeout-s: must be a finite number in (0, 10], got nan
        """
        if not self.ok(value):
            raise ConfigError(f"must be {self.describe()}, got {value!r}", key=key)
        return value

    def field(self) -> dict[str, Any]:
        """The bounds as pydantic `Field`/`Form` keywords (NaN and infinities refused for floats)."""
        bounds: dict[str, Any] = {
            "gt" if self.lo_open else "ge": self.kind(self.lo),
            "le": self.kind(self.hi),
        }
        if self.kind is float:
            bounds["allow_inf_nan"] = False
        return bounds


# ----------------------------------------------------------------- the service and the browser app
PORT = Range(int, 1, 65535)
THREADS = Range(int, 0, 4096, note="0: all cores")
UPLOAD_MB = Range(float, 0, 100_000, lo_open=True)
VIDEO_S = Range(float, 0, 1_000_000, lo_open=True)
QUERY_CHARS = Range(int, 1, 100_000)
TIMEOUT_S = Range(float, 0, 86_400, lo_open=True)
PENDING = Range(int, 1, 100_000)
TOP = Range(int, 1, 1000)  # hits of a search, moments shown by the app
MAX_MOMENTS = Range(int, 0, 1000, note="0: all")
MAX_BATCH = Range(int, 1, 1024, note="1: no batching")  # requests merged into one forward pass
MAX_WAIT_MS = Range(float, 0, 60_000)  # how long a batch waits for more requests
DURATION_S = VIDEO_S  # a client's `duration` (and it must agree with the features within one clip)
QUERY_TOKENS = Range(int, 1, 1024)  # rows of uploaded query token features

# ----------------------------------------------------------------- corpus index and search
K_WINDOWS = Range(int, 1, 1_000_000)  # also at most the index's size (corpus.search.check_k)
ALPHA = Range(float, 0, 10_000, note="0: rank by the model's quality alone")
WINDOW_CLIPS = Range(int, 1, 100_000)
STRIDE_CLIPS = Range(int, 1, 100_000)  # also at most the window (corpus.index.windowing)


def add_ranged(parser: argparse.ArgumentParser, flag: str, rng: Range, **kwargs: Any) -> argparse.Action:
    """`parser.add_argument(flag, type=int|float, **kwargs)` whose value `check_args` holds to `rng`.

    A value argparse cannot parse at all (`--port abc`) stays argparse's usage error; a parsed one
    out of range (`--port 99999`, `--timeout-s nan`) is refused by `check_args` in one line.
    """
    action = parser.add_argument(flag, type=rng.kind, **kwargs)
    ranged = dict(parser.get_default(RANGED) or {})
    ranged[action.dest] = (flag, rng)
    parser.set_defaults(**{RANGED: ranged})
    return action


def check_args(args: argparse.Namespace) -> None:
    """Refuse (ConfigError, one line naming the flag) the first flag of `add_ranged` out of its range."""
    for dest, (flag, rng) in (getattr(args, RANGED, None) or {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            rng.check(value, flag)
