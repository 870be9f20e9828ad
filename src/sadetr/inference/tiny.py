"""An untrained SA-DETR checkpoint on the tiny CLIP's features (`sadetr.video.tiny`), for tests, tools
and offline demos of the video path, the service and the corpus search (no real weights anywhere)."""

from __future__ import annotations

from pathlib import Path

import torch

from sadetr.config.compose import compose_config, config_to_dict
from sadetr.engine.checkpoint import feature_pipeline, save_checkpoint
from sadetr.model.build import build_model
from sadetr.video.tiny import TINY_CLIP_VIDEO_DIM


def save_tiny_clip_checkpoint(path: Path, *overrides: str, seed: int = 0) -> Path:
    """An untrained SA-DETR (d = 32) on tiny CLIP video features (16-d + TEF) and 64-d text at `path`;
    `overrides` (dotted `key=value`) adjust the config, e.g. `data.max_v_l=2`."""
    cfg = compose_config(
        None,
        overrides=[
            "data.video_sources=[clip_features]",
            f"data.video_dims=[{TINY_CLIP_VIDEO_DIM}]",
            "data.text_dim=64",
            f"model.video_dim={TINY_CLIP_VIDEO_DIM + 2}",
            "model.text_dim=64",
            "model.hidden_dim=32",
            "model.nheads=4",
            "model.ffn_dim=64",
            "model.num_queries=4",
            *overrides,
        ],
    )
    torch.manual_seed(seed)
    state = {
        "model": build_model(cfg.model).state_dict(),
        "config": config_to_dict(cfg),
        "features": feature_pipeline(cfg.data),
        "epoch": 0,
        "step": 0,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, state)
    return path
