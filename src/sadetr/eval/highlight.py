"""Highlight detection metrics, vectorised over queries: HL-mAP and HL-Hit1 at the Fair/Good/VeryGood levels.

Definitions follow the official QVHighlights standalone evaluation (`eval_highlight`):
- Ground truth: each of the 3 annotators' 0-4 scores over the whole video (zero outside the
  relevant clips), binarised at >= 2 (Fair), >= 3 (Good), >= 4 (VeryGood) ("min" score).
- Predictions are cut or zero-padded to the ground-truth clip count for AP (Hit1 uses them as given).
- HL-mAP: per query and annotator, the AP of `get_ap` (sklearn precision/recall curve, equal scores
  form one threshold; precision interpolated; mean of the precision at each threshold that adds a
  positive); a label vector with no positive gives 0, all positive gives 1; mean over both.
- HL-Hit1: the top-scored clip is a hit when any annotator marks it positive; mean over queries.
"""

from __future__ import annotations

import numpy as np

LEVELS = {"Fair": 2, "Good": 3, "VeryGood": 4}


def ranking_ap(scores: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """AP of ranking the clips by `scores` [Q, L] against binary `labels` [Q, L, A] -> [Q, A].

    Only clips with `valid` [Q, L] count. Ties in `scores` are one threshold (as sklearn's
    `precision_recall_curve`): e.g. 5 clips, 2 positive, all scores equal -> AP 2/5.

    >>> ranking_ap(np.array([[0.9, 0.8, 0.7]]), np.array([[[0], [1], [1]]]), np.ones((1, 3), bool))
    array([[0.66666667]])
    """
    q, n = scores.shape
    order = np.argsort(np.where(valid, -scores, np.inf), axis=1, kind="stable")  # [Q, L] best first
    s = np.take_along_axis(scores, order, axis=1)
    v = np.take_along_axis(valid, order, axis=1)
    y = np.take_along_axis(labels, order[..., None], axis=1) * v[..., None]  # [Q, L, A]
    nxt_differs = np.concatenate([s[:, 1:] != s[:, :-1], np.ones((q, 1), bool)], axis=1)
    nxt_invalid = np.concatenate([~v[:, 1:], np.ones((q, 1), bool)], axis=1)
    group_end = (v & (nxt_differs | nxt_invalid))[..., None]  # [Q, L, 1] last clip of a tie group
    tp = np.cumsum(y, axis=1)  # [Q, L, A]
    precision = np.where(group_end, tp / np.arange(1, n + 1)[None, :, None], 0.0)
    interp = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # best precision at >= recall
    tp_at_ends = np.maximum.accumulate(np.where(group_end, tp, 0), axis=1)  # tp at the latest group end
    tp_before = np.concatenate([np.zeros((q, 1, tp.shape[2])), tp_at_ends[:, :-1]], axis=1)
    step = group_end & (tp > tp_before)  # [Q, L, A] thresholds where recall grows
    n_steps = step.sum(axis=1)  # [Q, A]
    ap = np.divide((interp * step).sum(axis=1), n_steps, out=np.zeros(n_steps.shape), where=n_steps > 0)
    n_pos = y.sum(axis=1)  # [Q, A]
    n_valid = v.sum(axis=1)[:, None]  # [Q, 1]
    return np.where(n_pos == 0, 0.0, np.where(n_pos == n_valid, 1.0, ap))


def highlight_metrics(gt_saliency: list[np.ndarray], pred_saliency: list[np.ndarray]) -> dict:
    """{"HL-min-Fair": {"HL-mAP": x, "HL-Hit1": y}, "HL-min-Good": ..., "HL-min-VeryGood": ...}."""
    q = len(gt_saliency)
    n_clips = np.array([len(g) for g in gt_saliency])  # [Q]
    n_pred = np.array([len(p) for p in pred_saliency])  # [Q]
    width = int(max(n_clips.max(), n_pred.max()))
    gt = np.zeros((q, width, 3))  # [Q, L, A] annotator scores, 0 beyond the video
    raw = np.full((q, width), -np.inf)  # [Q, L] predictions as given, -inf padding
    for i, (g, p) in enumerate(zip(gt_saliency, pred_saliency)):
        gt[i, : len(g)] = g
        raw[i, : len(p)] = p
    valid = np.arange(width)[None, :] < n_clips[:, None]  # [Q, L] clips of the GT video
    cut = np.where(valid, np.where(np.isfinite(raw), raw, 0.0), 0.0)  # official: cut / zero-pad to GT
    top = np.argmax(raw, axis=1)  # [Q] first best clip of the prediction as given
    # all levels at once: labels [Q, L, 3 levels x 3 annotators], one sort of the scores
    labels = np.concatenate([gt >= m for m in LEVELS.values()], axis=2) & valid[..., None]
    ap = ranking_ap(cut, labels, valid).reshape(q, len(LEVELS), 3)  # [Q, levels, A]
    hit = labels[np.arange(q), top].reshape(q, len(LEVELS), 3).any(axis=2) & (top < n_clips)[:, None]
    return {
        f"HL-min-{name}": {
            "HL-mAP": float(f"{100 * ap[:, k].mean():.2f}"),
            "HL-Hit1": float(f"{100 * hit[:, k].mean():.2f}"),
        }
        for k, name in enumerate(LEVELS)
    }
