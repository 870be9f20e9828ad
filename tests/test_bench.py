"""`sadetr bench` runs end to end and reports every figure (a smoke test: no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sadetr.cli import main


@pytest.mark.slow
def test_bench_writes_every_figure(tmp_path: Path) -> None:
    # The tiny model keeps this fast; the batch is still QVHighlights-shaped (32 x 75 x 2818, 32 tokens).
    code = main(
        ["bench", "--out", str(tmp_path), "--config", "synthetic_tiny", "--steps", "1", "--threads", "1"]
    )
    assert code == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["batch"] == [32, 75, 2818, 32]
    for key in (
        "train_samples_per_s",
        "infer_latency_1_s",
        "infer_latency_32_s",
        "data_samples_per_s",
        "eval_s",
    ):
        assert result[key] > 0, key
    assert result["peak_rss_mib"] > 100
    assert result["eval_queries"] == 1549 and result["eval_ground_truth"] == "synthetic"
