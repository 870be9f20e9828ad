"""`sadetr app`: the browser app (Gradio) on one checkpoint: moments of a video; a library with --index.

Needs the `sadetr[app]` extra. Runs offline: analytics off, system fonts, no share link, no hub.
`--videos DIR` offers the videos of DIR to choose from (and plays the hits of an index whose video
ids are their file names).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from sadetr.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    from sadetr.commands.serve import add_model_arguments

    p = subparsers.add_parser(
        "app", help="browser app: moments of a video, search of an index", description=__doc__
    )
    add_model_arguments(p)
    p.add_argument("--port", type=int, default=7860, help="(default %(default)s)")
    p.add_argument("--videos", type=Path, help="a folder of videos to choose from (and to play hits from)")
    p.add_argument("--video", type=Path, action="append", default=[], help="a video to choose (repeatable)")
    p.add_argument("--top-k", type=int, default=10, help="moments / hits shown (default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # before gradio is imported: no usage analytics, no hub calls
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sadetr.commands.serve import load_service, require

    require(("gradio",), "app")
    if args.videos is not None and not args.videos.is_dir():
        raise ConfigError(f"no such folder {args.videos}", key="--videos")
    for v in args.video:
        if not v.is_file():
            raise ConfigError(f"no such file {v}", key="--video")
    from sadetr.webapp.ui import launch

    service = load_service(args)
    try:
        with tempfile.TemporaryDirectory(prefix="sadetr-app-") as cache:
            launch(
                service,
                videos=args.video,
                video_dir=args.videos,
                cache_dir=Path(cache),
                host=args.host,
                port=args.port,
                top_k=args.top_k,
            )
    finally:
        service.close()
    return 0
