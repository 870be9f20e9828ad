"""`sadetr bench`: speed and memory of the full SA-DETR on a QVHighlights-shaped batch, and of evaluation.

Measures: training samples/s (forward + criterion + backward + AdamW step, batch 32 x 75 clips x 2818 dims,
32 tokens), inference latency for 1 query and for a batch of 32, peak memory (process RSS; CUDA peak too
on a GPU), the data pipeline's samples/s (synthetic features on disk, dataset + collate), time per
component (encoder, query init, decoder, matcher) and the evaluation time of 1549 queries (QVHighlights
val size: the real val annotations when `--gt` is given, synthetic ground truth otherwise) against a
synthetic submission. Prints a table, writes DIR/bench.json.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="training/inference speed, memory and evaluation time", description=__doc__
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (bench.json, scratch data)")
    p.add_argument("--config", default="qvhighlights_sfc", help="model/loss config to benchmark")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed training steps (after 1 warm-up step)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--gt", type=Path, help="ground-truth JSON lines for the evaluation timing")
    p.set_defaults(func=run)


def synthetic_batch(batch: int, lv: int, lt: int, dv: int, dt: int, seed: int = 0) -> dict[str, Any]:
    """A collated batch in the contract's format with random features, 1-3 GT spans per sample."""
    import torch

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

    def __init__(self, device: Any) -> None:
        self.device = device
        self.total: defaultdict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def attach(self, name: str, module: Any) -> None:
        def pre(*_: Any) -> None:
            self._sync()
            self._start[name] = time.perf_counter()

        def post(*_: Any) -> None:
            self._sync()
            self.total[name] += time.perf_counter() - self._start.pop(name)

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def _time(fn: Callable[[], Any], device: Any, repeat: int, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of each of `repeat` calls; process CPU seconds appended to `cpu` if given."""
    import torch

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


def _peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


def run(args: argparse.Namespace) -> int:
    import torch

    from sadetr.config import compose_config
    from sadetr.engine.distributed import resolve_device
    from sadetr.engine.inference import autocast
    from sadetr.engine.io import write_json
    from sadetr.engine.schedule import build_optimizer
    from sadetr.engine.trainer import total_loss
    from sadetr.model.build import build_model
    from sadetr.model.losses import build_criterion

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = compose_config(args.config, args.overrides)
    device = resolve_device(args.device if args.device != "auto" else cfg.train.device)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    criterion = build_criterion(cfg.model, cfg.loss).to(device)
    opt = build_optimizer(model, cfg.train)
    lv = cfg.data.max_v_l if cfg.data.max_v_l > 0 else 75
    batch = synthetic_batch(args.batch_size, lv, cfg.data.max_q_l, cfg.model.video_dim, cfg.model.text_dim)
    from sadetr.engine.inference import move_batch

    b = move_batch(batch, device)
    timers = _Timers(device)
    for name in ("encoder", "query_init", "decoder", "denoiser"):
        if getattr(model, name, None) is not None:
            timers.attach(name, getattr(model, name))
    if getattr(criterion, "matcher", None) is not None:
        timers.attach("matcher", criterion.matcher)

    def step() -> None:
        with autocast(device, cfg.train.bf16):
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
    timers.total.clear()
    train_cpu: list[float] = []
    train_times = _time(step, device, args.steps, train_cpu)
    per_step = {k: v / args.steps for k, v in timers.total.items()}
    train_sps = args.batch_size / statistics.median(train_times)

    model.eval()
    one = {k: (v[:1] if torch.is_tensor(v) else v) for k, v in b.items()}

    @torch.no_grad()
    def infer(x: dict[str, Any]) -> None:
        with autocast(device, cfg.train.bf16):
            model(x["video_feat"], x["video_mask"], x["text_feat"], x["text_mask"])

    infer(one)
    lat1 = statistics.median(_time(lambda: infer(one), device, 10))
    lat32 = statistics.median(_time(lambda: infer(b), device, 3))

    data_sps = _bench_data(out, cfg)

    from sadetr.eval import evaluate
    from sadetr.eval import load_jsonl as load_eval_jsonl

    gt_path = args.gt
    gt = load_eval_jsonl(gt_path) if gt_path else _synthetic_gt(1549)
    sub = _synthetic_submission(gt)
    eval_s = min(_time(lambda: evaluate(sub, gt), torch.device("cpu"), 2))

    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "config": args.config,
        "batch": [args.batch_size, lv, cfg.model.video_dim, cfg.data.max_q_l],
        "train_samples_per_s": train_sps,
        "train_step_s": statistics.median(train_times),
        "train_step_cpu_s": statistics.median(train_cpu),  # = wall time of an uncontended CPU at 1 thread
        "train_step_components_s": per_step,
        "infer_latency_1_s": lat1,
        "infer_latency_32_s": lat32,
        "data_samples_per_s": data_sps,
        "peak_rss_mib": _peak_rss_mib(),
        "peak_cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "eval_queries": len(gt),
        "eval_ground_truth": str(gt_path) if gt_path else "synthetic",
        "eval_s": eval_s,
    }
    write_json(out / "bench.json", result)
    _print(result)
    print(f"wrote {out / 'bench.json'}")
    return 0


def _bench_data(out: Path, cfg: Any) -> float:
    """Samples/s of dataset + collate over synthetic features on disk (first pass, no cache)."""
    from dataclasses import replace

    from sadetr.config import build_dataclass
    from sadetr.data.config import DataConfig
    from sadetr.data.dataset import build_dataset, collate
    from sadetr.data.synth import generate_synthetic

    paths = generate_synthetic(out / "data", "qvhighlights", n_train=128, n_val=8, seed=0)
    import yaml

    data_cfg = build_dataclass(DataConfig, yaml.safe_load(paths["config"].read_text())["data"], "data")
    data_cfg = replace(data_cfg, cache_features=False)
    ds = build_dataset(data_cfg, "train")
    t = time.perf_counter()
    for i in range(0, len(ds), 32):
        collate([ds[j] for j in range(i, min(len(ds), i + 32))])
    return len(ds) / (time.perf_counter() - t)


def _print(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"sadetr bench ({r['device']}, {r['threads']} threads, batch {'x'.join(map(str, r['batch']))})"
    )
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("training samples/s", f"{r['train_samples_per_s']:.1f}")
    t.add_row("training step (wall)", f"{r['train_step_s'] * 1000:.0f} ms")
    t.add_row("training step (process CPU time)", f"{r['train_step_cpu_s'] * 1000:.0f} ms")
    for k, v in r["train_step_components_s"].items():
        t.add_row(f"  forward {k}", f"{v * 1000:.0f} ms")
    t.add_row("inference latency, 1 query", f"{r['infer_latency_1_s'] * 1000:.1f} ms")
    t.add_row("inference latency, batch of 32", f"{r['infer_latency_32_s'] * 1000:.0f} ms")
    t.add_row("data pipeline samples/s", f"{r['data_samples_per_s']:.0f}")
    t.add_row("peak RSS", f"{r['peak_rss_mib']:.0f} MiB")
    if r["peak_cuda_mib"] is not None:
        t.add_row("peak CUDA memory", f"{r['peak_cuda_mib']:.0f} MiB")
    kind = "synthetic GT" if r["eval_ground_truth"] == "synthetic" else "real GT"
    t.add_row(f"evaluation, {r['eval_queries']} queries ({kind})", f"{r['eval_s']:.2f} s")
    Console().print(t)
