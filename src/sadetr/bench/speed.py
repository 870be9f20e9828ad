"""Speed, work and memory of the models on a QVHighlights-shaped batch, and of evaluation (`sadetr bench`).

Per model: training step (forward + criterion + backward + AdamW step, wall and process CPU time),
inference latency for 1 query and for a batch, FLOPs of each (`torch.utils.flop_counter`), the achieved
GFLOP/s as a fraction of this machine's measured sgemm peak at the same thread count, peak memory, time
per component, and the latency of a 10-minute and a 60-minute video (features given, sliding windows in
one batch). Several models run one after another, each in a fresh process (its own peak RSS), and their
ratios to the first model are reported. Also: the data pipeline's samples/s and the evaluation time of
1549 queries (QVHighlights val size).
"""

from __future__ import annotations

import multiprocessing
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sadetr.config.compose import build_dataclass, compose_config
from sadetr.data.config import DataConfig
from sadetr.data.dataset import build_dataset, collate
from sadetr.data.pipeline import FeaturePipeline
from sadetr.data.synth import generate_synthetic
from sadetr.engine.distributed import resolve_device
from sadetr.engine.schedule import build_optimizer
from sadetr.engine.trainer import compile_model, total_loss
from sadetr.engine.validation import autocast, move_batch
from sadetr.eval import evaluate
from sadetr.eval import load_jsonl as load_eval_jsonl
from sadetr.inference.predictor import Predictor
from sadetr.inference.speed import backend_latency, onnx_against_eager
from sadetr.model.build import build_criterion, build_model

LONG_VIDEOS_MIN = (10, 60)  # minutes of video for the long-video latency (2 s clips)


@dataclass
class BenchSettings:
    """What `sadetr bench` measures; one model's run gets these plus its name."""

    config: str = "qvhighlights_sfc"
    overrides: tuple[str, ...] = ()
    batch_size: int = 32
    steps: int = 5
    device: str = "auto"
    threads: int = 0  # torch intra-op threads (0 = torch's default)
    bf16: bool = False  # bf16 autocast (CUDA, or a CPU with native bf16)
    compile: bool = False  # torch.compile the eval model for the inference timings
    long_videos: bool = True
    backends: bool = False  # eager vs onnxruntime vs int8 at batch 1 and `batch_size` (needs sadetr[onnx])
    compile_train: bool = False  # eager vs `train.compile` training step (compile time, step, losses)


def synthetic_batch(batch: int, lv: int, lt: int, dv: int, dt: int, seed: int = 0) -> dict[str, Any]:
    """A collated batch in the contract's format with random features, 1-3 GT spans per sample."""
    g = torch.Generator().manual_seed(seed)
    spans = []
    for _ in range(batch):
        n = int(torch.randint(1, 4, (1,), generator=g))
        c, w = torch.rand(n, generator=g) * 0.8 + 0.1, torch.rand(n, generator=g) * 0.15 + 0.03
        spans.append(torch.stack([c, w], dim=1))
    saliency = torch.randint(0, 13, (batch, lv), generator=g).float()
    return {
        "video_feat": torch.nn.functional.normalize(torch.randn(batch, lv, dv, generator=g), dim=-1),
        "video_mask": torch.ones(batch, lv, dtype=torch.bool),
        "text_feat": torch.nn.functional.normalize(torch.randn(batch, lt, dt, generator=g), dim=-1),
        "text_mask": torch.ones(batch, lt, dtype=torch.bool),
        "spans": spans,
        "saliency": saliency,
        "relevant": saliency > 6,
        "saliency_pos_idx": torch.randint(0, lv, (batch, 2), generator=g),
        "saliency_neg_idx": torch.randint(0, lv, (batch, 2), generator=g),
        "vid_index": torch.arange(batch),
        "meta": [
            {"qid": i, "vid": f"v{i}", "query": "q", "duration": lv * 2.0, "clip_sec": 2.0, "num_clips": lv}
            for i in range(batch)
        ],
    }


