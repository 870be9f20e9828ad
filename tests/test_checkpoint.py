"""Checkpoint files: content, atomic writes, safe loading, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sadetr.config.compose import compose_config, config_from_dict
from sadetr.core.errors import CheckpointError
from sadetr.engine.checkpoint import feature_pipeline, load_checkpoint, save_checkpoint
from sadetr.engine.rng import get_rng_state


def _state() -> dict:
    from sadetr.config.compose import config_to_dict

    cfg = compose_config("qvhighlights_sfc")
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": {},
        "epoch": 2,
        "step": 5,
        "rng": get_rng_state(),
        "config": config_to_dict(cfg),
        "features": feature_pipeline(cfg.data),
        "metrics": {"MR-full-mAP": 12.5},
    }


def test_round_trip_and_safe_loading(tmp_path: Path) -> None:
    state = _state()
    save_checkpoint(tmp_path / "last.ckpt", state)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind
    back = load_checkpoint(tmp_path / "last.ckpt")  # weights_only=True: no pickled code runs
    assert torch.equal(back["model"]["weight"], state["model"]["weight"])
    assert back["optimizer"]["state"][0]["exp_avg"].shape == (2, 3)
    assert (back["epoch"], back["step"], back["metrics"]) == (2, 5, {"MR-full-mAP": 12.5})
    assert config_from_dict(back["config"]) == compose_config("qvhighlights_sfc")
    assert back["features"]["video_sources"] == ["slowfast_features", "clip_features"]
    assert back["features"]["video_dim"] == 2818 and back["features"]["clip_len"] == 2.0
    assert back["sadetr_version"]
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    # a run directory resolves to its best (else last) checkpoint
    assert load_checkpoint(tmp_path)["step"] == 5


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path / "garbage.ckpt")
    torch.save({"model": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="missing config"):
        load_checkpoint(tmp_path / "other.ckpt")
    good = tmp_path / "good.ckpt"
    save_checkpoint(good, _state())
    good.write_bytes(good.read_bytes()[:100])  # truncated by a crash of a non-atomic writer
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(good)
