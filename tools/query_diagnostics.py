"""What SA-DETR's queries do: ranking, width, spread and gate statistics of checkpoints on a split.

The diagnosis of docs/research/tuned-readings.md and decoder-start.md: for each checkpoint, on the
validation split of its own config, one forward in eval mode, then per query (sample) and over the split:

- `top1_iou>=0.5` / `best10_iou>=0.5` / `best10_iou>=0.7`: share of samples whose quality-ranked top-1
  window, or the best of the 10 windows, reaches that IoU with a GT window (ranking vs localisation);
- `top1_width_s` / `gt_width_s`: median width of the top-1 window and of the GT windows, seconds;
- `q_max_median`, `q_max<0.01`: median over samples of the highest quality, and the share of samples
  whose highest quality is below 0.01 (the quality collapse);
- `anchor_centre_std`: std over the 10 direct queries of their initial anchors' centres (symmetric start);
- `dup_pairs`: share of the 45 pairs of final windows with IoU > 0.9 (near-duplicates);
- `gate_sat_l<i>`: share of eq 3 gates ĝ below 0.01 or above 0.99 in decoder layer i (direct queries);
- `best_iou_<layer>` / `width_err_<layer>` for `init` (the anchors S_d) and each decoder layer `l<i>`:
  mean over samples of the best of the 10 windows' IoU (%), and the median of that window's width minus its
  GT window's width, seconds (what each layer's refinement adds, and a width bias);
- `mAP` / `oracle_mAP`: MR-full mAP of the submission (clip grid as `predict`) and of the same submitted
  windows scored and ranked by their true IoU (`oracle_ranked`: the ceiling of any quality score);
- `dn_iou_anchor` / `dn_iou_l<i>` (models with a denoiser): mean IoU (%) of the positive noise anchors with
  their own GT span, as the checkpoint's denoiser draws them (generator seed 0), and of the decoder's
  outputs for them after each layer (eval mode): whether the decoder has learned to denoise.

Usage: `python tools/query_diagnostics.py CKPT [CKPT ...] [--split val] [--limit N] [--json OUT]`;
checkpoints of the same run at several epochs give the trajectory (the `epoch` column).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


def diagnose(path: Path, split: str, limit: int | None) -> dict[str, Any]:
    """The statistics of the module docstring for one checkpoint."""
    from torch.utils.data import DataLoader

    from sadetr.data.dataset import build_dataset, collate
    from sadetr.engine.checkpoint import load_trained_model
    from sadetr.eval.evaluate import evaluate
    from sadetr.model.decoder import SpanBasedEnhanceBlock
    from sadetr.model.postprocess import to_submission
    from sadetr.model.span_ops import span_cxw_to_xx, temporal_iou

    model, cfg, state = load_trained_model(path)
    dataset = build_dataset(cfg.data, split, seed=0)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    nq = cfg.model.num_queries
    gates: dict[int, list[torch.Tensor]] = {}
    blocks = [m for m in model.modules() if isinstance(m, SpanBasedEnhanceBlock)]
    hooks = [  # ĝ [B, Q, 1] of the direct queries
        _wrap_gate(block, lambda g, i=i: gates.setdefault(i, []).append(g[:, :nq, 0].flatten()))
        for i, block in enumerate(blocks)
    ]
    ground_truth = dataset.ground_truth()
    windows = {r["qid"]: r["relevant_windows"] for r in ground_truth}
    rows: dict[str, list[float]] = {k: [] for k in ("top1", "b5", "b7", "w1", "gtw", "qmax", "spread", "dup")}
    loader = DataLoader(
        dataset, batch_sampler=[list(range(i, min(i + 32, n))) for i in range(0, n, 32)], collate_fn=collate
    )
    pairs = torch.triu_indices(nq, nq, 1)  # the 45 pairs of the 10 windows
    dn_rows: dict[str, list[torch.Tensor]] = {}  # stage -> IoU of the positive noise queries
    dn_gen = torch.Generator().manual_seed(0)
    layer_rows: dict[str, tuple[list[float], list[float]]] = {}  # layer -> (best IoU, width error)
    submission: list[dict] = []
    with torch.no_grad():
        for batch in loader:
            out = model(batch["video_feat"], batch["video_mask"], batch["text_feat"], batch["text_mask"])
            dur = torch.tensor([m["duration"] for m in batch["meta"]], dtype=torch.float32)
            spans = span_cxw_to_xx(out["pred_spans"]).clamp(0, 1) * dur[:, None, None]  # (B, Q, 2) s
            gts = [torch.tensor(windows[m["qid"]], dtype=torch.float32).reshape(-1, 2) for m in batch["meta"]]
            true_iou = _layer_refinement(out, dur, gts, layer_rows)  # (B, Q) the final windows' IoU
            submission.extend(to_submission(out, batch["meta"]))
            _denoise_refinement(model, batch, dn_gen, dn_rows)
            for b, gt in enumerate(gts):
                iou = true_iou[b]  # (Q,)
                top = int(out["pred_quality"][b].argmax())
                rows["top1"].append(float(iou[top] >= 0.5))
                rows["b5"].append(float(iou.max() >= 0.5))
                rows["b7"].append(float(iou.max() >= 0.7))
                rows["w1"].append(float(spans[b, top, 1] - spans[b, top, 0]))
                rows["gtw"].extend((gt[:, 1] - gt[:, 0]).tolist())
                rows["qmax"].append(float(out["pred_quality"][b].max()))
                if out.get("init_spans") is not None:
                    rows["spread"].append(float(out["init_spans"][b, :, 0].std()))
                self_iou = temporal_iou(spans[b], spans[b])[0][pairs[0], pairs[1]]  # (45,)
                rows["dup"].append(float((self_iou > 0.9).float().mean()))
    for h in hooks:
        h.remove()
    qmax = np.array(rows["qmax"])
    res: dict[str, Any] = {
        "checkpoint": str(path),
        "epoch": int(state.get("epoch", -1)),
        "n": n,
        "top1_iou>=0.5": 100 * float(np.mean(rows["top1"])),
        "best10_iou>=0.5": 100 * float(np.mean(rows["b5"])),
        "best10_iou>=0.7": 100 * float(np.mean(rows["b7"])),
        "top1_width_s": float(np.median(rows["w1"])),
        "gt_width_s": float(np.median(rows["gtw"])),
        "q_max_median": float(np.median(qmax)),
        "q_max<0.01": 100 * float(np.mean(qmax < 0.01)),
        "anchor_centre_std": float(np.mean(rows["spread"])) if rows["spread"] else float("nan"),
        "dup_pairs": 100 * float(np.mean(rows["dup"])),
    }
    for i, values in sorted(gates.items()):
        g = torch.cat(values)
        res[f"gate_sat_l{i}"] = 100 * float(((g < 0.01) | (g > 0.99)).float().mean())
    for name, (best, width_err) in layer_rows.items():
        res[f"best_iou_{name}"] = 100 * float(np.mean(best))
        res[f"width_err_{name}"] = float(np.median(width_err))
    for name, ious in dn_rows.items():
        res[f"dn_iou_{name}"] = 100 * float(torch.cat(ious).mean())
    res["mAP"] = evaluate(submission, ground_truth[:n])["brief"]["MR-full-mAP"]
    res["oracle_mAP"] = evaluate(oracle_ranked(submission, windows), ground_truth[:n])["brief"]["MR-full-mAP"]
    return res


def oracle_ranked(submission: list[dict], windows: dict[Any, list]) -> list[dict]:
    """The records with each window's score replaced by its true IoU with the qid's GT `windows`, best
    first (ties in submitted order): the best any quality score could do with these windows. The score
    is what the evaluation ranks by (it sorts each query's windows), the order is what R1 reads."""
    from sadetr.model.span_ops import temporal_iou

    out = []
    for rec in submission:
        rows = rec["pred_relevant_windows"]
        gt = torch.tensor(windows[rec["qid"]], dtype=torch.float64).reshape(-1, 2)
        pred = torch.tensor([r[:2] for r in rows], dtype=torch.float64).reshape(-1, 2)
        iou = temporal_iou(pred, gt)[0].max(dim=1).values.tolist()  # (N,)
        order = sorted(range(len(rows)), key=lambda i: -iou[i])
        out.append({**rec, "pred_relevant_windows": [[*rows[i][:2], iou[i]] for i in order]})
    return out


def _layer_refinement(
    out: dict, dur: torch.Tensor, gts: list[torch.Tensor], rows: dict[str, tuple[list[float], list[float]]]
) -> torch.Tensor:
    """Per layer (`init` = S_d, then `l<i>`): each sample's best IoU of the 10 windows and that window's
    width minus its GT window's width (s), appended to `rows[layer]`. dur [B]; gts: B × [G, 2] seconds.
    Returns the last layer's (the final windows') IoU of each window with its best GT window: [B, Q]."""
    from sadetr.model.span_ops import span_cxw_to_xx, temporal_iou

    decoder = [a["pred_spans"] for a in out.get("aux_outputs", [])] + [out["pred_spans"]]  # (B, Q, 2) each
    layers = [(f"l{i}", s) for i, s in enumerate(decoder)]
    if out.get("init_spans") is not None:
        layers.insert(0, ("init", out["init_spans"]))
    for name, layer_spans in layers:
        secs = span_cxw_to_xx(layer_spans.float()).clamp(0, 1) * dur[:, None, None]  # (B, Q, 2)
        best, width_err = rows.setdefault(name, ([], []))
        per_window = []
        for b, gt in enumerate(gts):
            iou = temporal_iou(secs[b], gt)[0]  # (Q, G)
            per_window.append(iou.max(dim=1).values)
            j = int(per_window[-1].argmax())  # the best window
            k = int(iou[j].argmax())  # its GT window
            best.append(float(iou[j, k]))
            width_err.append(float((secs[b, j, 1] - secs[b, j, 0]) - (gt[k, 1] - gt[k, 0])))
    return torch.stack(per_window)  # the last layer's (B, Q)


def _denoise_refinement(
    model: Any, batch: dict, generator: torch.Generator, rows: dict[str, list[torch.Tensor]]
) -> None:
    """Positive noise anchors of `batch` (the model's own denoiser, `generator`) through the decoder in
    eval mode: appends their IoU with their GT span [K] to `rows["anchor"]` and, per layer, the IoU of the
    decoder's outputs for them to `rows["l<i>"]`. Nothing for a model without a denoiser or GT."""
    from sadetr.model.losses import dn_positive_spans
    from sadetr.model.span_ops import paired_temporal_iou, span_cxw_to_xx

    denoiser = getattr(model, "denoiser", None)
    if denoiser is None or not any(len(t) for t in batch["spans"]):
        return
    video_mask, text_mask = batch["video_mask"].bool(), batch["text_mask"].bool()
    enc = model.encoder(batch["video_feat"], video_mask, batch["text_feat"], text_mask)
    anchors, content, _ = model.query_init.direct(enc.token)  # (B, Nq, 2), (B, Nq, d)
    dn = denoiser(batch["spans"], model.num_queries, generator)
    nq, num_dn = anchors.shape[1], dn.anchors.shape[1]
    noise = model.query_init.noise(content.shape[0], num_dn)  # (B, N_dn, d)
    layers = model.decoder(
        torch.cat([content, noise], 1), torch.cat([anchors, dn.anchors], 1), enc.memory, video_mask,
        enc.sentence, dn.attn_mask,
    )  # fmt: skip
    stages = [("anchor", dn.anchors)] + [(f"l{i}", spans[:, nq:]) for i, (spans, _) in enumerate(layers)]
    for name, spans in stages:
        src, tgt = dn_positive_spans(spans, batch["spans"], dn.meta)  # (K, 2) each
        rows.setdefault(name, []).append(paired_temporal_iou(span_cxw_to_xx(src), span_cxw_to_xx(tgt)))


def _wrap_gate(block: Any, record: Any) -> Any:
    """Pass every eq 3 gate ĝ of `block` (its `gate` method) to `record(ĝ)`; -> a handle to undo it."""
    original = block.gate

    def gate(content: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        g = original(content, pooled)
        record(g.detach())
        return g

    block.gate = gate

    class Handle:
        def remove(self) -> None:
            block.gate = original

    return Handle()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, help="first N samples of the split")
    p.add_argument("--json", type=Path, help="also write the rows as JSON lines")
    args = p.parse_args(argv)
    results = [diagnose(c, args.split, args.limit) for c in args.checkpoints]
    results.sort(key=lambda r: (str(Path(r["checkpoint"]).parent), r["epoch"]))
    keys = list(dict.fromkeys(k for r in results for k in r if k not in ("checkpoint", "n")))
    print("| run | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in results:
        cells = [f"{r[k]:.1f}" if isinstance(r.get(k), float) else str(r.get(k, "–")) for k in keys]
        run = Path(r["checkpoint"]).parent
        print(f"| {run.parent.name}/{run.name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
