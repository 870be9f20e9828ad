"""Moment retrieval metrics, vectorised over queries: R1@IoU, mIoU and mAP over IoU thresholds.

Definitions follow the official QVHighlights standalone evaluation (moment_detr `standalone_eval`):
- mAP: per query, the first `MAX_PRED_WINDOWS` predictions as listed, re-sorted by score (stable);
  at each IoU threshold 0.5:0.05:0.95 a prediction is a true positive when an unmatched GT window has
  IoU >= threshold (the highest-IoU unmatched one is taken); AP is the VOC-2011 all-point interpolated
  area under precision/recall (ActivityNet `interpolated_precision_recall`); averaged over queries.
- R1@t: the first listed prediction, against the GT window it overlaps most; IoU >= t.
- mIoU: mean of that top-1 IoU (Charades-STA / TACoS convention).
- Length buckets short (0, 10], middle (10, 30], long (30, 150] seconds keep, per query, only the GT
  windows of that length; queries with none are dropped. `full` keeps everything.
"""

from __future__ import annotations

import numpy as np

MAX_PRED_WINDOWS = 10
MAP_THRESHOLDS = [round(float(t), 2) for t in np.linspace(0.5, 0.95, 10)]
R1_THRESHOLDS = [0.3, *MAP_THRESHOLDS]
LENGTH_BUCKETS = {"short": (0.0, 10.0), "middle": (10.0, 30.0), "long": (30.0, 150.0), "full": None}


