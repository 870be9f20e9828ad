"""Which loss drives which part of the model: per-loss-group gradient norms of checkpoints on train batches.

The diagnosis of docs/research/loss-gradients.md. For each checkpoint, on the first
`--batches` training batches of its own config (batch size and order fixed, train mode, dropout and the
denoising draw seeded), the eq 10 terms are grouped:

- `moment`: L_M on the direct queries of every layer (`loss_l1*`, `loss_giou*`); `label`: the baselines'
  foreground CE; `init`: L_init on the anchors S_d; `dn`: L_M on the noise queries; `quality`: eq 8;
  `qmargin`: eq 9; `vtc` and the three terms of L_ctm (`ctm_local`, `ctm_intra`,
  `ctm_inter`): L_A; `saliency`: L_S.

and for each group g and part P of the model (`encoder`: everything before the queries, `query_init`,
`decoder`: the decoder and its heads) the tool reports the L2 norm of the gradient of the weighted group,
`|∇_P λ_g L_g|`, and the share of the total gradient along the moment group's direction,
`cos(∇_P L_moment, ∇_P L_total)`: how much of what the optimiser sees in P serves the direct queries'
localisation. Means over the batches.

Usage: `python tools/loss_gradients.py CKPT [CKPT ...] [--batches 8] [--json OUT]`
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

GROUPS = {  # group -> prefixes of the loss keys (suffixes _0, _1 are the aux layers)
    "moment": ("loss_l1", "loss_giou"),
    "label": ("loss_label",),
    "init": ("loss_init_",),
    "dn": ("loss_dn_",),
    "quality": ("loss_quality",),
    "qmargin": ("loss_qmargin",),
    "vtc": ("loss_vtc",),
    "ctm_local": ("loss_ctm_local",),
    "ctm_intra": ("loss_ctm_intra",),
    "ctm_inter": ("loss_ctm_inter",),
    "saliency": ("loss_sal_",),
}
DECODER_SIDE = ("decoder", "span_embed", "class_embed", "query_embed")


def group_of(key: str) -> str:
    """The group of a loss key (`loss_giou_1` -> moment)."""
    for group, prefixes in GROUPS.items():
        if key.startswith(prefixes):
            return group
    raise KeyError(f"loss term {key!r} has no group")


def part_of(name: str) -> str:
    """The model part of a parameter name."""
    top = name.split(".")[0]
    if top in DECODER_SIDE:
        return "decoder"
    return "query_init" if top == "query_init" else "encoder"


def train_forward(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    """The training forward of a collated batch (with its GT spans, so SA-DETR adds its noise queries)."""
    return model(
        batch["video_feat"],
        batch["video_mask"],
        batch["text_feat"],
        batch["text_mask"],
        targets=batch["spans"],
    )


def gradients(path: Path, batches: int) -> dict[str, Any]:
    """Mean over `batches` training batches of the per-group gradient norms per part (module docstring)."""
    from torch.utils.data import DataLoader

    from sadetr.data.dataset import build_dataset, collate
    from sadetr.engine.checkpoint import load_trained_model
    from sadetr.model.build import build_criterion

    model, cfg, state = load_trained_model(path)
    criterion = build_criterion(cfg.model, cfg.loss)
    dataset = build_dataset(cfg.data, "train", seed=0)
    bs, n = cfg.train.batch_size, len(dataset)
    sampler = [list(range(i * bs, min((i + 1) * bs, n))) for i in range(batches) if i * bs < n]
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad], strict=True)
    part_idx: dict[str, list[int]] = defaultdict(list)  # part -> indices into params
    for i, name in enumerate(names):
        part_idx[part_of(name)].append(i)
    sums: dict[str, float] = defaultdict(float)
    model.train()
    torch.manual_seed(0)
    for batch in loader:
        losses = criterion(train_forward(model, batch), batch)
        weighted: dict[str, torch.Tensor] = {}
        for key, value in losses.items():
            if key in criterion.weight_dict:
                g = group_of(key)
                weighted[g] = weighted.get(g, value.new_zeros(())) + criterion.weight_dict[key] * value
        grads = {
            g: torch.autograd.grad(v, params, retain_graph=True, allow_unused=True, materialize_grads=True)
            for g, v in weighted.items()
        }
        for part, idx in part_idx.items():
            per_group = {g: torch.cat([gs[i].flatten() for i in idx]) for g, gs in grads.items()}
            total = torch.stack(list(per_group.values())).sum(0)
            for g, vec in per_group.items():
                sums[f"{part}/{g}"] += float(vec.norm())
            sums[f"{part}/total"] += float(total.norm())
            if "moment" in per_group and float(total.norm()) > 0:
                cos = torch.nn.functional.cosine_similarity(per_group["moment"], total, dim=0)
                sums[f"{part}/cos_moment_total"] += float(cos)
    row: dict[str, Any] = {"checkpoint": str(path), "epoch": state.get("epoch"), "model": cfg.model.name}
    row.update({k: v / len(sampler) for k, v in sums.items()})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = [gradients(p, args.batches) for p in args.checkpoints]
    for row in rows:
        print(f"# {row['checkpoint']} (epoch {row['epoch']}, {row['model']})")
        for part in ("encoder", "query_init", "decoder"):
            keys = sorted(k for k in row if k.startswith(part + "/") and k != f"{part}/cos_moment_total")
            if not keys:
                continue
            cells = ", ".join(f"{k.split('/')[1]} {row[k]:.3g}" for k in keys)
            cos = row.get(f"{part}/cos_moment_total")
            print(f"  {part}: {cells}" + (f"; cos(moment, total) {cos:.2f}" if cos is not None else ""))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
