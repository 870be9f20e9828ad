"""bf16 autocast on a CPU with native bf16 (`train.bf16`): it applies, and the model learns as in fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sadetr.engine.validation import autocast, cpu_has_native_bf16

needs_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")


@needs_bf16
def test_autocast_applies_on_a_bf16_cpu() -> None:
    layer = torch.nn.Linear(8, 4)
    with autocast(torch.device("cpu"), bf16=True):
        assert layer(torch.randn(2, 8)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), bf16=False):
        assert layer(torch.randn(2, 8)).dtype == torch.float32


# The demo's model (d=64, every component on) on the 800-query synthetic data, half test_learning's budget
# (6 epochs x 50 steps): highlight detection is learnt by then, moment retrieval only partly.
TRAIN = ["train.epochs=6", "train.eval_every=6", "train.progress=false", "train.tensorboard=false"]
HD_KEY, MR_KEY = "HL-min-VeryGood-mAP", "MR-full-mAP"


def _train(tmp: Path, data: dict, *extra: str) -> dict[str, float]:
    from sadetr.config.compose import compose_config
    from sadetr.engine.trainer import train

    cfg = compose_config(["synthetic_qvh", str(data["config"])], [*TRAIN, *extra])
    train(cfg, tmp)
    return json.loads((tmp / "best_metrics.json").read_text())["metrics"]["brief"]


def _random_hd(data: dict) -> float:
    from sadetr.eval import evaluate

    val = [json.loads(x) for x in Path(data["val"]).read_text().splitlines()]
    rng = np.random.default_rng(0)
    sub = [
        {
            "qid": g["qid"],
            "query": g["query"],
            "vid": g["vid"],
            "pred_relevant_windows": [[0.0, float(g["duration"]), 1.0]],
            "pred_saliency_scores": rng.normal(size=int(np.ceil(g["duration"] / 2))).tolist(),
        }
        for g in val
    ]
    return evaluate(sub, val)["brief"][HD_KEY]


@needs_bf16
@pytest.mark.slow
def test_bf16_learns_as_well_as_fp32(tmp_path: Path, synthetic_qvh_learn: dict) -> None:
    fp32 = _train(tmp_path / "fp32", synthetic_qvh_learn)
    bf16 = _train(tmp_path / "bf16", synthetic_qvh_learn, "train.bf16=true")
    print(f"fp32 {fp32[HD_KEY]:.1f} / {fp32[MR_KEY]:.1f}, bf16 {bf16[HD_KEY]:.1f} / {bf16[MR_KEY]:.1f}")
    assert bf16[HD_KEY] >= _random_hd(synthetic_qvh_learn) + 8.0  # it learns
    assert bf16[HD_KEY] >= fp32[HD_KEY] - 5.0  # as well as fp32 (same seed, data, steps)
    assert bf16[MR_KEY] >= fp32[MR_KEY] - 5.0