def pad_windows(
    windows: list[np.ndarray], width: int, max_len: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ragged list of [N_i, width] -> (padded [Q, N, width] zeros, valid mask [Q, N])."""
    lens = np.array([min(len(w), max_len) if max_len else len(w) for w in windows])
    n = max(int(lens.max(initial=0)), 1)
    out = np.zeros((len(windows), n, width))
    for i, w in enumerate(windows):
        out[i, : lens[i]] = w[: lens[i]]
    valid = np.arange(n)[None, :] < lens[:, None]  # [Q, N]
    return out, valid


def cross_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every span of `a` [..., N, 2] with every span of `b` [..., M, 2] -> [..., N, M].

    Union 0 (two empty spans) gives IoU 0.

    >>> cross_iou(np.array([[0.0, 10.0]]), np.array([[0.0, 5.0], [5.0, 20.0], [20.0, 30.0]]))
    array([[0.5 , 0.25, 0.  ]])
    """
    right = np.minimum(a[..., :, None, 1], b[..., None, :, 1])  # [..., N, M]
    left = np.maximum(a[..., :, None, 0], b[..., None, :, 0])  # [..., N, M]
    inter = np.clip(right - left, 0.0, None)
    union = (a[..., :, None, 1] - a[..., :, None, 0]) + (b[..., None, :, 1] - b[..., None, :, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """VOC-2011 all-point interpolated AP along the last axis: sum over recall steps of the step times
    the best precision at that recall or beyond. [..., P] -> [...].

    >>> float(interpolated_ap(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])).round(4))
    0.8333
    """
    shape = precision.shape[:-1]
    mprec = np.concatenate([np.zeros((*shape, 1)), precision, np.zeros((*shape, 1))], axis=-1)
    mrec = np.concatenate([np.zeros((*shape, 1)), recall, np.ones((*shape, 1))], axis=-1)
    mprec = np.maximum.accumulate(mprec[..., ::-1], axis=-1)[..., ::-1]  # best precision at >= recall
    return np.sum((mrec[..., 1:] - mrec[..., :-1]) * mprec[..., 1:], axis=-1)


def average_precision(
    pred: np.ndarray, pred_valid: np.ndarray, gt: np.ndarray, gt_valid: np.ndarray, thresholds: list[float]
) -> np.ndarray:
    """Per-query detection AP at each IoU threshold -> [Q, T].

    pred [Q, P, 3] (start, end, score) with mask [Q, P]; gt [Q, G, 2] with mask [Q, G].
    Greedy matching in score order: at threshold t, prediction r takes the unmatched GT window of
    highest IoU among those with IoU >= t (ties: the last one, as the official reversed argsort does).
    """
    q, p = pred_valid.shape
    g = gt_valid.shape[1]
    thr = np.asarray(thresholds)  # [T]
    # stable sort by descending score, padding last                                   # [Q, P]
    order = np.argsort(np.where(pred_valid, -pred[..., 2], np.inf), axis=1, kind="stable")
    pred = np.take_along_axis(pred, order[..., None], axis=1)
    pred_valid = np.take_along_axis(pred_valid, order, axis=1)
    iou = cross_iou(pred[..., :2], gt)  # [Q, P, G]
    iou = np.where(gt_valid[:, None, :], iou, -1.0)
    matched = np.zeros((q, len(thr), g), dtype=bool)  # [Q, T, G] GT already taken
    tp = np.zeros((q, len(thr), p), dtype=bool)  # [Q, T, P]
    rows_q, rows_t = np.indices((q, len(thr)))  # [Q, T] each
    for r in range(p):
        iou_r = iou[:, None, r, :]  # [Q, 1, G]
        cand = (iou_r >= thr[None, :, None]) & ~matched & pred_valid[:, r, None, None]  # [Q, T, G]
        best = g - 1 - np.argmax(np.where(cand, iou_r, -2.0)[..., ::-1], axis=-1)  # [Q, T] last argmax
        hit = cand.any(axis=-1)  # [Q, T]
        tp[:, :, r] = hit
        matched[rows_q, rows_t, best] |= hit
    fp = pred_valid[:, None, :] & ~tp  # [Q, T, P]; padding is neither tp nor fp
    tp_cum = np.cumsum(tp, axis=-1, dtype=float)
    fp_cum = np.cumsum(fp, axis=-1, dtype=float)
    n_gt = gt_valid.sum(axis=1).astype(float)[:, None, None]  # [Q, 1, 1]
    recall = tp_cum / n_gt
    seen = tp_cum + fp_cum
    precision = np.divide(tp_cum, seen, out=np.zeros_like(seen), where=seen > 0)
    return interpolated_ap(precision, recall)  # [Q, T]


def top1_iou(top1: np.ndarray, has_pred: np.ndarray, gt: np.ndarray, gt_valid: np.ndarray) -> np.ndarray:
    """IoU of each query's first prediction [Q, 2] with the GT window it overlaps most -> [Q].

    As the official `compute_mr_r1`: pick the GT window by IoU, then score the pair with
    intersection / (hull of both), equal to IoU whenever they overlap. No prediction -> 0.
    """
    iou = np.where(gt_valid, cross_iou(top1[:, None, :], gt)[:, 0, :], -1.0)  # [Q, G]
    best = np.take_along_axis(gt, np.argmax(iou, axis=1)[:, None, None], axis=1)[:, 0, :]  # [Q, 2]
    inter = np.clip(np.minimum(top1[:, 1], best[:, 1]) - np.maximum(top1[:, 0], best[:, 0]), 0.0, None)
    hull = np.maximum(top1[:, 1], best[:, 1]) - np.minimum(top1[:, 0], best[:, 0])
    out = np.divide(inter, hull, out=np.zeros_like(inter), where=hull > 0)
    return np.where(has_pred, out, 0.0)


def _pct(x: float | np.floating) -> float:
    """Official formatting: percent, rounded to two decimals."""
    return float(f"{100 * x:.2f}")


def moment_retrieval_metrics(gt_windows: list[np.ndarray], pred_windows: list[np.ndarray]) -> dict:
    """{"full"|"short"|"middle"|"long": {"MR-mAP": {...}, "MR-R1": {...}, "MR-mIoU": x, "num_queries": n}}.

    A bucket with no query (e.g. `long` on Charades-STA) is left out.
    """
    gt, gt_valid = pad_windows(gt_windows, 2)  # [Q, G, 2], [Q, G]
    pred, pred_valid = pad_windows(pred_windows, 3, MAX_PRED_WINDOWS)  # [Q, P, 3], [Q, P]
    has_pred = pred_valid[:, 0]
    gt_len = gt[..., 1] - gt[..., 0]  # [Q, G]
    out: dict[str, dict] = {}
    for name, bounds in LENGTH_BUCKETS.items():
        mask = gt_valid if bounds is None else gt_valid & (gt_len > bounds[0]) & (gt_len <= bounds[1])
        keep = mask.any(axis=1)  # [Q] queries with a GT window in the bucket
        if not keep.any():
            continue
        ap = average_precision(pred[keep], pred_valid[keep], gt[keep], mask[keep], MAP_THRESHOLDS)  # [Q', T]
        ap_t = ap.mean(axis=0)  # [T]
        iou1 = top1_iou(pred[keep, 0, :2], has_pred[keep], gt[keep], mask[keep])  # [Q']
        out[name] = {
            "MR-mAP": {
                **{str(t): _pct(a) for t, a in zip(MAP_THRESHOLDS, ap_t)},
                "average": _pct(ap_t.mean()),
            },
            "MR-R1": {str(t): _pct(np.mean(iou1 >= t)) for t in R1_THRESHOLDS},
            "MR-mIoU": _pct(iou1.mean()),
            "num_queries": int(keep.sum()),
        }
    return out
