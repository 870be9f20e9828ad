"""`sadetr extract`: CLIP / SlowFast clip features of raw videos into a feature root (offline weights)."""

from __future__ import annotations

import argparse
import math
import os

from rich.console import Console


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract",
        help="extract CLIP and SlowFast clip features from videos",
        description="Writes <out>/clip_features/{vid}.npz and <out>/slowfast_features/{vid}.npz (key "
        "'features', [L, D]), one row per --clip-length seconds. Resumable; unreadable videos (and broken "
        "symlinks, folders named *.mp4) go to <out>/extract_failures.tsv. A video's name is its file stem: "
        "two inputs with the same stem are an error. Never downloads weights.",
    )
    p.add_argument(
        "--videos",
        required=True,
        help="a video file, a directory of videos, or a text file listing one video path per line",
    )
    p.add_argument("--out", required=True, help="feature root to write into")
    p.add_argument("--clip", help="CLIP: local transformers folder or OpenAI ViT-B-32.pt")
    p.add_argument("--slowfast", help="pytorchvideo SLOWFAST_8x8_R50.pyth")
    p.add_argument("--clip-length", type=float, default=2.0, help="seconds per feature clip (default 2)")
    p.add_argument("--batch-clips", type=int, default=8, help="clips per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--overwrite", action="store_true", help="recompute videos whose files exist")
    p.set_defaults(func=run)


def rank_share(videos: list, environ: dict | None = None) -> list:
    """Under torchrun (RANK / WORLD_SIZE set) this rank's share of the video list: every WORLD_SIZE-th
    video from RANK. Each video's files are written by one rank only, so the shards merge without
    coordination and a rerun skips what any rank finished."""
    env = os.environ if environ is None else environ
    rank, world = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
    return list(videos)[rank::world] if world > 1 else list(videos)


def run(args: argparse.Namespace) -> int:
    from sadetr.core.extras import require

    require("av", *(["transformers"] if args.clip else []), what="sadetr extract")
    from sadetr.core.devices import resolve_device
    from sadetr.core.errors import ConfigError
    from sadetr.core.paths import ensure_out_dir
    from sadetr.video.clip import load_clip
    from sadetr.video.extract import VideoExtractor, extract_videos, list_videos
    from sadetr.video.slowfast import load_slowfast

    if not args.clip and not args.slowfast:
        raise ConfigError("give --clip and/or --slowfast", "extract")
    if not (math.isfinite(args.clip_length) and args.clip_length > 0):
        raise ConfigError(f"must be a finite number > 0, got {args.clip_length}", "--clip-length")
    if args.batch_clips < 1:
        raise ConfigError(f"must be >= 1, got {args.batch_clips}", "--batch-clips")
    ensure_out_dir(args.out)
    # under torchrun, `cuda` and `auto` mean this rank's GPU, cuda:LOCAL_RANK
    device = resolve_device(args.device, "--device", local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    videos = rank_share(list_videos(args.videos))
    extractor = VideoExtractor(
        clip=load_clip(args.clip) if args.clip else None,
        slowfast=load_slowfast(args.slowfast) if args.slowfast else None,
        clip_len=args.clip_length,
        batch_clips=args.batch_clips,
        device=device,
    )
    summary = extract_videos(videos, args.out, extractor, overwrite=args.overwrite)
    Console(stderr=True).print(
        f"extract: {summary.done} done, {summary.skipped} already there, {summary.failed} failed "
        f"in {summary.seconds:.1f} s on {device}"
        + (f" (see {args.out}/extract_failures.tsv)" if summary.failed else "")
    )
    return 1 if summary.failed and not summary.done and not summary.skipped else 0
