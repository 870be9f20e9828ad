"""Inference postprocessing: model output -> submission records (CONTRACTS.md "Model", paper 3.5).

The direct group of the last decoder layer gives the moments, ranked by predicted quality; spans are
converted to seconds (`span_xx * clip_sec * num_clips`, clipped to [0, duration]). Then, by default, the
field's inference protocol (docs/readings.md "3.5"; Moment-DETR, QD-DETR, BAM-DETR): every window is
rounded to the clip grid (multiples of `clip_sec`) and kept at least one clip wide (`snap_to_clip_grid`;
switch `model.round_to_clip`). Saliency is one score per valid clip. One answer per moment: windows that
are the same after rounding are merged, keeping the best-scored one (`merge_duplicates`), so that an
untrained or collapsed model never lists a window twice. Every output path (split prediction, Predictor,
serve, app, corpus search, the exported runtimes) goes through `decode` and `merge_duplicates`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sadetr.model.span_ops import span_cxw_to_xx


def snap_to_clip_grid(windows: Tensor, clip_sec: float, duration: float) -> Tensor:
    """Windows [N, 2] (start, end) in seconds -> the same on the clip grid, at least one clip wide.

    As the public code of Moment-DETR/QD-DETR (`clip_ts`, then `round_multiple`): clamp to [0, duration],
    round each end to the nearest multiple of `clip_sec` (torch.round: halves to even), clamp again (an
    off-grid duration). A window that rounds to less than one clip becomes one clip from its start
    (their `min_w_l`, `move_window_method="left"`), moved left when that passes the video's end.
    """
    if clip_sec <= 0:
        raise ValueError(f"clip_sec must be > 0, got {clip_sec}")
    win = windows.clamp(min=0.0, max=duration)  # (N, 2)
    win = (torch.round(win / clip_sec) * clip_sec).clamp(min=0.0, max=duration)  # (N, 2)
    width = min(clip_sec, duration)  # a video shorter than one clip: the whole video
    start = win[:, 0]
    end = torch.where(win[:, 1] - start < width, start + width, win[:, 1])  # (N,)
    overflow = (end - duration).clamp(min=0.0)  # (N,) past the end: move the window left
    return torch.stack([start - overflow, end - overflow], dim=1)


def snap_submission(
    records: Iterable[dict[str, Any]], clip_sec: float, durations: Mapping[Any, float], decimals: int = 4
) -> list[dict]:
    """Submission records with `snap_to_clip_grid` applied to `pred_relevant_windows` (order and scores
    kept); `durations` maps each qid to its video's duration. For re-scoring prediction files written
    without the rounding (e.g. released ones)."""
    out = []
    for rec in records:
        rows = rec.get("pred_relevant_windows") or []
        rec = dict(rec)
        if rows:
            win = torch.tensor([[float(r[0]), float(r[1])] for r in rows], dtype=torch.float64)  # (N, 2)
            snapped = snap_to_clip_grid(win, clip_sec, float(durations[rec["qid"]]))
            rec["pred_relevant_windows"] = [
                [round(float(s), decimals), round(float(e), decimals), *r[2:]]
                for (s, e), r in zip(snapped.tolist(), rows)
            ]
        out.append(rec)
    return out


@dataclass
class Decoded:
    """One sample's moments in seconds, in the model's query order (not ranked)."""

    windows: np.ndarray  # [Nq, 2] start, end (s); snapped to the clip grid with round_to_clip
    quality: np.ndarray  # [Nq] predicted quality (the ranking score)
    saliency: np.ndarray  # [L] one score per valid clip

    def ranked(self) -> list[list[float]]:
        """[start, end, score] by decreasing score (ties: query order), duplicates merged."""
        order = np.argsort(-self.quality, kind="stable")
        rows = [[float(self.windows[i, 0]), float(self.windows[i, 1]), float(self.quality[i])] for i in order]
        return merge_duplicates(rows)


def decode(
    out: Mapping[str, Any], meta: Sequence[Mapping[str, Any]], round_to_clip: bool = True
) -> list[Decoded]:
    """Model output -> `Decoded` per sample. out: `pred_spans` [B, Nq, 2] (c, w), `pred_quality` [B, Nq],
    `saliency_scores` [B, Lv], `video_mask` [B, Lv]; meta: list[B] of dict(duration, clip_sec, num_clips).
    Spans become seconds (`span_xx * clip_sec * num_clips`, clipped to [0, duration]), snapped to the
    clip grid with `round_to_clip` (`snap_to_clip_grid`)."""
    spans: Tensor = span_cxw_to_xx(out["pred_spans"].detach().float()).cpu()  # (B, Nq, 2) normalised
    quality: Tensor = out["pred_quality"].detach().float().cpu()  # (B, Nq)
    saliency: Tensor = out["saliency_scores"].detach().float().cpu()  # (B, Lv)
    num_valid = out["video_mask"].detach().sum(dim=1).cpu().tolist()  # (B,)
    if len(meta) != spans.shape[0]:
        raise ValueError(f"meta has {len(meta)} entries for a batch of {spans.shape[0]}")
    decoded = []
    for b, m in enumerate(meta):
        clip_sec = float(m["clip_sec"])
        scale = clip_sec * float(m["num_clips"])  # seconds covered by the valid clips
        duration = float(m["duration"])
        secs = (spans[b] * scale).clamp(min=0.0, max=duration)  # (Nq, 2)
        if round_to_clip:
            secs = snap_to_clip_grid(secs, clip_sec, duration)  # (Nq, 2)
        decoded.append(Decoded(secs.numpy(), quality[b].numpy(), saliency[b, : int(num_valid[b])].numpy()))
    return decoded


def merge_duplicates(rows: Iterable[Sequence[float]], decimals: int = 4) -> list[list[float]]:
    """Ranked `[start, end, score, ...]` rows -> the first (best) row of each window, the windows compared
    at `decimals` places (the precision they are written with).

    >>> merge_duplicates([[2.0, 4.0, 0.9], [0.0, 2.0, 0.5], [2.0, 4.0, 0.3]])
    [[2.0, 4.0, 0.9], [0.0, 2.0, 0.5]]
    """
    seen: set[tuple[float, float]] = set()
    kept = []
    for row in rows:
        key = (round(float(row[0]), decimals), round(float(row[1]), decimals))
        if key not in seen:
            seen.add(key)
            kept.append(list(row))
    return kept


def to_submission(out: dict, meta: list[dict], decimals: int = 4, round_to_clip: bool = True) -> list[dict]:
    """Submission records (`qid`, `query`, `vid`, `pred_relevant_windows`, `pred_saliency_scores`).

    out: model output (`pred_spans` [B, Nq, 2], `pred_quality` [B, Nq], `saliency_scores` [B, Lv],
    `video_mask` [B, Lv]); meta: list[B] of dict(qid, vid, query, duration, clip_sec, num_clips).
    Windows are `[start, end, score]` sorted by score (descending), rounded to `decimals`, one per window
    (`merge_duplicates`); with `round_to_clip` (the default, `model.round_to_clip`) snapped to the clip
    grid (`snap_to_clip_grid`).
    """
    records = []
    for m, dec in zip(meta, decode(out, meta, round_to_clip)):
        rows = [[round(s, decimals), round(e, decimals), round(c, decimals)] for s, e, c in dec.ranked()]
        records.append(
            {
                "qid": m["qid"],
                "query": m["query"],
                "vid": m["vid"],
                "pred_relevant_windows": merge_duplicates(rows, decimals),
                "pred_saliency_scores": [round(float(s), decimals) for s in dec.saliency],
            }
        )
    return records
