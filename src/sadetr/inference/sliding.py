"""Any video length: overlapping windows of at most `max_v_l` clips, merged back to absolute time.

A video longer than the training window is cut into windows of `window` clips whose starts are
`stride = window - overlap` clips apart (the last window is aligned to the video's end). Each
window's moments are shifted by its start time; all moments are merged with temporal NMS; each
clip's saliency is the mean over the windows that contain it.
"""

from __future__ import annotations

import numpy as np


def window_starts(n_clips: int, window: int, overlap: int) -> list[int]:
    """First clip of every window; windows cover [start, start + window) and the whole video.

    >>> window_starts(10, 4, 1)
    [0, 3, 6]
    >>> window_starts(11, 4, 1)
    [0, 3, 6, 7]
    >>> window_starts(3, 4, 1)
    [0]
    """
    if window <= 0 or n_clips <= window:
        return [0]
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, {window}), got {overlap}")
    stride = window - overlap
    starts = list(range(0, n_clips - window + 1, stride))
    if starts[-1] + window < n_clips:
        starts.append(n_clips - window)
    return starts


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """IoU of two [start, end] intervals.

    >>> temporal_iou((0, 4), (2, 6))
    0.3333333333333333
    """
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def temporal_nms(
    moments: list[list[float]], iou_threshold: float = 0.7, max_keep: int = 0
) -> list[list[float]]:
    """Greedy NMS on [start, end, score]: keep the best, drop those overlapping it by IoU >= threshold.

    >>> temporal_nms([[0, 10, 0.9], [1, 10, 0.8], [20, 30, 0.5]], 0.7)
    [[0, 10, 0.9], [20, 30, 0.5]]
    """
    kept: list[list[float]] = []
    for m in sorted(moments, key=lambda m: -m[2]):
        if all(temporal_iou((m[0], m[1]), (k[0], k[1])) < iou_threshold for k in kept):
            kept.append(m)
            if max_keep and len(kept) == max_keep:
                break
    return kept


def stitch_saliency(n_clips: int, parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Per-clip mean of the windows' saliency scores; parts = (first clip, scores [window length]).

    >>> stitch_saliency(5, [(0, np.array([1.0, 1, 1])), (2, np.array([3.0, 3, 3]))]).tolist()
    [1.0, 1.0, 2.0, 3.0, 3.0]
    """
    total = np.zeros(n_clips, dtype=np.float64)
    count = np.zeros(n_clips, dtype=np.float64)
    for start, scores in parts:
        total[start : start + len(scores)] += scores
        count[start : start + len(scores)] += 1
    if (count == 0).any():
        raise ValueError("windows do not cover every clip")
    return total / count
