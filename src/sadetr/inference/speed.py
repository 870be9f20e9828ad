"""Latency of one model under each inference backend (`sadetr bench --backends`): eager PyTorch, onnxruntime
and onnxruntime int8, at the given batch sizes, on inputs of the full exported lengths (max_v_l clips,
max_q_l tokens); and one model's onnxruntime latency against several models in eager PyTorch. Wall and
process CPU time (the latter is robust to other processes taking the cores). The runners of one
comparison are timed interleaved, in rounds, so that a busy neighbour or a slower clock slows them alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sadetr.data.pipeline import FeaturePipeline
from sadetr.inference.backend import OUTPUT_NAMES, OnnxBackend, TorchBackend
from sadetr.inference.export import export_onnx, quantize_int8


def interleaved(
    runners: Mapping[str, Callable[[], Any]], calls: int, rounds: int = 5
) -> dict[str, tuple[float, float]]:
    """(wall s, process CPU s) per runner: the median over `rounds` rounds of the runner's median call in
    that round. In each round every runner makes `calls` calls in turn; one warm-up call each first."""
    for fn in runners.values():
        fn()
    medians: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            wall, cpu = [], []
            for _ in range(calls):
                t, c = time.perf_counter(), time.process_time()
                fn()
                wall.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            medians[name].append((statistics.median(wall), statistics.median(cpu)))
    return {
        name: (statistics.median(w for w, _ in m), statistics.median(c for _, c in m))
        for name, m in medians.items()
    }


def full_batch(pipeline: FeaturePipeline, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random L2-normalised inputs of `batch` x max_v_l clips x max_q_l tokens (75 / 32 if unlimited)."""
    g = torch.Generator().manual_seed(seed)
    lv, lt = pipeline.max_v_l or 75, pipeline.max_q_l or 32
    video = torch.nn.functional.normalize(torch.randn(batch, lv, pipeline.video_dim, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(batch, lt, pipeline.text_dim, generator=g), dim=-1)
    return video, torch.ones(batch, lv, dtype=torch.bool), text, torch.ones(batch, lt, dtype=torch.bool)


def backend_latency(
    model: nn.Module, pipeline: FeaturePipeline, batch_sizes: Sequence[int], threads: int = 1
) -> dict[str, Any]:
    """Export (and quantise) `model`, then time eager / onnxruntime / int8 at each batch size with
    `threads` onnxruntime threads (torch's are the caller's). Returns export and quantisation seconds,
    `latency_s[backend][batch] = (wall, cpu)`, the ratios to eager, and int8's largest output difference."""
    model = model.eval()
    with tempfile.TemporaryDirectory(prefix="sadetr-bench-") as tmp:
        t = time.perf_counter()
        export_onnx(model, pipeline, Path(tmp) / "model.onnx")
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        quantize_int8(Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx")
        quantize_s = time.perf_counter() - t

        def session(name: str) -> OnnxBackend:
            return OnnxBackend(
                Path(tmp) / name, max_v_l=pipeline.max_v_l, max_q_l=pipeline.max_q_l, threads=threads
            )

        runners: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
            "eager": TorchBackend(model),
            "onnxruntime": session("model.onnx"),
            "int8": session("model.int8.onnx"),
        }
        latency: dict[str, dict[str, tuple[float, float]]] = {name: {} for name in runners}
        int8_diff: dict[str, float] = {}
        for bsz in batch_sizes:
            inputs = full_batch(pipeline, bsz)
            calls = {name: partial(run, *inputs) for name, run in runners.items()}
            for name, times in interleaved(calls, 10 if bsz == 1 else 1).items():
                latency[name][str(bsz)] = times
            eager, int8 = runners["eager"](*inputs), runners["int8"](*inputs)
            for key in OUTPUT_NAMES:
                diff = float((int8[key] - eager[key]).abs().max())
                int8_diff[key] = max(int8_diff.get(key, 0.0), diff)
    ratios = {
        name: {b: latency[name][b][1] / latency["eager"][b][1] for b in latency[name]}
        for name in ("onnxruntime", "int8")
    }
    return {
        "export_s": export_s,
        "quantize_s": quantize_s,
        "threads": threads,
        "latency_s": latency,
        "cpu_ratio_to_eager": ratios,
        "int8_max_abs_diff": int8_diff,
    }


def onnx_against_eager(
    model: nn.Module, pipeline: FeaturePipeline, eager_models: Mapping[str, nn.Module], threads: int = 1
) -> dict[str, Any]:
    """Batch-1 latency of `model` exported to onnxruntime (`threads` threads) against each of
    `eager_models` in eager PyTorch (torch's threads are the caller's), interleaved in one process on the
    same full-length input. Returns `latency_s[name] = (wall, cpu)` (`onnxruntime` and each eager model)
    and `cpu_ratio[name]`: onnxruntime's CPU time over that eager model's."""
    with tempfile.TemporaryDirectory(prefix="sadetr-bench-") as tmp:
        export_onnx(model.eval(), pipeline, Path(tmp) / "model.onnx")
        session = OnnxBackend(
            Path(tmp) / "model.onnx", max_v_l=pipeline.max_v_l, max_q_l=pipeline.max_q_l, threads=threads
        )
        inputs = full_batch(pipeline, 1)
        runners = {"onnxruntime": partial(session, *inputs)}
        runners |= {name: partial(TorchBackend(m), *inputs) for name, m in eager_models.items()}
        latency = interleaved(runners, calls=10, rounds=10)
    return {
        "threads": threads,
        "latency_s": latency,
        "cpu_ratio": {name: latency["onnxruntime"][1] / latency[name][1] for name in eager_models},
    }
