"""Learning-rate schedule: constant, cosine, or constant-then-cosine to 0 (appendix A.2)."""

from __future__ import annotations

import math

import torch

from sadetr.config.train import TrainConfig
from sadetr.core.errors import ConfigError

SCHEDULES = ("constant", "cosine", "constant_cosine")


def lr_factor(epoch: float, schedule: str, total_epochs: int, constant_epochs: int) -> float:
    """Multiplier of the base lr at (fractional) `epoch`.

    `constant_cosine` keeps the lr for `constant_epochs`, then decays it with a half cosine to 0 at
    `total_epochs` (QVHighlights: 40 of 200). `cosine` is the same with no constant part.

    >>> lr_factor(10, "constant_cosine", 200, 40), lr_factor(120, "constant_cosine", 200, 40)
    (1.0, 0.5)
    """
    if schedule == "constant":
        return 1.0
    start = constant_epochs if schedule == "constant_cosine" else 0
    if epoch <= start or total_epochs <= start:
        return 1.0
    t = min(1.0, (epoch - start) / (total_epochs - start))
    return 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR following `lr_factor` (epoch progress = step / steps_per_epoch)."""
    if cfg.lr_schedule not in SCHEDULES:
        raise ConfigError(
            f"unknown schedule {cfg.lr_schedule!r} (valid: {', '.join(SCHEDULES)})", key="train.lr_schedule"
        )
    steps = max(1, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step / steps, cfg.lr_schedule, cfg.epochs, cfg.lr_constant_epochs),
    )


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (weight decay 1e-4: the paper gives none, Moment-DETR's
    and QD-DETR's code use it; docs/readings.md "Training"); on CUDA its fused kernel
    (the same update in one launch per step instead of several per parameter group)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.is_cuda for p in params)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
