"""`sadetr predict --video V.mp4 --query "..."`: moments of one raw video (used by `commands/predict.py`).

Not a command of its own (the leading underscore hides it from discovery): `add_arguments` adds the
video options to the `predict` parser and `run` handles a call that has `--video`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("raw video (instead of a feature split)")
    g.add_argument("--video", type=Path, help="a video file: features are extracted with --clip/--slowfast")
    g.add_argument("--query", help="the text query (with --video)")
    g.add_argument("--clip", help="CLIP weights: local transformers folder or OpenAI ViT-B-32.pt")
    g.add_argument("--slowfast", help="SlowFast weights: pytorchvideo SLOWFAST_8x8_R50.pyth")
    g.add_argument("--top-k", type=int, default=5, help="moments to print / draw (default 5)")
    g.add_argument(
        "--overlap",
        type=float,
        default=0.5,
        help="overlap of the sliding windows on videos longer than max_v_l clips (default 0.5)",
    )
    g.add_argument(
        "--gt",
        type=float,
        nargs=2,
        action="append",
        metavar=("START", "END"),
        help="a ground-truth window in seconds to draw (repeatable)",
    )
    g.add_argument("--plot", type=Path, help="write a PNG: saliency over time and the top moments")
    g.add_argument("--html", type=Path, help="write a self-contained HTML page with thumbnails")


def _print_table(pred: dict, top_k: int, video: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(t: float) -> str:
        m, s = divmod(t, 60)
        return f"{int(m)}:{s:05.2f}"

    table = Table(title=f"{pred['query']!r} in {video.name} ({fmt(pred['duration'])})")
    for col in ("#", "start", "end", "length", "score"):
        table.add_column(col, justify="right")
    for rank, (s, e, score) in enumerate(pred["pred_relevant_windows"][:top_k], start=1):
        table.add_row(str(rank), fmt(s), fmt(e), f"{e - s:.1f} s", f"{score:.4f}")
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    from sadetr.core.extras import require

    require("av", *(["transformers"] if args.clip else []), what="sadetr predict --video")
    from sadetr.core.errors import ConfigError
    from sadetr.core.jsonio import write_jsonl
    from sadetr.inference.predictor import Predictor
    from sadetr.inference.viz import write_html, write_plot

    if args.query is None:
        raise ConfigError("--query is required with --video", key="--query")
    if not args.query.strip():
        raise ConfigError(f"must be a non-empty text, got {args.query!r}", key="--query")
    if args.top_k < 1:
        raise ConfigError(f"must be >= 1, got {args.top_k}", key="--top-k")
    if not 0 <= args.overlap < 1:
        raise ConfigError(f"must be in [0, 1), got {args.overlap}", key="--overlap")
    if args.feat_root:
        raise ConfigError("--feat-root is for a feature split, not --video", key="--feat-root")
    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        device=args.device,
        clip=args.clip,
        slowfast=args.slowfast,
        backend=args.backend,
        overrides=args.overrides,
    )
    pred = predictor.predict(args.query, args.video, overlap=args.overlap)
    pred["vid"] = args.video.stem
    _print_table(pred, args.top_k, args.video)
    if args.plot:
        write_plot(args.plot, pred, predictor.clip_len, args.gt, args.top_k)
        print(f"wrote {args.plot}")
    if args.html:
        write_html(args.html, pred, predictor.clip_len, args.video, args.gt, args.top_k)
        print(f"wrote {args.html}")
    if getattr(args, "out", None):
        write_jsonl(args.out, [pred])
        print(f"wrote {args.out}")
    return 0