class _Timers:
    """Wall time per named module (forward pre/post hooks; synchronised on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.total: defaultdict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}
        self._handles: list[Any] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def attach(self, name: str, module: torch.nn.Module) -> None:
        def pre(*_: Any) -> None:
            self._sync()
            self._start[name] = time.perf_counter()

        def post(*_: Any) -> None:
            self._sync()
            self.total[name] += time.perf_counter() - self._start.pop(name)

        self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def detach(self) -> None:
        """Remove the hooks (their device syncs would slow the steps that are timed as a whole)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def time_calls(
    fn: Callable[[], Any], device: torch.device, repeat: int, cpu: list[float] | None = None
) -> list[float]:
    """Wall seconds of each of `repeat` calls; process CPU seconds appended to `cpu` if given."""
    out = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t, c = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.process_time() - c)
    return out


def _cpu_attention_flops(func: Any, args: tuple) -> int:
    """FLOPs of the CPU flash-attention kernels, which torch's flop registry leaves out (as the CUDA ones:
    QK^T and PV forward, twice that backward)."""
    name = str(func)
    if "_scaled_dot_product_flash_attention_for_cpu" not in name:
        return 0
    q, k, v = args[1:4] if "backward" in name else args[:3]  # (B, h, Lq, dq), (B, h, Lk, dq), (B, h, Lk, dv)
    b, h, lq, dq = q.shape
    lk, dv = k.shape[2], v.shape[3]
    forward = 2 * b * h * lq * lk * (dq + dv)
    return 2 * forward if "backward" in name else forward


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call: matmuls, convolutions and attention, by torch's flop
    formulas (`torch.utils.flop_counter`), counted at the dispatcher (no module hooks)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        flops = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.flops += int(formula(*args, **kwargs, out_val=out))
            else:
                self.flops += _cpu_attention_flops(func, args)
            return out

    with Counter() as counter:
        fn()
    return counter.flops


def sgemm_peak(device: torch.device, n: int = 1024, repeat: int = 10) -> dict[str, float]:
    """This machine's fp32 matmul speed at the current thread count: best of `repeat` n x n x n GEMMs.

    GFLOP/s by wall time and by process CPU time per thread (the latter is robust to other processes
    taking the cores; both are equal on an idle machine at one thread).
    """
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    flops = 2.0 * n**3
    torch.mm(a, b)
    cpu: list[float] = []
    wall = time_calls(lambda: torch.mm(a, b), device, repeat, cpu)
    per_thread = [c / torch.get_num_threads() for c in cpu]
    return {"gflops_wall": flops / min(wall) / 1e9, "gflops_cpu": flops / max(min(per_thread), 1e-9) / 1e9}


