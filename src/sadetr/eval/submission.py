"""Checking a submission against its ground truth and pairing them up, query by query, as numpy arrays.

A submission record: `qid`, `pred_relevant_windows` (`[start, end, score]` in seconds, at least the
top 10 kept), `pred_saliency_scores` (one float per 2-second clip); either field may be absent from
every record (an MR-only or HD-only submission). Every problem found is reported at once, as a
`SubmissionError` listing the offending qids; bad ground truth is a `DataError`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sadetr.core.errors import DataError, SubmissionError, format_qids

QVH_CLIP_LENGTH = 2.0  # seconds per saliency clip in QVHighlights (official `mk_gt_scores`)
SALIENCY_LENGTH_TOLERANCE = 1  # clips; feature extractors may drop the last partial clip


@dataclass(frozen=True)
class EvalInput:
    """Aligned ground truth and predictions for the evaluated queries (same order everywhere)."""

    qids: list[int | str]
    gt_windows: list[np.ndarray]  # each [G_i, 2] (start, end) seconds
    pred_windows: list[np.ndarray] | None  # each [P_i, 3] (start, end, score), submission order
    gt_saliency: list[np.ndarray] | None  # each [num_clips_i, 3] annotator scores 0..4, whole video
    pred_saliency: list[np.ndarray] | None  # each [len_i] as submitted
    num_missing: int  # ground-truth qids without a prediction (left out with allow_partial)
    num_extra: int  # predicted qids absent from the ground truth (left out with allow_partial)


def _is_qid(value: object) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _as_float_array(value: object, ndim: int) -> np.ndarray | None:
    """`value` as a float array with `ndim` dims (an empty list gives zeros of that rank), or None when
    it is not a rectangular list of numbers."""
    if not isinstance(value, (list, tuple)):
        return None
    try:
        raw = np.asarray(value)
    except ValueError:  # ragged
        return None
    if raw.size == 0:
        return np.zeros((0,) * ndim)
    if raw.dtype.kind not in "iuf" or raw.ndim != ndim:
        return None
    return raw.astype(float)


def _qid_index(records: Sequence[object], what: str, error: type) -> dict[int | str, int]:
    """qid -> position; records without a usable qid or with a duplicate qid are an error."""
    bad_pos = [i + 1 for i, r in enumerate(records) if not (isinstance(r, dict) and _is_qid(r.get("qid")))]
    if bad_pos:
        shown = ", ".join(map(str, bad_pos[:20]))
        msg = f"{what}: records {shown} are not objects with an int or str `qid` (1-based record numbers)"
        raise error(msg) if error is SubmissionError else error(msg, field="qid")
    counts = Counter(r["qid"] for r in records)  # type: ignore[index]
    dups = [q for q, n in counts.items() if n > 1]
    if dups:
        if error is SubmissionError:
            raise SubmissionError(f"{what}: duplicate qids", dups)
        raise DataError(f"{what}: duplicate qids {format_qids(dups)}", field="qid")
    return {r["qid"]: i for i, r in enumerate(records)}  # type: ignore[index]


def _gt_windows(rec: dict) -> np.ndarray:
    arr = _as_float_array(rec.get("relevant_windows"), 2)
    if arr is None or arr.shape[0] == 0 or arr.shape[1] != 2:
        raise DataError(
            "expected a non-empty list of [start, end] (a split without ground truth cannot be evaluated)",
            field=f"qid {rec['qid']}: relevant_windows",
        )
    if not np.isfinite(arr).all() or (arr[:, 0] > arr[:, 1]).any():
        raise DataError("non-finite value or start > end", field=f"qid {rec['qid']}: relevant_windows")
    return arr


def num_saliency_clips(duration: float, clip_length: float = QVH_CLIP_LENGTH) -> int:
    """Clips in the official full-video saliency array: `int(duration / clip_length)`."""
    return int(duration / clip_length)


MAX_DURATION = 1e7  # seconds (115 days): beyond it a "duration" is not one, and its clip array won't fit


def _duration(value: object) -> float | None:
    """`value` as a duration in seconds when it is a number in (0, MAX_DURATION], else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int like 10**400
        return None
    return seconds if 0 < seconds <= MAX_DURATION else None


def _gt_saliency(rec: dict, clip_length: float) -> np.ndarray:
    """Per-annotator scores over the whole video, [num_clips, 3], zero outside `relevant_clip_ids`."""
    where = f"qid {rec['qid']}"
    duration = _duration(rec.get("duration"))
    if duration is None:
        raise DataError(f"expected a number of seconds in (0, {MAX_DURATION:g}]", field=f"{where}: duration")
    num_clips = num_saliency_clips(duration, clip_length)
    scores = _as_float_array(rec.get("saliency_scores"), 2)
    ids = _as_float_array(rec.get("relevant_clip_ids"), 1)
    if scores is None or (scores.size and scores.shape[1] != 3):
        raise DataError("expected a list of [s1, s2, s3]", field=f"{where}: saliency_scores")
    if ids is None or len(ids) != len(scores):
        raise DataError("expected one clip id per saliency_scores row", field=f"{where}: relevant_clip_ids")
    if len(ids) and ((ids != np.round(ids)).any() or ids.min() < 0 or ids.max() >= num_clips):
        raise DataError(f"clip ids must be integers in [0, {num_clips})", field=f"{where}: relevant_clip_ids")
    full = np.zeros((num_clips, 3))
    full[ids.astype(int)] = scores.reshape(-1, 3)
    return full


