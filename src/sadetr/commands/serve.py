"""`sadetr serve`: the HTTP service (FastAPI + uvicorn) over one checkpoint and, optionally, an index.

Needs the `sadetr[serve]` extra. Endpoints and limits: `sadetr.serve.app`; OpenAPI at /docs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from sadetr.errors import ConfigError
from sadetr.inference import BACKENDS


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Model, backbones, index, device and limits: shared by `serve` and `app`."""
    from sadetr.serve.limits import Limits

    d = Limits()
    p.add_argument("--checkpoint", required=True, type=Path, help="a .ckpt file or a run directory")
    p.add_argument("--index", type=Path, help="a corpus index directory (`sadetr index`) to search")
    p.add_argument("--clip", type=Path, help="CLIP weights (transformers folder or ViT-B-32.pt)")
    p.add_argument("--slowfast", type=Path, help="SlowFast weights (SLOWFAST_8x8_R50.pyth)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for the model, torch or onnxruntime (default: all cores)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="torch (default), or onnx / onnx-int8: onnxruntime on a model folder of sadetr export",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        help="requests merged into one forward pass (default 16 with an onnx backend, 1 = none with torch)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long the first request waits for others to join its batch (default %(default)s)",
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=d.max_upload_mb, help="per file (default %(default)s)"
    )
    p.add_argument(
        "--max-video-s", type=float, default=d.max_video_s, help="video duration (default %(default)s)"
    )
    p.add_argument("--max-query-chars", type=int, default=d.max_query_chars, help="(default %(default)s)")
    p.add_argument(
        "--timeout-s",
        type=float,
        default=d.timeout_s,
        help="per request, queue wait included (default %(default)s)",
    )
    p.add_argument(
        "--max-pending",
        type=int,
        default=d.max_pending,
        help="queued requests before 503 (default %(default)s)",
    )


def load_service(args: argparse.Namespace):
    """The shared model (and index) with the limits of the command line."""
    import torch

    from sadetr.serve.limits import Limits
    from sadetr.serve.service import MomentService

    for name in ("max_upload_mb", "max_video_s", "max_query_chars", "timeout_s", "max_pending"):
        if getattr(args, name) <= 0:
            raise ConfigError("must be positive", key="--" + name.replace("_", "-"))
    if args.max_batch is not None and args.max_batch < 1:
        raise ConfigError("must be >= 1 (1: no batching)", key="--max-batch")
    if args.max_wait_ms < 0:
        raise ConfigError("must be >= 0", key="--max-wait-ms")
    if args.backend != "torch":
        require(("onnxruntime",), "onnx")
    if args.index is not None:
        if not args.index.is_dir():
            raise ConfigError(f"no such index directory {args.index}", key="--index")
        require(("sadetr.corpus", "faiss"), "search")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    limits = Limits(
        args.max_upload_mb, args.max_video_s, args.max_query_chars, args.timeout_s, args.max_pending
    )
    return MomentService.load(
        args.checkpoint,
        clip=args.clip,
        slowfast=args.slowfast,
        index=args.index,
        device=args.device,
        limits=limits,
        backend=args.backend,
        threads=args.threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )


def require(modules: tuple[str, ...], extra: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"needs {', '.join(missing)}: pip install 'sadetr[{extra}]'")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="HTTP service: moments of a video, search of an index", description=__doc__
    )
    add_model_arguments(p)
    p.add_argument("--port", type=int, default=8000, help="(default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require(("fastapi", "uvicorn", "multipart"), "serve")
    import uvicorn

    from sadetr.serve.app import create_app

    service = load_service(args)
    try:
        uvicorn.run(
            create_app(service), host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5
        )
    finally:
        service.close()
    return 0
