"""`evaluate`: the official-QVHighlights-compatible metrics dict of a submission (brief + breakdown)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sadetr.eval.highlight import highlight_metrics
from sadetr.eval.io import load_jsonl
from sadetr.eval.moment import moment_retrieval_metrics
from sadetr.eval.submission import QVH_CLIP_LENGTH, align

# brief key -> (bucket, group, key) in the moment retrieval breakdown
_MR_BRIEF = {
    "MR-full-mAP": ("full", "MR-mAP", "average"),
    "MR-full-mAP@0.5": ("full", "MR-mAP", "0.5"),
    "MR-full-mAP@0.75": ("full", "MR-mAP", "0.75"),
    "MR-short-mAP": ("short", "MR-mAP", "average"),
    "MR-middle-mAP": ("middle", "MR-mAP", "average"),
    "MR-long-mAP": ("long", "MR-mAP", "average"),
    "MR-full-R1@0.3": ("full", "MR-R1", "0.3"),
    "MR-full-R1@0.5": ("full", "MR-R1", "0.5"),
    "MR-full-R1@0.7": ("full", "MR-R1", "0.7"),
    "MR-full-mIoU": ("full", "MR-mIoU", None),
}


def evaluate(
    submission: Sequence[dict],
    ground_truth: Sequence[dict],
    allow_partial: bool = False,
    clip_length: float = QVH_CLIP_LENGTH,
) -> dict:
    """Score `submission` against `ground_truth` (JSON-lines records) as the official QVHighlights script.

    Returns `{"brief": {...}, "HL-min-Fair": ..., "full": ..., "long": ..., "middle": ..., "short": ...,
    "meta": {...}}` (percentages, two decimals). MR keys need `pred_relevant_windows`; HL keys need
    `saliency_scores` in the ground truth and `pred_saliency_scores` in the submission. A length bucket
    without queries has neither breakdown nor brief key. `meta` counts the evaluated and left-out qids.
    Raises `SubmissionError` (listing qids) for a malformed submission, `DataError` for bad ground truth.
    """
    data = align(submission, ground_truth, allow_partial=allow_partial, clip_length=clip_length)
    breakdown: dict[str, dict] = {}
    brief: dict[str, float] = {}
    if data.pred_windows is not None:
        mr = moment_retrieval_metrics(data.gt_windows, data.pred_windows)
        breakdown.update(mr)
        for key, (bucket, group, sub) in sorted(_MR_BRIEF.items()):
            if bucket in mr:
                brief[key] = mr[bucket][group] if sub is None else mr[bucket][group][sub]
    if data.gt_saliency is not None and data.pred_saliency is not None:
        hl = highlight_metrics(data.gt_saliency, data.pred_saliency)
        breakdown.update(hl)
        for level, values in hl.items():
            for name, value in values.items():
                brief[f"{level}-{name.split('-')[1]}"] = value
    return {
        "brief": brief,
        **dict(sorted(breakdown.items())),
        "meta": {
            "num_queries": len(data.qids),
            "num_left_out": data.num_missing + data.num_extra,
            "num_missing": data.num_missing,
            "num_extra": data.num_extra,
        },
    }


def evaluate_files(submission_path: str | Path, gt_path: str | Path, allow_partial: bool = False) -> dict:
    """`evaluate` on two JSON-lines files."""
    return evaluate(load_jsonl(submission_path), load_jsonl(gt_path), allow_partial=allow_partial)
