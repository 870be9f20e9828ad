"""`sadetr index`: build, extend or shrink a corpus index (one L_vtc vector per window) of a video library.

    sadetr index --checkpoint run/best.ckpt --features feats/ --out library.idx
    sadetr index --checkpoint run/best.ckpt --videos videos/ --features feats/ \
        --clip CLIP/ --slowfast SF.pyth --out library.idx   # extract first (resumable)
    sadetr index --out library.idx --remove vid1 vid2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sadetr.core import ranges


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index",
        help="index a video library for corpus search (sadetr search)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, help="trained SA-DETR checkpoint (file or run directory)")
    p.add_argument(
        "--features",
        type=Path,
        help="feature root (<source>/<vid>.npz); extraction target with a video folder",
    )
    p.add_argument(
        "--videos",
        help="video ids to index (a text file, one id a line), or video files (a folder, a video, or a "
        "list of video paths) to extract first; default: every video of --features",
    )
    p.add_argument("--out", type=Path, required=True, help="index folder (created, or extended)")
    ranges.add_ranged(
        p,
        "--window",
        ranges.WINDOW_CLIPS,
        help="retrieval window length in clips (default 8: 16 s at 2 s clips)",
    )
    ranges.add_ranged(
        p,
        "--stride",
        ranges.STRIDE_CLIPS,
        help="clips between window starts, at most --window (default: window / 2)",
    )
    p.add_argument(
        "--kind",
        choices=["flat", "hnsw", "ivfpq"],
        help="faiss index of a new index (default flat: exact); adding to an index keeps its kind",
    )
    p.add_argument("--remove", nargs="+", metavar="VID", help="remove these videos from the index instead")
    p.add_argument("--shards", type=Path, help="also export the index as Parquet shards into this folder")
    p.add_argument("--clip", help="CLIP weights (extraction from video files)")
    p.add_argument("--slowfast", help="SlowFast weights (extraction from video files)")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] (default cpu)")
    p.set_defaults(func=run)


def _named_videos(spec: str) -> tuple[list[Path] | None, list[str]]:
    """(video files, []) when `spec` names videos (a folder, a video, a list of video paths), else
    (None, the video ids of the text file `spec`, one a line); the list file is read once."""
    from sadetr.core.errors import DataError
    from sadetr.core.paths import check_relative, read_user_text
    from sadetr.video.decode import VIDEO_SUFFIXES
    from sadetr.video.extract import list_videos

    path = Path(spec)
    if path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES:
        return list_videos(path), []
    if not path.is_file():
        raise DataError("no such video list, folder or video", path=path)
    raw = read_user_text(path, "video list").splitlines()
    lines = [x.strip() for x in raw if x.strip()]
    if lines and all(Path(x).suffix.lower() in VIDEO_SUFFIXES for x in lines if not x.startswith("#")):
        return list_videos(path), []
    ids = []
    for n, line in enumerate(
        raw, start=1
    ):  # an id becomes <features>/<source>/<id>.npz: no '..', not absolute
        if line.strip() and not line.startswith("#"):
            ids.append(check_relative(line.strip(), field="vid", path=path, line=n))
    return None, ids


def _extract(args: argparse.Namespace, files: list[Path]) -> tuple[list[str], float]:
    """Extract the checkpoint's sources into --features (skips what exists) -> (ids, video seconds)."""
    from sadetr.core.errors import ConfigError
    from sadetr.corpus.embed import CorpusModel
    from sadetr.video.decode import probe
    from sadetr.video.extract import VideoExtractor, extract_videos, resolve_device

    model, _ = CorpusModel.load(args.checkpoint)
    sources = set(model.pipeline["video_sources"])
    need = {"clip_features": args.clip, "slowfast_features": args.slowfast}
    unknown = sources - set(need)
    if unknown:
        raise ConfigError(
            f"the checkpoint's sources {sorted(unknown)} cannot be extracted from videos", "--videos"
        )
    missing = [s for s in sources if not need[s]]
    if missing:
        raise ConfigError(
            f"extracting {', '.join(missing)} needs "
            + " and ".join("--clip" if s == "clip_features" else "--slowfast" for s in missing),
            "--videos",
        )
    from sadetr.video.clip import load_clip
    from sadetr.video.slowfast import load_slowfast

    device = resolve_device(args.device)
    extractor = VideoExtractor(
        clip=load_clip(args.clip, device=device) if "clip_features" in sources else None,
        slowfast=load_slowfast(args.slowfast) if "slowfast_features" in sources else None,
        clip_len=model.clip_len,
        device=device,
    )
    summary = extract_videos(files, args.features, extractor)
    print(f"extract: {summary.done} extracted, {summary.skipped} already there, {summary.failed} failed")
    failed = set(summary.failures)
    done = [f for f in files if str(f) not in failed]
    return [f.stem for f in done], sum(probe(f).duration for f in done)


def run(args: argparse.Namespace) -> int:
    from sadetr.core.errors import ConfigError
    from sadetr.core.extras import require

    # every optional package this run needs, before any embedding is computed
    require("faiss", what="sadetr index")
    if args.shards:
        require("pyarrow", what="--shards")

    from sadetr.corpus import build_index, remove_videos
    from sadetr.corpus.shards import export_shards
    from sadetr.corpus.store import read_state

    t0 = time.perf_counter()
    if args.remove:
        remove_videos(args.out, args.remove)
    else:
        if args.checkpoint is None or args.features is None:
            raise ConfigError("building an index needs --checkpoint and --features", "index")
        videos, seconds = None, 0.0
        if args.videos:
            files, ids = _named_videos(args.videos)
            if files is not None:
                require("av", "transformers", what="extracting features from video files (--videos)")
            videos, seconds = _extract(args, files) if files is not None else (ids, 0.0)
        build_index(
            args.checkpoint,
            args.features,
            args.out,
            videos=videos,
            window=args.window,
            stride=args.stride,
            kind=args.kind,
            device=args.device,
        )
        if seconds:
            took = time.perf_counter() - t0
            print(
                f"indexed {seconds:.0f} s of video in {took:.1f} s "
                f"({seconds / took:.1f}x real time, {args.device})"
            )
    state, _ = read_state(args.out)
    m = state.manifest
    print(
        f"{args.out}: {m['num_videos']} videos, {m['num_windows']} windows (window {m['window']}, "
        f"stride {m['stride']} clips, {m['kind']}, d={m['dim']})"
    )
    if args.shards:
        paths = export_shards(args.out, args.shards)
        print(f"wrote {len(paths)} Parquet shard(s) to {args.shards}")
    return 0
