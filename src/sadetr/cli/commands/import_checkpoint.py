"""`sadetr import-checkpoint`: convert a released Moment-DETR / QD-DETR checkpoint (official repositories or
lighthouse) into a sadetr checkpoint that `predict`, the Predictor and the other commands use unchanged.

The file is read without running any code from it (`torch.load(weights_only=True)`); a checkpoint whose
keys or shapes do not match the architecture is refused with the names that differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sadetr.core.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    from sadetr.inference.import_release import FORMATS, SOURCE_DIMS

    p = subparsers.add_parser(
        "import-checkpoint", help="convert a released Moment-DETR/QD-DETR checkpoint", description=__doc__
    )
    p.add_argument("src", type=Path, help="the released checkpoint (e.g. model_best.ckpt, best.ckpt)")
    p.add_argument("--out", required=True, type=Path, help="the sadetr checkpoint to write")
    p.add_argument(
        "--format",
        default="auto",
        choices=("auto", *FORMATS),
        help="release format (default: detected from the keys and the 'opt' entry)",
    )
    p.add_argument(
        "--video-sources",
        help=f"comma-separated video feature sources in input order ({', '.join(SOURCE_DIMS)}); "
        "default: read from the checkpoint's recorded feature directories",
    )
    p.add_argument("--clip-len", type=float, help="seconds per clip (default: the checkpoint's clip_length)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sadetr.inference.import_release import import_release

    sources = None
    if args.video_sources:
        sources = [s.strip() for s in args.video_sources.split(",") if s.strip()]
    if args.clip_len is not None and args.clip_len <= 0:
        raise ConfigError(f"must be > 0, got {args.clip_len}", key="--clip-len")
    summary = import_release(
        args.src,
        args.out,
        fmt_name=None if args.format == "auto" else args.format,
        video_sources=sources,
        clip_len=args.clip_len,
    )
    feats = summary["features"]
    tef = " + TEF" if feats["use_tef"] else ""
    print(
        f"imported {summary['format']} ({summary['imported_from']['repository']}): {summary['model']}, "
        f"{summary['parameters']:,} parameters"
    )
    print(
        f"features: {' + '.join(feats['video_sources'])}{tef} ({feats['video_dim']}-d video), "
        f"{feats['text_source']} ({feats['text_dim']}-d text), {feats['clip_len']:g} s clips, "
        f"max {feats['max_v_l']} clips"
    )
    print(f"wrote {args.out}")
    return 0