def _synthetic_gt(n: int, seed: int = 0) -> list[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    gt = []
    for i in range(n):
        clips = 75
        starts = sorted(rng.choice(clips - 10, size=int(rng.integers(1, 4)), replace=False).tolist())
        wins = [[2 * s, 2 * min(clips, s + int(rng.integers(1, 10)))] for s in starts]
        ids = sorted({c for s, e in wins for c in range(s // 2, e // 2)})
        gt.append(
            {
                "qid": i,
                "query": "q",
                "vid": f"v{i}",
                "duration": 150,
                "relevant_windows": wins,
                "relevant_clip_ids": ids,
                "saliency_scores": rng.integers(0, 5, (len(ids), 3)).tolist(),
            }
        )
    return gt


def _synthetic_submission(gt: list[dict[str, Any]], seed: int = 1) -> list[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    sub = []
    for rec in gt:
        dur = float(rec["duration"])
        se = np.sort(rng.uniform(0, dur, (10, 2)), axis=1)
        scores = np.sort(rng.uniform(0, 1, 10))[::-1]
        windows = [
            [round(float(s), 2), round(float(e), 2), round(float(c), 4)] for (s, e), c in zip(se, scores)
        ]
        sub.append(
            {
                "qid": rec["qid"],
                "query": rec["query"],
                "vid": rec["vid"],
                "pred_relevant_windows": windows,
                "pred_saliency_scores": rng.normal(size=int(np.ceil(dur / 2))).round(4).tolist(),
            }
        )
    return sub


def peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


def _model_config(settings: BenchSettings, model: str | None) -> Any:

    overrides = [*([f"model.name={model}"] if model else []), *settings.overrides]
    return compose_config(settings.config, overrides)


def bench_model(settings: BenchSettings, model_name: str | None = None) -> dict[str, Any]:
    """Every per-model figure for one model (the config's own when `model_name` is None)."""

    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    cfg = _model_config(settings, model_name)
    device = resolve_device(settings.device if settings.device != "auto" else cfg.train.device)
    bf16 = settings.bf16 or cfg.train.bf16
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    criterion = build_criterion(cfg.model, cfg.loss).to(device)
    opt = build_optimizer(model, cfg.train)
    lv = cfg.data.max_v_l if cfg.data.max_v_l > 0 else 75
    bsz = settings.batch_size
    batch = synthetic_batch(bsz, lv, cfg.data.max_q_l, cfg.model.video_dim, cfg.model.text_dim)
    b = move_batch(batch, device)

    def step() -> None:
        with autocast(device, bf16):
            o = model(b["video_feat"], b["video_mask"], b["text_feat"], b["text_mask"], targets=b["spans"])
            loss = total_loss(criterion(o, b), criterion.weight_dict)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()

    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up
    train_flops = count_flops(step)
    train_cpu: list[float] = []
    train_wall = time_calls(step, device, settings.steps, train_cpu)  # no hooks: nothing syncs inside
    timers = _Timers(device)  # then the components, in separate steps (each hook syncs on CUDA)
    for name in ("encoder", "query_init", "decoder", "denoiser"):
        if getattr(model, name, None) is not None:
            timers.attach(name, getattr(model, name))
    if getattr(criterion, "matcher", None) is not None:
        timers.attach("matcher", criterion.matcher)
    component_steps = min(2, settings.steps)
    time_calls(step, device, component_steps)
    timers.detach()
    per_step = {k: v / component_steps for k, v in timers.total.items()}
    rss_train = peak_rss_mib()

    model.eval()
    eval_model = torch.compile(model) if settings.compile else model
    one = {k: (v[:1] if torch.is_tensor(v) else v) for k, v in b.items()}

    @torch.no_grad()
    def infer(x: dict[str, Any]) -> None:
        with autocast(device, bf16):
            eval_model(x["video_feat"], x["video_mask"], x["text_feat"], x["text_mask"])

    infer(one)
    infer(b)
    flops_1, flops_b = count_flops(lambda: infer(one)), count_flops(lambda: infer(b))
    cpu_1: list[float] = []
    cpu_b: list[float] = []
    lat1 = statistics.median(time_calls(lambda: infer(one), device, 10, cpu_1))
    lat_b = statistics.median(time_calls(lambda: infer(b), device, 3, cpu_b))
    peak = sgemm_peak(device)
    threads = torch.get_num_threads()
    step_wall, step_cpu = statistics.median(train_wall), statistics.median(train_cpu)
    result: dict[str, Any] = {
        "model": cfg.model.name,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": threads,
        "bf16": bf16,
        "compile": settings.compile,
        "batch": [bsz, lv, cfg.model.video_dim, cfg.data.max_q_l],
        "params": sum(p.numel() for p in model.parameters()),
        "train_samples_per_s": bsz / step_wall,
        "train_step_s": step_wall,
        "train_step_cpu_s": step_cpu,  # = wall time of an uncontended CPU at 1 thread
        "train_step_components_s": per_step,
        "train_step_gflop": train_flops / 1e9,
        "infer_latency_1_s": lat1,
        "infer_latency_1_cpu_s": statistics.median(cpu_1),
        "infer_latency_batch_s": lat_b,
        "infer_latency_batch_cpu_s": statistics.median(cpu_b),
        "infer_1_gflop": flops_1 / 1e9,
        "infer_batch_gflop": flops_b / 1e9,
        "sgemm_peak_gflops": peak["gflops_wall"],
        "sgemm_peak_gflops_cpu": peak["gflops_cpu"],
        "train_gflops_wall": train_flops / step_wall / 1e9,
        "train_gflops_cpu": train_flops / (step_cpu / threads) / 1e9,
        "peak_rss_train_mib": rss_train,
        "peak_rss_mib": peak_rss_mib(),
        "peak_cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }
    # fraction of the sgemm peak, each by the same clock (wall/wall, CPU time/CPU time)
    result["train_peak_fraction_wall"] = result["train_gflops_wall"] / peak["gflops_wall"]
    result["train_peak_fraction_cpu"] = result["train_gflops_cpu"] / peak["gflops_cpu"]
    if settings.long_videos:
        result["long_video_s"] = bench_long_videos(model, cfg, device)
    if settings.backends:
        result["backends"] = backend_latency(
            model, FeaturePipeline.from_data_config(cfg.data), (1, bsz), threads=threads
        )
    if settings.compile_train:
        result["compiled_step"] = bench_compiled_step(cfg, device, b, settings.steps)
    return result


def bench_compiled_step(cfg: Any, device: torch.device, batch: dict[str, Any], steps: int) -> dict[str, Any]:
    """Training step (forward + criterion + backward + AdamW) of the eager model and of `train.compile`
    (`compile_model`) from the same weights on the same batch: the first compiled step's extra time
    (compilation), the median step of each after it, and the largest relative difference of their losses
    (inductor's `fallback_random`: the same dropout draws)."""

    def run(compiled: bool) -> tuple[list[float], list[float]]:
        torch.manual_seed(0)
        model = build_model(cfg.model).to(device).train()
        if compiled:
            compile_model(model)
        criterion = build_criterion(cfg.model, cfg.loss).to(device)
        opt = build_optimizer(model, cfg.train)
        times, losses = [], []
        for i in range(steps + 1):
            torch.manual_seed(100 + i)
            t = time.perf_counter()
            out = model(
                batch["video_feat"],
                batch["video_mask"],
                batch["text_feat"],
                batch["text_mask"],
                targets=batch["spans"],
            )
            loss = total_loss(criterion(out, batch), criterion.weight_dict)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            times.append(time.perf_counter() - t)
        return times, losses

    eager_t, eager_l = run(False)
    with torch._inductor.config.patch(fallback_random=True):
        comp_t, comp_l = run(True)
    eager_step, comp_step = statistics.median(eager_t[1:]), statistics.median(comp_t[1:])
    return {
        "eager_step_s": eager_step,
        "compiled_step_s": comp_step,
        "compile_s": comp_t[0] - eager_t[0],
        "ratio": comp_step / eager_step,
        "loss_max_rel_diff": max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(eager_l, comp_l)),
        "steps": steps,
    }


def bench_long_videos(model: torch.nn.Module, cfg: Any, device: torch.device) -> dict[str, dict[str, float]]:
    """Seconds of `Predictor.predict` on a 10- and a 60-minute video of random features (2 s clips):
    all sliding windows in one batch, and one forward per window."""
    import numpy as np

    predictor = Predictor(model, cfg, {}, device)
    rng = np.random.default_rng(0)
    text = rng.normal(size=(cfg.data.max_q_l or 20, predictor.text_dim)).astype(np.float32)
    out: dict[str, dict[str, float]] = {}
    for minutes in LONG_VIDEOS_MIN:
        n_clips = int(minutes * 60 / predictor.clip_len)
        feats = rng.normal(size=(n_clips, sum(predictor.video_dims))).astype(np.float32)
        row: dict[str, float] = {}
        for key, window_batch in (("batched_s", 64), ("one_by_one_s", 1)):
            predictor.predict("q", feats, text_features=text, window_batch=window_batch)  # warm-up
            t = time.perf_counter()
            pred = predictor.predict("q", feats, text_features=text, window_batch=window_batch)
            row[key] = time.perf_counter() - t
        row["windows"] = pred["num_windows"]
        out[f"{minutes}min"] = row
    return out


def _in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`fn(*args)` in a fresh process: each model's peak RSS is its own."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def bench_onnx_against_eager(settings: BenchSettings, models: list[str]) -> dict[str, Any]:
    """The first of `models` on onnxruntime against every one of them in eager PyTorch, batch 1,
    interleaved in this process (`onnx_against_eager`); each model built as `bench_model` builds it."""
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    built = {}
    for name in models:
        torch.manual_seed(0)
        built[name] = build_model(_model_config(settings, name).model).eval()
    pipeline = FeaturePipeline.from_data_config(_model_config(settings, models[0]).data)
    return onnx_against_eager(built[models[0]], pipeline, built, threads=torch.get_num_threads())


def bench_data(out: Path, cfg: Any) -> float:
    """Samples/s of dataset + collate over synthetic features on disk (first pass, no cache)."""
    from dataclasses import replace

    import yaml

    paths = generate_synthetic(out / "data", "qvhighlights", n_train=128, n_val=8, seed=0)
    data_cfg = build_dataclass(DataConfig, yaml.safe_load(paths["config"].read_text())["data"], "data")
    data_cfg = replace(data_cfg, cache_features=False)
    ds = build_dataset(data_cfg, "train")
    t = time.perf_counter()
    for i in range(0, len(ds), 32):
        collate([ds[j] for j in range(i, min(len(ds), i + 32))])
    return len(ds) / (time.perf_counter() - t)


RATIO_KEYS = (
    "train_step_s",
    "train_step_cpu_s",
    "train_step_gflop",
    "infer_latency_1_s",
    "infer_latency_1_cpu_s",
    "infer_latency_batch_s",
    "infer_latency_batch_cpu_s",
    "peak_rss_mib",
)


def run_bench(
    out: Path, settings: BenchSettings, models: list[str] | None = None, gt_path: Path | None = None
) -> dict[str, Any]:
    """All figures: per model (each in a fresh process when several), data pipeline, evaluation."""

    out.mkdir(parents=True, exist_ok=True)
    if models and len(models) > 1:
        per_model = {m: _in_child(bench_model, settings, m) for m in models}
    else:
        single = bench_model(settings, models[0] if models else None)
        per_model = {single["model"]: single}
    first = next(iter(per_model.values()))
    ratios = {name: {k: r[k] / first[k] for k in RATIO_KEYS if first.get(k)} for name, r in per_model.items()}
    gt = load_eval_jsonl(gt_path) if gt_path else _synthetic_gt(1549)
    sub = _synthetic_submission(gt)
    eval_s = min(time_calls(lambda: evaluate(sub, gt), torch.device("cpu"), 2))
    result = {
        **first,  # the first model's figures at the top level (the single-model layout)
        "config": settings.config,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "models": per_model,
        "ratios_to_first": ratios,
        "data_samples_per_s": bench_data(out, _model_config(settings, None)),
        "eval_queries": len(gt),
        "eval_ground_truth": str(gt_path) if gt_path else "synthetic",
        "eval_s": eval_s,
    }
    if settings.backends and models and len(models) > 1:
        result["onnx_against_eager"] = _in_child(bench_onnx_against_eager, settings, list(models))
    return result


def _backend_rows(t: Any, r: dict[str, Any], names: list[str], batch: int) -> None:
    """Rows of `--backends`: eager / onnxruntime / int8 latency (process CPU time) at batch 1 and `batch`,
    their ratios to eager, and (several models) the first model's onnxruntime latency against each
    model's eager one, interleaved in one process."""
    models = r["models"]
    for b in ("1", str(batch)):
        lat = [models[n]["backends"]["latency_s"] for n in names]
        label = "1 query" if b == "1" else f"batch of {b}"
        t.add_row(
            f"{label}: eager / onnxruntime / int8 (CPU time)",
            *[
                " / ".join(f"{x[k][b][1] * 1000:.1f}" for k in ("eager", "onnxruntime", "int8")) + " ms"
                for x in lat
            ],
        )
        ratios = [models[n]["backends"]["cpu_ratio_to_eager"] for n in names]
        t.add_row(
            "  onnxruntime / eager, int8 / eager",
            *[f"{x['onnxruntime'][b]:.2f}, {x['int8'][b]:.2f}" for x in ratios],
        )
    if "onnx_against_eager" in r:
        cmp = r["onnx_against_eager"]
        t.add_row(
            f"1 query, interleaved: {names[0]} onnxruntime / this model eager",
            *[
                f"{cmp['latency_s']['onnxruntime'][1] * 1000:.1f} / {cmp['latency_s'][n][1] * 1000:.1f} ms "
                f"= {cmp['cpu_ratio'][n]:.2f}"
                for n in names
            ],
        )
    t.add_row(
        "  int8: largest |output - eager| (spans)",
        *[f"{models[n]['backends']['int8_max_abs_diff']['pred_spans']:.1e}" for n in names],
    )


def print_result(r: dict[str, Any]) -> None:
    """The figures as rich tables: one column per model, then its ratio to the first model."""
    from rich.console import Console
    from rich.table import Table

    models = r["models"]
    names = list(models)
    t = Table(
        title=f"sadetr bench ({r['device']}, {r['threads']} threads, batch {'x'.join(map(str, r['batch']))}"
        f"{', bf16' if r['bf16'] else ''}{', compiled eval model' if r['compile'] else ''})"
    )
    t.add_column("measure")
    for name in names:
        t.add_column(name, justify="right")
    if len(names) > 1:
        for name in names[1:]:
            t.add_column(f"{name} / {names[0]}", justify="right")

    def row(label: str, key: str, fmt: Callable[[Any], str], ratio: bool = True) -> None:
        cells = [fmt(models[n][key]) if models[n].get(key) is not None else "-" for n in names]
        if len(names) > 1:
            ratios = r["ratios_to_first"]
            cells += [f"{ratios[n][key]:.2f}" if ratio and key in ratios[n] else "" for n in names[1:]]
        t.add_row(label, *cells)

    def ms(v: float) -> str:
        return f"{v * 1000:.1f} ms"

    def pct(v: float) -> str:
        return f"{100 * v:.0f} %"

    row("parameters", "params", lambda v: f"{v / 1e6:.2f} M", ratio=False)
    row("training step (wall)", "train_step_s", ms)
    row("training step (process CPU time)", "train_step_cpu_s", ms)
    row("training samples/s", "train_samples_per_s", lambda v: f"{v:.1f}", ratio=False)
    row("training step GFLOP", "train_step_gflop", lambda v: f"{v:.1f}")
    row("training GFLOP/s (CPU time)", "train_gflops_cpu", lambda v: f"{v:.1f}", ratio=False)
    row("  of the sgemm peak (CPU time)", "train_peak_fraction_cpu", pct, ratio=False)
    row("  of the sgemm peak (wall)", "train_peak_fraction_wall", pct, ratio=False)
    row("sgemm peak GFLOP/s (CPU time)", "sgemm_peak_gflops_cpu", lambda v: f"{v:.1f}", ratio=False)
    row("inference, 1 query (wall)", "infer_latency_1_s", ms)
    row("inference, 1 query (CPU time)", "infer_latency_1_cpu_s", ms)
    row("inference, 1 query GFLOP", "infer_1_gflop", lambda v: f"{v:.2f}", ratio=False)
    row(f"inference, batch of {r['batch'][0]} (wall)", "infer_latency_batch_s", ms)
    row(f"inference, batch of {r['batch'][0]} (CPU time)", "infer_latency_batch_cpu_s", ms)
    row(f"inference, batch of {r['batch'][0]} GFLOP", "infer_batch_gflop", lambda v: f"{v:.1f}", ratio=False)
    row("peak RSS (training step)", "peak_rss_train_mib", lambda v: f"{v:.0f} MiB", ratio=False)
    row("peak RSS", "peak_rss_mib", lambda v: f"{v:.0f} MiB")
    if r.get("peak_cuda_mib") is not None:
        row("peak CUDA memory", "peak_cuda_mib", lambda v: f"{v:.0f} MiB", ratio=False)
    for name in names:
        for k, v in models[name].get("train_step_components_s", {}).items():
            t.add_row(f"  {name} forward {k}", *([""] * names.index(name)), f"{v * 1000:.0f} ms")
    for minutes in LONG_VIDEOS_MIN:
        key = f"{minutes}min"
        if all(key in models[n].get("long_video_s", {}) for n in names):
            lv = [models[n]["long_video_s"][key] for n in names]
            t.add_row(
                f"{minutes}-min video ({lv[0]['windows']:.0f} windows): batched / one by one",
                *[f"{x['batched_s'] * 1000:.0f} / {x['one_by_one_s'] * 1000:.0f} ms" for x in lv],
            )
    if all("backends" in models[n] for n in names):
        _backend_rows(t, r, names, r["batch"][0])
    if all("compiled_step" in models[n] for n in names):
        cs = [models[n]["compiled_step"] for n in names]
        t.add_row(
            "training step: eager / train.compile",
            *[f"{c['eager_step_s'] * 1000:.0f} / {c['compiled_step_s'] * 1000:.0f} ms" for c in cs],
        )
        t.add_row(
            "  compiled / eager (compile time)", *[f"{c['ratio']:.2f} ({c['compile_s']:.0f} s)" for c in cs]
        )
        t.add_row("  largest relative loss difference", *[f"{c['loss_max_rel_diff']:.1e}" for c in cs])
    t.add_row("data pipeline samples/s", f"{r['data_samples_per_s']:.0f}")
    kind = "synthetic GT" if r["eval_ground_truth"] == "synthetic" else "real GT"
    t.add_row(f"evaluation, {r['eval_queries']} queries ({kind}, in process)", f"{r['eval_s']:.2f} s")
    Console().print(t)
