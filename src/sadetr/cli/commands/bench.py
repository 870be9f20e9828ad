"""`sadetr bench`: speed, work (FLOPs against the measured sgemm peak) and memory of SA-DETR and the
baselines on a QVHighlights-shaped batch, long-video latency, the data pipeline and evaluation.

Measures per model (`--models sa_detr,qd_detr,moment_detr` side by side, each in a fresh process, with
ratios to the first): training step (forward + criterion + backward + AdamW step, batch 32 x 75 clips x
2818 dims, 32 tokens), inference latency for 1 query and for the batch, FLOPs of each, the achieved
GFLOP/s as a fraction of this machine's sgemm peak at the same thread count, peak memory, time per
component, and a 10- and a 60-minute video (sliding windows in one batch vs one by one). Then the data
pipeline's samples/s and the in-process evaluation time of 1549 queries (the real val annotations with
`--gt`, synthetic otherwise). With `--backends`: eager vs onnxruntime vs int8 latency of each model at batch
1 and the batch size; with `--compile-train`: eager vs `train.compile` training step (docs/deploy.md).
Prints a table, writes DIR/bench.json. The work is in `sadetr.bench.speed`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

MODEL_NAMES = ("sa_detr", "qd_detr", "moment_detr")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="training/inference speed, memory and evaluation time", description=__doc__
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (bench.json, scratch data)")
    p.add_argument("--config", default="qvhighlights_sfc", help="model/loss config to benchmark")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--models", default="", help="comma-separated models to compare (e.g. sa_detr,qd_detr,moment_detr)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed training steps (after 1 warm-up step)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA, or a CPU with native bf16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the eval model for inference")
    p.add_argument("--no-long-videos", action="store_true", help="skip the 10/60-minute video latency")
    p.add_argument(
        "--backends",
        action="store_true",
        help="eager vs onnxruntime vs int8 latency at batch 1 and --batch-size (needs sadetr[onnx])",
    )
    p.add_argument(
        "--compile-train",
        action="store_true",
        help="eager vs train.compile training step: compile time, step time, losses (minutes on a CPU)",
    )
    p.add_argument("--gt", type=Path, help="ground-truth JSON lines for the evaluation timing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sadetr.bench.speed import BenchSettings, print_result, run_bench
    from sadetr.core.errors import ConfigError
    from sadetr.core.jsonio import write_json

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODEL_NAMES:
            raise ConfigError(f"unknown model {m!r}; valid: {', '.join(MODEL_NAMES)}", key="--models")
    if len(set(models)) != len(models):
        raise ConfigError("a model is listed twice", key="--models")
    settings = BenchSettings(
        config=args.config,
        overrides=tuple(args.overrides),
        batch_size=args.batch_size,
        steps=args.steps,
        device=args.device,
        threads=args.threads,
        bf16=args.bf16,
        compile=args.compile,
        long_videos=not args.no_long_videos,
        backends=args.backends,
        compile_train=args.compile_train,
    )
    result = run_bench(args.out, settings, models or None, args.gt)
    write_json(args.out / "bench.json", result)
    print_result(result)
    print(f"wrote {args.out / 'bench.json'}")
    return 0