def align(
    submission: Sequence[dict],
    ground_truth: Sequence[dict],
    allow_partial: bool = False,
    clip_length: float = QVH_CLIP_LENGTH,
) -> EvalInput:
    """Check `submission` against `ground_truth` and pair them; raise on any malformed prediction."""
    if not ground_truth:
        raise DataError("ground truth is empty")
    if not submission:
        raise SubmissionError("submission is empty")
    gt_index = _qid_index(ground_truth, "ground truth", DataError)
    sub_index = _qid_index(submission, "submission", SubmissionError)
    missing = [q for q in gt_index if q not in sub_index]
    extra = [q for q in sub_index if q not in gt_index]
    if (missing or extra) and not allow_partial:
        parts = []
        if missing:
            parts.append(f"{len(missing)} ground-truth qids have no prediction")
        if extra:
            parts.append(f"{len(extra)} predicted qids are not in the ground truth")
        by_text = {str(q) for q in missing}
        if any(str(q) in by_text for q in extra):
            parts.append("some qids differ only in type (int in one file, str in the other)")
        raise SubmissionError(
            "; ".join(parts) + " (allow_partial / --allow-partial evaluates the intersection)",
            missing + extra,
        )
    qids = [q for q in gt_index if q in sub_index]
    if not qids:
        raise SubmissionError("no qid in common between submission and ground truth")
    gts = [ground_truth[gt_index[q]] for q in qids]
    subs = [submission[sub_index[q]] for q in qids]

    has_windows = ["pred_relevant_windows" in s for s in subs]
    has_saliency = ["pred_saliency_scores" in s for s in subs]
    problems: dict[str, list[int | str]] = {}

    def flag(problem: str, qid: int | str) -> None:
        problems.setdefault(problem, []).append(qid)

    if any(has_windows) and not all(has_windows):
        for q, h in zip(qids, has_windows):
            if not h:
                flag("missing pred_relevant_windows", q)
    if any(has_saliency) and not all(has_saliency):
        for q, h in zip(qids, has_saliency):
            if not h:
                flag("missing pred_saliency_scores", q)
    if not any(has_windows) and not any(has_saliency):
        raise SubmissionError("records have neither pred_relevant_windows nor pred_saliency_scores")

    gt_has_saliency = ["saliency_scores" in g for g in gts]
    if any(gt_has_saliency) and not all(gt_has_saliency):
        bad = [q for q, h in zip(qids, gt_has_saliency) if not h]
        raise DataError(f"only some queries have saliency_scores; missing for qids {bad[:20]}")
    do_hd = all(gt_has_saliency) and all(has_saliency)

    pred_windows: list[np.ndarray] | None = None
    if all(has_windows):
        pred_windows = []
        for q, s in zip(qids, subs):
            arr = _as_float_array(s["pred_relevant_windows"], 2)
            if arr is None or (arr.size and arr.shape[1] != 3):
                flag("pred_relevant_windows is not a list of [start, end, score]", q)
                arr = np.zeros((0, 3))
            arr = arr.reshape(-1, 3)  # an empty list is [0, 3]: no prediction, the query scores 0
            if not np.isfinite(arr).all():
                flag("NaN/inf in pred_relevant_windows", q)
            elif (arr[:, 0] > arr[:, 1]).any():
                flag("window with start > end", q)
            pred_windows.append(arr)

    pred_saliency: list[np.ndarray] | None = None
    if all(has_saliency):
        pred_saliency = []
        for q, s, g in zip(qids, subs, gts):
            arr = _as_float_array(s["pred_saliency_scores"], 1)
            if arr is None or arr.size == 0:
                flag("pred_saliency_scores is not a non-empty list of numbers", q)
                arr = np.zeros(1)
            elif not np.isfinite(arr).all():
                flag("NaN/inf in pred_saliency_scores", q)
            elif do_hd:
                duration = _duration(g.get("duration"))
                if duration is not None:
                    n = num_saliency_clips(duration, clip_length)
                    if abs(len(arr) - n) > SALIENCY_LENGTH_TOLERANCE:
                        flag(
                            f"pred_saliency_scores length differs from int(duration / {clip_length:g}) "
                            f"by more than {SALIENCY_LENGTH_TOLERANCE}",
                            q,
                        )
            pred_saliency.append(arr)

    if problems:
        message = "invalid submission: " + "; ".join(
            f"{p} ({len(qs)}: {format_qids(qs, 10)}{' ...' if len(qs) > 10 else ''})"
            for p, qs in problems.items()
        )
        raise SubmissionError(message, [q for qs in problems.values() for q in qs])

    gt_windows = [_gt_windows(g) for g in gts] if pred_windows is not None else [np.zeros((0, 2))] * len(gts)
    gt_saliency = [_gt_saliency(g, clip_length) for g in gts] if do_hd else None
    return EvalInput(
        qids=qids,
        gt_windows=gt_windows,
        pred_windows=pred_windows,
        gt_saliency=gt_saliency,
        pred_saliency=pred_saliency if do_hd else None,
        num_missing=len(missing),
        num_extra=len(extra),
    )
