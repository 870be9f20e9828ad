"""Annotation reader: JSON-lines moment-retrieval files (QVHighlights, Charades-STA, TACoS) -> `Annotation`.

One query per line: `qid` (int or str), `query`, `vid`, `duration` (seconds), `relevant_windows`
(`[[start, end], ...]` seconds; absent in a test split without GT), and for QVHighlights
`relevant_clip_ids` + `saliency_scores` (one list of annotator scores per relevant clip).
Every line is validated; a bad one raises `DataError(message, path, line, field)`.
Windows that stick out of [0, duration] by at most `tolerance` seconds are clipped (and counted in
the log); further out is an error.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sadetr.core.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1.0  # seconds; one Charades-STA clip


@dataclass(frozen=True)
class Annotation:
    """One query of a moment-retrieval dataset (windows in seconds, already clipped to [0, duration])."""

    qid: int | str
    query: str
    vid: str
    duration: float
    windows: tuple[tuple[float, float], ...]
    relevant_clip_ids: tuple[int, ...] | None
    saliency_scores: tuple[tuple[int, ...], ...] | None
    line: int
    raw: dict[str, Any] = field(repr=False, compare=False, hash=False)

    @property
    def has_saliency(self) -> bool:
        return self.relevant_clip_ids is not None

    def to_json(self) -> dict[str, Any]:
        """The original JSON-lines record (a copy), as `sadetr.eval` takes it for ground truth."""
        return copy.deepcopy(self.raw)


MAX_INT = 2**31 - 1  # clip ids and saliency scores beyond this are not data (and overflow int64 sums)


def _is_number(x: object) -> bool:
    """A JSON number that fits a finite float (an int like 10**400 does not)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class _LineParser:
    """Validates one record; `fail` raises a DataError pointing at the line and field."""

    def __init__(self, path: Path, line: int, tolerance: float, require_windows: str | None = None) -> None:
        self.path, self.line, self.tolerance = path, line, tolerance
        self.require_windows = require_windows
        self.clipped = 0  # windows clipped to [0, duration] on this line

    def fail(self, message: str, fld: str | None = None) -> DataError:
        return DataError(message, path=self.path, line=self.line, field=fld)

    def parse(self, text: str) -> Annotation:
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as err:
            raise self.fail(f"invalid JSON ({err.msg} at column {err.colno})") from None
        except RecursionError:
            raise self.fail("invalid JSON (nested too deeply)") from None
        if not isinstance(rec, dict):
            raise self.fail(f"expected a JSON object, got {type(rec).__name__}")
        for key in ("qid", "query", "vid", "duration"):
            if key not in rec:
                raise self.fail("missing key", key)
        qid = rec["qid"]
        if not (_is_int(qid) or (isinstance(qid, str) and qid.strip())):
            raise self.fail(f"must be an int or a non-empty string, got {qid!r}", "qid")
        query = rec["query"]
        if not isinstance(query, str) or not query.strip():
            raise self.fail(f"must be a non-empty string, got {query!r}", "query")
        vid = rec["vid"]
        if not isinstance(vid, str) or not vid.strip():
            raise self.fail(f"must be a non-empty string, got {vid!r}", "vid")
        duration = rec["duration"]
        if not _is_number(duration) or duration <= 0:
            raise self.fail(f"must be a positive finite number, got {duration!r}", "duration")
        windows = self._windows(rec.get("relevant_windows"), float(duration))
        if self.require_windows and not windows:
            state = "empty" if isinstance(rec.get("relevant_windows"), list) else "missing"
            raise self.fail(f"{state}, but {self.require_windows}", "relevant_windows")
        clip_ids, scores = self._saliency(rec)
        return Annotation(
            qid=qid,
            query=query,
            vid=vid,
            duration=float(duration),
            windows=windows,
            relevant_clip_ids=clip_ids,
            saliency_scores=scores,
            line=self.line,
            raw=rec,
        )

    def _windows(self, value: object, duration: float) -> tuple[tuple[float, float], ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail("must be a list of [start, end] pairs", "relevant_windows")
        out = []
        for i, win in enumerate(value):
            fld = f"relevant_windows[{i}]"
            if not isinstance(win, list) or len(win) != 2:
                raise self.fail(f"must be a [start, end] pair, got {win!r}", fld)
            start, end = win
            if not (_is_number(start) and _is_number(end)):
                raise self.fail(f"start and end must be finite numbers, got {win!r}", fld)
            if start >= end:
                raise self.fail(f"start >= end ({start} >= {end})", fld)
            if start < -self.tolerance or end > duration + self.tolerance:
                raise self.fail(
                    f"window [{start}, {end}] lies outside [0, duration={duration:g}] by more than "
                    f"{self.tolerance:g} s",
                    fld,
                )
            s, e = max(0.0, float(start)), min(duration, float(end))
            if (s, e) != (start, end):
                self.clipped += 1
            if s >= e:
                raise self.fail(f"window [{start}, {end}] is empty once clipped to [0, {duration:g}]", fld)
            out.append((s, e))
        return tuple(out)

    def _saliency(
        self, rec: dict[str, Any]
    ) -> tuple[tuple[int, ...] | None, tuple[tuple[int, ...], ...] | None]:
        has_ids, has_scores = "relevant_clip_ids" in rec, "saliency_scores" in rec
        if not has_ids and not has_scores:
            return None, None
        if has_ids != has_scores:
            missing = "saliency_scores" if has_ids else "relevant_clip_ids"
            raise self.fail("missing key (relevant_clip_ids and saliency_scores come together)", missing)
        ids, scores = rec["relevant_clip_ids"], rec["saliency_scores"]
        if not isinstance(ids, list) or not all(_is_int(i) and 0 <= i <= MAX_INT for i in ids):
            raise self.fail(f"must be a list of non-negative ints (<= {MAX_INT})", "relevant_clip_ids")
        if len(set(ids)) != len(ids):
            raise self.fail("contains duplicate clip ids", "relevant_clip_ids")
        if not isinstance(scores, list):
            raise self.fail("must be a list of per-clip score lists", "saliency_scores")
        if len(scores) != len(ids):
            raise self.fail(
                f"has {len(scores)} entries but relevant_clip_ids has {len(ids)}", "saliency_scores"
            )
        width = None
        for i, row in enumerate(scores):
            fld = f"saliency_scores[{i}]"
            if not isinstance(row, list) or not row or not all(_is_int(s) and 0 <= s <= MAX_INT for s in row):
                raise self.fail(
                    f"must be a non-empty list of non-negative ints (<= {MAX_INT}), got {row!r}", fld
                )
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise self.fail(f"has {len(row)} annotator scores, earlier rows have {width}", fld)
        return tuple(ids), tuple(tuple(row) for row in scores)


def read_annotations(
    path: str | Path,
    tolerance: float = DEFAULT_TOLERANCE,
    skip_bad: bool = False,
    require_windows: str | None = None,
    skipped: list[DataError] | None = None,
) -> list[Annotation]:
    """Read and validate a JSON-lines annotation file; blank lines are ignored.

    With `skip_bad`, a bad line is logged as a warning and left out (the count is logged at the end);
    otherwise it raises `DataError`. Duplicate qids and an empty file are always errors.
    `require_windows` (the reason, shown in the message) makes a record without any window
    (`relevant_windows` missing, null or `[]`) a bad line. Skipped lines' errors are appended to
    `skipped` when given.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("annotation file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read annotation file: {err}", path=path) from None
    out: list[Annotation] = []
    seen: dict[int | str, int] = {}
    n_skipped = clipped = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parser = _LineParser(path, lineno, tolerance, require_windows)
        try:
            ann = parser.parse(line)
        except DataError as err:
            if not skip_bad:
                raise
            log.warning("skipping bad annotation: %s", err)
            n_skipped += 1
            if skipped is not None:
                skipped.append(err)
            continue
        if ann.qid in seen:
            raise DataError(f"duplicate qid {ann.qid!r} (first on line {seen[ann.qid]})", path, lineno, "qid")
        seen[ann.qid] = lineno
        clipped += parser.clipped
        out.append(ann)
    if clipped:
        log.info("%s: clipped %d window(s) to [0, duration] (within %g s)", path, clipped, tolerance)
    if n_skipped:
        log.warning("%s: skipped %d bad annotation line(s)", path, n_skipped)
    if not out:
        raise DataError("no annotations in file", path=path)
    return out
