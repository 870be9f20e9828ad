"""`sadetr search`: which videos of an indexed library show a query, and when (two-stage corpus search).

sadetr search --index library.idx --query "a man chops onions" --clip CLIP/ --top 10
sadetr search --index library.idx --query-features qid42.npz --format jsonl
sadetr search --index library.idx --query "..." --clip CLIP/ --clips-out hits/ --video-root videos/
sadetr search --demo runs/demo --query "the chef opens the map while talking."   # after `make demo`

Scores (docs/corpus.md "Score fusion"): log_score = alpha (s - 1) + ln q <= 0 (0: a perfect match),
the cosine s of the query and the best index window, the model's quality q in [0, 1].
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from sadetr.cli.commands._demo import add_demo_argument
from sadetr.core import ranges
from sadetr.inference import BACKENDS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search",
        help="search an indexed video library (sadetr index) for a text query",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--index", type=Path, help="index folder written by sadetr index")
    add_demo_argument(
        p,
        "search the SYNTHETIC demo of `make demo` in DIR (default runs/demo) with one of its own "
        "sentences (no --clip), instead of --index",
    )
    p.add_argument("--query", help="the text query (needs --clip, or --demo and one of its sentences)")
    p.add_argument("--query-features", type=Path, help="precomputed query token features (.npz)")
    p.add_argument("--clip", type=Path, help="CLIP weights folder (for a text --query)")
    p.add_argument("--checkpoint", type=Path, help="default: the checkpoint recorded in the index")
    ranges.add_ranged(p, "--top", ranges.TOP, default=10, help="moments to return (default 10)")
    ranges.add_ranged(
        p, "--k-windows", ranges.K_WINDOWS, help="windows localised by SA-DETR (default min(100, index size))"
    )
    ranges.add_ranged(
        p, "--alpha", ranges.ALPHA, help="fusion weight (default: the index's, see docs/corpus.md)"
    )
    p.add_argument("--format", default="table", choices=["table", "jsonl", "tvr"], help="output format")
    p.add_argument("-o", "--output", type=Path, help="write to this file (atomically) instead of stdout")
    p.add_argument("--clips-out", type=Path, help="also cut every hit into <dir>/<rank>_<video>.mp4")
    p.add_argument(
        "--video-root", type=Path, help="folder of the source videos (<vid>.<ext>) for --clips-out"
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] (default cpu)")
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="what localises the query: torch (default), or onnx / onnx-int8 with --checkpoint MODEL_FOLDER",
    )
    p.set_defaults(func=run)


def format_hits(hits: list, fmt: str, query: str) -> str:
    """The ranked hits as an aligned table, JSON lines, or a one-query TVR VCMR submission."""
    if fmt == "jsonl":
        return "".join(
            json.dumps({"rank": i + 1, **dataclasses.asdict(h)}) + "\n" for i, h in enumerate(hits)
        )
    if fmt == "tvr":
        from sadetr.corpus.evaluate import tvr_submission

        videos = list(dict.fromkeys(h.video for h in hits))
        return json.dumps(tvr_submission([{"qid": 0, "query": query}], [hits], videos)) + "\n"
    head = ("rank", "video", "start_s", "end_s", "log_score", "cosine", "quality")
    rows = ["{:>4}  {:<24} {:>8} {:>8} {:>9} {:>7} {:>7}".format(*head)]
    for i, h in enumerate(hits):
        rows.append(
            f"{i + 1:>4}  {h.video:<24} {h.start:>8.1f} {h.end:>8.1f} {h.log_score:>9.2f} "
            f"{h.retrieval_score:>7.3f} {h.quality:>7.3f}"
        )
    return "\n".join(rows) + "\n"


def run(args: argparse.Namespace) -> int:
    from sadetr.core.atomic import atomic_write_text
    from sadetr.core.errors import ConfigError
    from sadetr.core.extras import require
    from sadetr.core.query_text import check_query
    from sadetr.corpus.demo_library import DemoLibrary

    if (args.query is None) == (args.query_features is None):
        raise ConfigError("give exactly one of --query and --query-features", "search")
    if args.index is None and args.demo is None and args.checkpoint is None and args.clip is None:
        args.demo = DemoLibrary.default_if_made("--index")  # nothing at all: after `make demo`, its demo
    if (args.index is None) == (args.demo is None):
        raise ConfigError("give exactly one of --index and --demo", "search")
    if args.demo is not None and (args.checkpoint or args.clip):
        raise ConfigError("the synthetic demo brings its own checkpoint and needs no --clip", "--demo")
    if args.clips_out and not args.video_root:
        raise ConfigError("--clips-out needs --video-root (where the source videos are)", "search")
    if args.query is not None:
        args.query = check_query(args.query, max_chars=int(ranges.QUERY_CHARS.hi), field="--query")
    require("faiss", what="sadetr search")
    if args.clip is not None:
        require("transformers", what="encoding --query with --clip")
    if args.clips_out:
        require("av", what="--clips-out")
    demo = DemoLibrary.open(args.demo) if args.demo is not None else None
    index = demo.index if demo is not None else args.index
    feats = None
    if demo is not None and args.query is not None:
        feats = demo.features(args.query, field="--query")  # a sentence it does not know: refused now
        print(demo.describe(), file=sys.stderr)

    from sadetr.corpus import CorpusSearcher
    from sadetr.corpus.search import check_k
    from sadetr.data.features import TEXT_KEY, load_feature_file

    searcher = CorpusSearcher.open(
        index, args.checkpoint, device=args.device, clip_dir=args.clip, backend=args.backend
    )
    if args.query_features is not None:
        feats = load_feature_file(args.query_features, TEXT_KEY, searcher.model.text_dim)
    k = check_k(args.k_windows, searcher)
    hits = searcher.search(
        None if feats is not None else args.query,
        query_feats=feats,
        top=args.top,
        k_windows=k,
        alpha=args.alpha,
    )
    text = format_hits(hits, args.format, args.query or str(args.query_features))
    if args.output:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    if args.clips_out:
        from sadetr.core.paths import ensure_out_dir, safe_child
        from sadetr.corpus.clips import cut_clip, find_video

        ensure_out_dir(args.clips_out, "--clips-out").mkdir(parents=True, exist_ok=True)
        for i, h in enumerate(hits):
            # a video id (read from the index) becomes a path only inside --clips-out / --video-root
            out = safe_child(args.clips_out, f"{i + 1:03d}_{h.video}.mp4", field="video")
            out.parent.mkdir(parents=True, exist_ok=True)
            cut_clip(find_video(args.video_root, h.video), h.start, h.end, out)
        print(f"wrote {len(hits)} clips to {args.clips_out}", file=sys.stderr)
    return 0
