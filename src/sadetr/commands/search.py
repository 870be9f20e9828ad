"""`sadetr search`: which videos of an indexed library show a query, and when (two-stage corpus search).

sadetr search --index library.idx --query "a man chops onions" --clip CLIP/ --top 10
sadetr search --index library.idx --query-features qid42.npz --format jsonl
sadetr search --index library.idx --query "..." --clip CLIP/ --clips-out hits/ --video-root videos/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from sadetr.inference import BACKENDS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search",
        help="search an indexed video library (sadetr index) for a text query",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--index", type=Path, required=True, help="index folder written by sadetr index")
    p.add_argument("--query", help="the text query (needs --clip)")
    p.add_argument("--query-features", type=Path, help="precomputed query token features (.npz)")
    p.add_argument("--clip", type=Path, help="CLIP weights folder (for a text --query)")
    p.add_argument("--checkpoint", type=Path, help="default: the checkpoint recorded in the index")
    p.add_argument("--top", type=int, default=10, help="moments to return (default 10)")
    p.add_argument(
        "--k-windows", type=int, help="windows localised by SA-DETR (default min(100, index size))"
    )
    p.add_argument("--alpha", type=float, help="fusion weight (default: the index's, see docs/corpus.md)")
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
    rows = [
        f"{'rank':>4}  {'video':<24} {'start_s':>8} {'end_s':>8} {'score':>10} {'cosine':>7} {'quality':>7}"
    ]
    for i, h in enumerate(hits):
        rows.append(
            f"{i + 1:>4}  {h.video:<24} {h.start:>8.1f} {h.end:>8.1f} {h.score:>10.4g} "
            f"{h.retrieval_score:>7.3f} {h.quality:>7.3f}"
        )
    return "\n".join(rows) + "\n"


def run(args: argparse.Namespace) -> int:
    from sadetr.atomic import atomic_write_text
    from sadetr.corpus import CorpusSearcher
    from sadetr.corpus.search import check_k
    from sadetr.data.features import TEXT_KEY, load_feature_file
    from sadetr.errors import ConfigError

    if (args.query is None) == (args.query_features is None):
        raise ConfigError("give exactly one of --query and --query-features", "search")
    if args.clips_out and not args.video_root:
        raise ConfigError("--clips-out needs --video-root (where the source videos are)", "search")
    searcher = CorpusSearcher.open(
        args.index, args.checkpoint, device=args.device, clip_dir=args.clip, backend=args.backend
    )
    feats = None
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
        from sadetr.corpus.clips import cut_clip, find_video

        for i, h in enumerate(hits):
            cut_clip(
                find_video(args.video_root, h.video),
                h.start,
                h.end,
                args.clips_out / f"{i + 1:03d}_{h.video}.mp4",
            )
        print(f"wrote {len(hits)} clips to {args.clips_out}", file=sys.stderr)
    return 0
