"""A training run SIGKILLed mid-epoch and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sadetr.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def _cmd(data_cfg: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sadetr",
        "train",
        "--config",
        "synthetic_tiny",
        "--config",
        str(data_cfg),
        "--set",
        "train.epochs=3",
        "--set",
        "train.checkpoint_every_steps=2",
        "--set",
        "train.log_every_steps=1",
        "--out",
        str(out),
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


# CPU seconds are a measurement of the machine, not of the run: they differ between any two runs.
MEASURED = {"train_cpu_s"}


def _deterministic(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in MEASURED}


def _evals(run: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [_deterministic(r) for r in recs if r["kind"] == "eval"]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path, synthetic_qvh: dict) -> None:
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(
        _cmd(synthetic_qvh["config"], ref), check=True, env=_env(), capture_output=True, timeout=600
    )

    # 48 samples / batch 8 = 6 steps per epoch; checkpoints at steps 2 and 4 are mid-epoch.
    proc = subprocess.Popen(
        _cmd(synthetic_qvh["config"], killed),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = killed / "last.ckpt"
    try:
        deadline = time.monotonic() + 300
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    state = load_checkpoint(ckpt)
    assert state["step"] > 0, "expected a mid-epoch checkpoint"
    assert not (killed / "best_metrics.json").exists() or state["epoch"] > 0

    resumed = subprocess.run(
        [sys.executable, "-m", "sadetr", "train", "--resume", "--out", str(killed)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a, b = load_checkpoint(ref / "last.ckpt"), load_checkpoint(killed / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 18
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert _evals(ref) == _evals(killed)
    assert _deterministic(json.loads((ref / "best_metrics.json").read_text())) == _deterministic(
        json.loads((killed / "best_metrics.json").read_text())
    )
    assert (ref / "val_preds.jsonl").read_text() == (killed / "val_preds.jsonl").read_text()
    # the resumed run's training log has each step exactly once
    steps = [
        json.loads(x)["global_step"]
        for x in (killed / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "train"
    ]
    assert steps == list(range(1, 19))
