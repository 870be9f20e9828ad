"""`tools/loss_gradients.py` (issue 11's gradient diagnosis): its groups add up to the training loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def grads(tool):
    return tool("loss_gradients")


def test_groups_cover_every_weighted_term(grads) -> None:
    from sadetr.model.build import build_criterion
    from sadetr.model.config import LossConfig, ModelConfig

    for name in ("sa_detr", "qd_detr", "moment_detr"):
        crit = build_criterion(ModelConfig(name=name), LossConfig())
        groups = {grads.group_of(k) for k in crit.weight_dict}  # KeyError for a term without a group
        assert "moment" in groups and "saliency" in groups
    assert grads.group_of("loss_giou_1") == "moment" and grads.group_of("loss_qmargin_0") == "qmargin"
    assert grads.part_of("decoder.layers.0.ffn.weight") == "decoder"
    assert grads.part_of("span_embed.layers.0.weight") == "decoder"
    assert (
        grads.part_of("encoder.t2v.weight") == "encoder" and grads.part_of("query_init.mlp.w") == "query_init"
    )


def test_total_is_the_training_loss_gradient(grads, tiny_checkpoint: Path) -> None:
    """Each part's `total` is the norm of the gradient of eq 10's total, computed here independently."""
    from torch.utils.data import DataLoader

    from sadetr.data.dataset import build_dataset, collate
    from sadetr.engine.checkpoint import load_trained_model
    from sadetr.model.build import build_criterion

    res = grads.gradients(tiny_checkpoint, 1)
    model, cfg, _ = load_trained_model(tiny_checkpoint)
    criterion = build_criterion(cfg.model, cfg.loss)
    dataset = build_dataset(cfg.data, "train", seed=0)
    first = list(range(min(cfg.train.batch_size, len(dataset))))
    model.train()
    torch.manual_seed(0)  # the tool's draws: the loader's base seed, then dropout and noise
    batch = next(iter(DataLoader(dataset, batch_sampler=[first], collate_fn=collate)))
    out = grads.train_forward(model, batch)
    criterion.total(criterion(out, batch)).backward()
    for part in ("encoder", "decoder"):
        flat = [
            p.grad.flatten()
            for n, p in model.named_parameters()
            if grads.part_of(n) == part and p.grad is not None
        ]
        assert res[f"{part}/total"] == pytest.approx(float(torch.cat(flat).norm()), rel=1e-4)
        assert (
            res[f"{part}/total"]
            <= sum(v for k, v in res.items() if k.startswith(part + "/") and "total" not in k) + 1e-6
        )
    assert res["decoder/saliency"] == 0.0 and res["encoder/moment"] > 0  # L_S never reaches the decoder
    assert -1.0 <= res["decoder/cos_moment_total"] <= 1.0
