"""Inference postprocessing: model output -> submission records (CONTRACTS.md "Model", paper 3.5).

The direct group of the last decoder layer gives the moments, ranked by predicted quality; spans are
converted to seconds (`span_xx * clip_sec * num_clips`, clipped to [0, duration]). Saliency is one score
per valid clip.
"""

from __future__ import annotations

from torch import Tensor

from sadetr.model.span_ops import span_cxw_to_xx


def to_submission(out: dict, meta: list[dict], decimals: int = 4) -> list[dict]:
    """Submission records (`qid`, `query`, `vid`, `pred_relevant_windows`, `pred_saliency_scores`).

    out: model output (`pred_spans` [B, Nq, 2], `pred_quality` [B, Nq], `saliency_scores` [B, Lv],
    `video_mask` [B, Lv]); meta: list[B] of dict(qid, vid, query, duration, clip_sec, num_clips).
    Windows are `[start, end, score]` sorted by score (descending), rounded to `decimals`.
    """
    spans: Tensor = span_cxw_to_xx(out["pred_spans"].detach().float()).cpu()  # (B, Nq, 2) normalised
    quality: Tensor = out["pred_quality"].detach().float().cpu()  # (B, Nq)
    saliency: Tensor = out["saliency_scores"].detach().float().cpu()  # (B, Lv)
    num_valid = out["video_mask"].detach().sum(dim=1).cpu().tolist()  # (B,)
    if len(meta) != spans.shape[0]:
        raise ValueError(f"meta has {len(meta)} entries for a batch of {spans.shape[0]}")
    records = []
    for b, m in enumerate(meta):
        scale = float(m["clip_sec"]) * float(m["num_clips"])  # seconds covered by the valid clips
        duration = float(m["duration"])
        secs = (spans[b] * scale).clamp(min=0.0, max=duration)  # (Nq, 2)
        order = quality[b].argsort(descending=True)  # (Nq,)
        windows = [
            [
                round(float(secs[i, 0]), decimals),
                round(float(secs[i, 1]), decimals),
                round(float(quality[b, i]), decimals),
            ]
            for i in order.tolist()
        ]
        records.append(
            {
                "qid": m["qid"],
                "query": m["query"],
                "vid": m["vid"],
                "pred_relevant_windows": windows,
                "pred_saliency_scores": [round(float(s), decimals) for s in saliency[b, : int(num_valid[b])]],
            }
        )
    return records
