"""`sadetr bench` runs end to end and reports every figure (a smoke test: no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sadetr.bench.speed import BenchSettings, bench_onnx_against_eager, count_flops, sgemm_peak
from sadetr.cli.main import main
from sadetr.inference.speed import interleaved


@pytest.mark.slow
def test_bench_writes_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps the table's labels to the terminal's width
    # The tiny model keeps this fast; the batch is still QVHighlights-shaped (32 x 75 x 2818, 32 tokens).
    code = main(
        [
            "bench", "--out", str(tmp_path), "--config", "synthetic_tiny", "--steps", "1", "--threads", "1",
            "--models", "sa_detr,qd_detr", "--backends",
        ]
    )  # fmt: skip
    assert code == 0
    # the first model's onnxruntime graph against both models in eager PyTorch, in one process
    assert "1 query, interleaved: sa_detr onnxruntime / this model eager" in capsys.readouterr().out
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["batch"] == [32, 75, 2818, 32]
    assert list(result["models"]) == ["sa_detr", "qd_detr"]
    for name, r in result["models"].items():
        assert r["model"] == name and r["threads"] == 1
        for key in (
            "train_samples_per_s",
            "train_step_cpu_s",
            "infer_latency_1_s",
            "infer_latency_batch_s",
            "train_step_gflop",
            "infer_1_gflop",
            "sgemm_peak_gflops",
            "sgemm_peak_gflops_cpu",
            "train_peak_fraction_cpu",
            "train_peak_fraction_wall",
        ):
            assert r[key] > 0, (name, key)
        # a training step is forward + backward: more work than the forward on the same batch
        assert r["train_step_gflop"] > r["infer_batch_gflop"] > r["infer_1_gflop"]
        assert r["peak_rss_mib"] > 100
        for minutes, windows in (("10min", 8), ("60min", 48)):
            long = r["long_video_s"][minutes]
            assert long["windows"] == windows and long["batched_s"] > 0 and long["one_by_one_s"] > 0
    assert result["ratios_to_first"]["sa_detr"]["train_step_s"] == 1.0
    assert result["ratios_to_first"]["qd_detr"]["train_step_gflop"] > 0
    assert result["data_samples_per_s"] > 0 and result["eval_s"] > 0
    assert result["eval_queries"] == 1549 and result["eval_ground_truth"] == "synthetic"
    assert set(result["onnx_against_eager"]["cpu_ratio"]) == {"sa_detr", "qd_detr"}


def test_flop_count_of_a_matmul_and_the_sgemm_peak() -> None:
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: a @ b) == 2 * 64 * 32 * 16
    peak = sgemm_peak(torch.device("cpu"), n=128, repeat=2)
    assert peak["gflops_wall"] > 0 and peak["gflops_cpu"] > 0


def test_unknown_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--out", str(tmp_path), "--models", "sa_detr,nope"]) == 2
    assert "--models: unknown model 'nope'" in capsys.readouterr().err


def test_flop_count_includes_cpu_attention_forward_and_backward() -> None:
    q = torch.randn(2, 4, 5, 8, requires_grad=True)
    k = torch.randn(2, 4, 7, 8, requires_grad=True)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    forward = 2 * 2 * 4 * 5 * 7 * (8 + 8)  # QK^T and PV
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert count_flops(lambda: sdpa(q, k, k, attn_mask=mask)) == forward
    out = sdpa(q, k, k, attn_mask=mask)
    assert count_flops(lambda: out.sum().backward()) == 2 * forward


@pytest.mark.slow  # an ONNX export and an inductor compilation: minutes on a shared CPU
def test_bench_backend_and_compiled_step_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("onnxruntime")
    argv = ["bench", "--out", str(tmp_path), "--config", "synthetic_tiny", "--steps", "2", "--threads", "1"]
    argv += [
        "--models",
        "moment_detr",
        "--batch-size",
        "4",
        "--no-long-videos",
        "--backends",
        "--compile-train",
    ]
    assert main(argv) == 0
    r = json.loads((tmp_path / "bench.json").read_text())["models"]["moment_detr"]
    lat = r["backends"]["latency_s"]
    assert set(lat) == {"eager", "onnxruntime", "int8"} and all(set(v) == {"1", "4"} for v in lat.values())
    assert all(wall > 0 and cpu > 0 for v in lat.values() for wall, cpu in v.values())
    ratio = r["backends"]["cpu_ratio_to_eager"]["onnxruntime"]["4"]
    assert ratio == pytest.approx(lat["onnxruntime"]["4"][1] / lat["eager"]["4"][1])
    assert 0 < r["backends"]["int8_max_abs_diff"]["pred_spans"] < 0.5
    step = r["compiled_step"]
    assert step["steps"] == 2 and step["compile_s"] > 0 and step["loss_max_rel_diff"] < 1e-4
    out = capsys.readouterr().out
    assert "eager / onnxruntime / int8" in out and "train.compile" in out


def test_interleaved_times_every_runner_in_turn() -> None:
    order: list[str] = []
    runners = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    times = interleaved(runners, calls=2, rounds=3)
    # one warm-up each, then per round each runner's block of `calls` calls
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert set(times) == {"a", "b"} and all(wall >= 0 and cpu >= 0 for wall, cpu in times.values())


def test_interleaved_takes_the_median_of_each_rounds_median(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("sadetr.inference.speed.time.perf_counter", lambda: clock[0])
    monkeypatch.setattr("sadetr.inference.speed.time.process_time", lambda: clock[0] / 2)
    # after one warm-up call, 3 rounds of 3 calls: round medians 2, 4, 6; the mean of all would be 20
    durations = iter([0.0, 1.0, 2.0, 100.0, 3.0, 50.0, 4.0, 7.0, 6.0, 5.0])

    def runner() -> None:
        clock[0] += next(durations)

    times = interleaved({"a": runner}, calls=3, rounds=3)
    assert times["a"] == (pytest.approx(4.0), pytest.approx(2.0))


@pytest.mark.slow  # one ONNX export of the tiny model
def test_onnx_against_eager_times_every_model_in_one_process() -> None:
    pytest.importorskip("onnxruntime")
    settings = BenchSettings(config="synthetic_tiny", threads=1)
    r = bench_onnx_against_eager(settings, ["moment_detr", "sa_detr"])
    assert set(r["latency_s"]) == {"onnxruntime", "moment_detr", "sa_detr"}
    assert set(r["cpu_ratio"]) == {"moment_detr", "sa_detr"}
    for name, ratio in r["cpu_ratio"].items():
        assert ratio == pytest.approx(r["latency_s"]["onnxruntime"][1] / r["latency_s"][name][1])
