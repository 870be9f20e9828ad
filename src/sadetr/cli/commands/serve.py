"""`sadetr serve`: the HTTP service (FastAPI + uvicorn) over one checkpoint and, optionally, an index.

    sadetr serve --checkpoint run/best.ckpt --clip CLIP/ [--index library.idx]
    sadetr serve --demo runs/demo      # the synthetic demo of `make demo`: no weights needed

Needs the `sadetr[serve]` extra. Endpoints and limits: `sadetr.serve.app`; OpenAPI at /docs.
It listens on 127.0.0.1 (this machine only) unless --host says otherwise; it has no authentication.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from sadetr.cli.commands._demo import add_demo_argument
from sadetr.core import ranges
from sadetr.core.errors import ConfigError
from sadetr.core.extras import require
from sadetr.inference import BACKENDS

if TYPE_CHECKING:
    from sadetr.corpus.demo_library import DemoLibrary
    from sadetr.serve.service import MomentService

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Model, backbones, index, device, address and limits: shared by `serve` and `app`."""
    from sadetr.serve.limits import LIMIT_RANGES, Limits

    d = Limits()
    p.add_argument("--checkpoint", type=Path, help="a .ckpt file or a run directory")
    add_demo_argument(
        p,
        "run on the SYNTHETIC demo of `make demo` (its checkpoint, index and sentences; no weights "
        "needed) in DIR (default runs/demo), instead of --checkpoint/--index",
    )
    p.add_argument("--index", type=Path, help="a corpus index directory (`sadetr index`) to search")
    p.add_argument("--clip", type=Path, help="CLIP weights (transformers folder or ViT-B-32.pt)")
    p.add_argument("--slowfast", type=Path, help="SlowFast weights (SLOWFAST_8x8_R50.pyth)")
    p.add_argument(
        "--host",
        default=LOOPBACK,
        help="address to listen on (default 127.0.0.1: this machine only); another address, e.g. "
        "0.0.0.0, exposes the service, which has no authentication, to the network (a warning says so)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ranges.add_ranged(
        p,
        "--threads",
        ranges.THREADS,
        default=0,
        help="CPU threads for the model, torch or onnxruntime (default: all)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="torch (default), or onnx / onnx-int8: onnxruntime on a model folder of sadetr export",
    )
    ranges.add_ranged(
        p,
        "--max-batch",
        ranges.MAX_BATCH,
        help="requests merged into one forward pass (default 16 with an onnx backend, 1 = none with torch)",
    )
    ranges.add_ranged(
        p,
        "--max-wait-ms",
        ranges.MAX_WAIT_MS,
        default=5.0,
        help="how long the first request waits for others to join its batch (default %(default)s)",
    )
    helps = {
        "max_upload_mb": "per file",
        "max_video_s": "video duration",
        "max_query_chars": "query length",
        "timeout_s": "per request, queue wait included",
        "max_pending": "queued requests before 503",
    }
    for name, (rng, flag) in LIMIT_RANGES.items():
        ranges.add_ranged(p, flag, rng, default=getattr(d, name), help=f"{helps[name]} (default %(default)s)")


def check_host(host: str, command: str) -> None:
    """Refuse an address this machine cannot listen on; warn (stderr) when it is not the loopback."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as err:
        raise ConfigError(f"not an address of this machine ({err})", key="--host") from None
    addresses = {str(info[4][0]) for info in infos}
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        log.warning(
            "sadetr %s listens on %s: anyone who can reach this machine there can use it (and see what it "
            "serves); it has no authentication. Use the default --host 127.0.0.1 unless a proxy in front "
            "of it controls access.",
            command,
            host,
        )


def model_inputs(args: argparse.Namespace) -> tuple[Path, Path | None, DemoLibrary | None]:
    """(checkpoint, index, demo) of the command line: --demo DIR, or --checkpoint [--index]."""
    from sadetr.corpus.demo_library import DemoLibrary

    if args.demo is None:
        given = (args.checkpoint, args.index, args.clip, args.slowfast)
        if all(x is None for x in given):  # nothing at all: after `make demo`, its demo
            args.demo = DemoLibrary.default_if_made("--checkpoint")
        if args.demo is None:
            if args.checkpoint is None:
                raise ConfigError(
                    "give --checkpoint CKPT, or --demo to run on the synthetic demo (after `make demo`)",
                    key="--checkpoint",
                )
            return args.checkpoint, args.index, None
    clash = [f for f, v in (("--checkpoint", args.checkpoint), ("--index", args.index)) if v is not None]
    clash += [f for f, v in (("--clip", args.clip), ("--slowfast", args.slowfast)) if v is not None]
    if clash:
        raise ConfigError(
            f"the synthetic demo brings its own checkpoint and index and needs no backbones (its features "
            f"are generated, not extracted): drop {' and '.join(clash)}",
            key="--demo",
        )
    demo = DemoLibrary.open(args.demo)
    return demo.checkpoint, demo.index, demo


def load_service(args: argparse.Namespace, command: str) -> MomentService:
    """The shared model (and index) with the limits of the command line; every check that can fail
    (packages, paths, address, backbones) runs before the model is loaded or the port is opened."""
    import torch

    from sadetr.serve.limits import Limits
    from sadetr.serve.service import MomentService

    checkpoint, index, demo = model_inputs(args)
    check_host(args.host, command)
    if index is not None:
        if not index.is_dir():
            raise ConfigError(f"no such index directory {index}", key="--index")
        require("faiss", what="searching an index (--index)")
    if args.clip is not None or args.slowfast is not None:
        require("av", "transformers", what="reading videos and sentences (--clip/--slowfast)")
    if args.backend != "torch":
        require("onnxruntime", what=f"--backend {args.backend}")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    limits = Limits(
        args.max_upload_mb, args.max_video_s, args.max_query_chars, args.timeout_s, args.max_pending
    )
    service = MomentService.load(
        checkpoint,
        clip=args.clip,
        slowfast=args.slowfast,
        index=index,
        device=args.device,
        limits=limits,
        demo=demo,
        backend=args.backend,
        threads=args.threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    if demo is not None:
        log.info("%s", demo.describe())
    log.info("%s", capabilities(service))
    return service


def capabilities(service: MomentService) -> str:
    """One line for the log at start: what requests this server can answer."""
    video = "videos" if service.accepts_video else "video features (no --clip/--slowfast: no videos)"
    if service.accepts_text:
        text = "any sentence"
    elif service.demo is not None:
        text = f"the {len(service.demo.queries)} sentences of the synthetic demo, or query token features"
    else:
        text = "query token features only (no --clip: no sentences)"
    index = "no index" if service.searcher is None else f"an index of {len(service.searcher.videos)} videos"
    return f"answers with {video}; queries: {text}; {index}"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="HTTP service: moments of a video, search of an index",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(p)
    ranges.add_ranged(p, "--port", ranges.PORT, default=8000, help="(default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require("fastapi", "uvicorn", "multipart", what="sadetr serve")
    import uvicorn

    from sadetr.serve.app import create_app

    service = load_service(args, "serve")
    try:
        uvicorn.run(
            create_app(service), host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5
        )
    finally:
        service.close()
    return 0
