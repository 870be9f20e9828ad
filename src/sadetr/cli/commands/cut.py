"""`sadetr cut`: export one moment of a video as its own clip (PyAV, frame-exact re-encode, no audio)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cut", help="cut [start, end) seconds of a video into a clip", description=__doc__
    )
    p.add_argument("video", type=Path, help="source video file")
    p.add_argument("--start", type=float, required=True, help="start, seconds")
    p.add_argument("--end", type=float, required=True, help="end, seconds")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output .mp4 | .m4v | .mov | .mkv | .avi, in an existing folder (written atomically)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sadetr.core.extras import require

    require("av", what="sadetr cut")
    from sadetr.corpus.clips import cut_clip

    cut = cut_clip(args.video, args.start, args.end, args.output)
    note = f"; the video ends before {args.end:g} s" if cut.end < args.end - 1e-9 else ""
    print(f"wrote {args.output} ({cut.frames} frames, {cut.start:g}-{cut.end:g} s of {args.video}{note})")
    return 0
