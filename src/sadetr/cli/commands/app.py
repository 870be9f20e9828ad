"""`sadetr app`: the browser app (Gradio) on one checkpoint: moments of a video; a library with --index.

    sadetr app --checkpoint run/best.ckpt --clip CLIP/ [--slowfast SF.pyth] [--index library.idx]
    sadetr app --demo runs/demo     # the synthetic demo of `make demo`: no weights needed

Needs the `sadetr[app]` extra. Runs offline: analytics off, system fonts, no share link, no hub.
`--videos DIR` offers the videos of DIR to choose from (and plays the hits of an index whose video
ids are their file names); the web server hands out those exact files and nothing else of DIR.
It listens on 127.0.0.1 (this machine only) unless --host says otherwise; it has no authentication.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

from sadetr.core import ranges
from sadetr.core.errors import ConfigError
from sadetr.core.extras import require

TEMP_PREFIX = "sadetr-app-"  # <tmp>/sadetr-app-<pid>-*/: uploads (Gradio's cache) and transcoded videos


def register(subparsers: argparse._SubParsersAction) -> None:
    from sadetr.cli.commands.serve import add_model_arguments

    p = subparsers.add_parser(
        "app",
        help="browser app: moments of a video, search of an index",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(p)
    ranges.add_ranged(p, "--port", ranges.PORT, default=7860, help="(default %(default)s)")
    p.add_argument("--videos", type=Path, help="a folder of videos to choose from (and to play hits from)")
    p.add_argument("--video", type=Path, action="append", default=[], help="a video to choose (repeatable)")
    ranges.add_ranged(p, "--top-k", ranges.TOP, default=10, help="moments / hits shown (default 10)")
    p.set_defaults(func=run)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the app as Ctrl-C does: its temp folder is removed


def run(args: argparse.Namespace) -> int:
    from sadetr.cli.commands.serve import load_service
    from sadetr.serve.tempdirs import ProcessTempDir
    from sadetr.webapp.media import allowed_videos
    from sadetr.webapp.plan import AppPlan

    require("gradio", what="sadetr app")
    require("av", what="sadetr app (it plays videos)")
    if args.videos is not None and not args.videos.is_dir():
        raise ConfigError(f"no such folder {args.videos}", key="--videos")
    videos = allowed_videos(args.videos, args.video)
    service = load_service(args, "app")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        AppPlan(service).check_usable()  # before Gradio is imported
        with ProcessTempDir(TEMP_PREFIX) as tmp:
            # before gradio is imported: no usage analytics, no hub calls, uploads in this process's folder
            os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ["GRADIO_TEMP_DIR"] = str(tmp / "uploads")
            from sadetr.webapp.ui import launch

            launch(
                service,
                videos=videos,
                cache_dir=tmp / "videos",
                host=args.host,
                port=args.port,
                top_k=args.top_k,
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
        service.close()
    return 0
