"""Corpus metrics of the TVR protocol (Lei et al. 2020): VCMR, SVMR and video retrieval recall (numpy only).

For each query with ground-truth video `vid` and windows `relevant_windows` (one or more [start, end]):
- VCMR R@k, IoU t: among the top-k corpus moments, one is in `vid` with IoU >= t to a GT window
  (the max over GT windows, as QVHighlights' multi-window GT is scored);
- SVMR R@k, IoU t: the same on a ranking restricted to `vid`;
- VR R@k: `vid` is among the first k distinct videos of the ranking.
All values are percentages over the queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (1, 5, 10, 100)
IOUS = (0.5, 0.7)


def max_iou(start: float, end: float, windows: Sequence[Sequence[float]]) -> float:
    """Largest IoU of [start, end] with any GT window.

    >>> max_iou(0, 4, [[2, 6], [0, 3]])
    0.75
    """
    best = 0.0
    for a, b in windows:
        inter = max(0.0, min(end, b) - max(start, a))
        union = max(end, b) - min(start, a)
        best = max(best, inter / union if union > 0 else 0.0)
    return best


def first_hit_rank(
    moments: Sequence[Sequence], vid: str, windows: Sequence[Sequence[float]], iou: float
) -> int:
    """0-based rank of the first (video, start, end, ...) moment in `vid` with IoU >= iou; -1 if none.

    >>> first_hit_rank([("b", 0, 4), ("a", 10, 20), ("a", 0, 4)], "a", [[0, 5]], 0.5)
    2
    """
    for rank, m in enumerate(moments):
        if m[0] == vid and max_iou(float(m[1]), float(m[2]), windows) >= iou:
            return rank
    return -1


def video_rank(moments: Sequence[Sequence], vid: str) -> int:
    """0-based rank of `vid` among the distinct videos of the ranking (first appearance); -1 if absent.

    >>> video_rank([("b", 0, 1), ("b", 2, 3), ("c", 0, 1), ("a", 0, 1)], "a")
    2
    """
    seen: list[str] = []
    for m in moments:
        if m[0] not in seen:
            if m[0] == vid:
                return len(seen)
            seen.append(m[0])
    return -1


def _recall(ranks: list[int], k: int) -> float:
    return 100.0 * float(np.mean([0 <= r < k for r in ranks])) if ranks else 0.0


def corpus_metrics(
    vcmr: Sequence[Sequence[Sequence]],
    gt: Sequence[dict],
    svmr: Sequence[Sequence[Sequence]] | None = None,
    ks: Sequence[int] = KS,
    ious: Sequence[float] = IOUS,
) -> dict[str, float]:
    """`VCMR-R@k-IoU=t`, `SVMR-R@k-IoU=t` (if `svmr` rankings are given) and `VR-R@k` in percent.

    vcmr[i] / svmr[i]: ranked moments (video, start, end, ...) of query i; gt[i]: {"vid", "relevant_windows"}.
    """
    if len(vcmr) != len(gt) or (svmr is not None and len(svmr) != len(gt)):
        raise ValueError(f"{len(vcmr)} VCMR / {len(svmr or [])} SVMR rankings for {len(gt)} queries")
    out: dict[str, float] = {}
    for t in ious:
        ranks = [first_hit_rank(m, g["vid"], g["relevant_windows"], t) for m, g in zip(vcmr, gt)]
        for k in ks:
            out[f"VCMR-R@{k}-IoU={t}"] = _recall(ranks, k)
    if svmr is not None:
        for t in ious:
            ranks = [first_hit_rank(m, g["vid"], g["relevant_windows"], t) for m, g in zip(svmr, gt)]
            for k in ks:
                out[f"SVMR-R@{k}-IoU={t}"] = _recall(ranks, k)
    vranks = [video_rank(m, g["vid"]) for m, g in zip(vcmr, gt)]
    for k in ks:
        out[f"VR-R@{k}"] = _recall(vranks, k)
    return out


def chance_vcmr(
    gt: Sequence[dict], durations: dict[str, float], k: int, iou: float, samples: int = 2000, seed: int = 0
) -> float:
    """VCMR R@k at `iou` (percent) of a ranking of k random moments: a uniform video, a uniform span.

    Monte Carlo with `samples` rankings per query (fixed seed); the chance level of the learning test.
    """
    rng = np.random.default_rng(seed)
    vids = sorted(durations)
    hits = 0.0
    for g in gt:
        idx = rng.integers(0, len(vids), size=(samples, k))  # [S, k]
        dur = np.array([durations[v] for v in vids])[idx]  # [S, k]
        ends = np.sort(rng.uniform(0, 1, size=(samples, k, 2)), axis=-1) * dur[..., None]  # [S, k, 2]
        right = np.array(vids)[idx] == g["vid"]  # [S, k]
        ok = np.zeros((samples, k), dtype=bool)
        for a, b in g["relevant_windows"]:
            inter = np.clip(np.minimum(ends[..., 1], b) - np.maximum(ends[..., 0], a), 0, None)
            union = np.maximum(ends[..., 1], b) - np.minimum(ends[..., 0], a)
            ok |= inter / np.maximum(union, 1e-9) >= iou
        hits += float((right & ok).any(axis=1).mean())
    return 100.0 * hits / max(len(gt), 1)
