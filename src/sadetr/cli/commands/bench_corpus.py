"""`sadetr bench-corpus`: corpus-search cost and accuracy (README "Search a video library").

Latency/memory rows use random unit vectors at 1k/10k/100k windows (faiss flat / HNSW / IVF-PQ, one
thread); with --checkpoint, stage 2 (SA-DETR on K windows) is timed too; with --index, --annotations and
--text-features, two-stage search is compared with exhaustive localisation (VCMR recall, compute).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench-corpus",
        help="benchmark corpus search (latency, memory, two-stage recall)",
        description=__doc__,
    )
    p.add_argument("--sizes", default="1000,10000,100000", help="index sizes in windows (comma-separated)")
    p.add_argument("--dim", type=int, default=64, help="embedding size of the random vectors (default 64)")
    p.add_argument("--checkpoint", type=Path, help="time SA-DETR on K windows with this checkpoint")
    p.add_argument("--index", type=Path, help="index for the two-stage vs exhaustive comparison")
    p.add_argument("--annotations", type=Path, help="queries (JSON lines) of the index's videos")
    p.add_argument("--text-features", type=Path, help="feature root with the queries' token features")
    p.add_argument("--max-queries", type=int, default=0, help="use only the first N queries (0 = all)")
    p.add_argument("--k", default="10,20,50", help="K values of two-stage search (comma-separated)")
    p.add_argument("--out", type=Path, help="write all rows as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sadetr.core.extras import require

    require("faiss", what="sadetr bench-corpus")
    import torch

    from sadetr.core.jsonio import write_json
    from sadetr.corpus import CorpusSearcher
    from sadetr.corpus.bench import localise_latency, scale_rows, two_stage_vs_exhaustive
    from sadetr.corpus.evaluate import read_split

    torch.set_num_threads(1)
    ks = tuple(int(x) for x in args.k.split(","))
    out: dict = {"scale": scale_rows(tuple(int(x) for x in args.sizes.split(",")), args.dim)}
    print("| windows | kind | build s | index MiB | query ms (top-100, 1 thread) | recall vs flat |")
    print("|---|---|---|---|---|---|")
    for r in out["scale"]:
        print(
            f"| {r['windows']} | {r['kind']} | {r['build_s']:.2f} | {r['index_bytes'] / 2**20:.1f} | "
            f"{r['query_ms']:.2f} | {r['recall@100_vs_flat']:.3f} |"
        )
    if args.checkpoint:
        out["localise_s"] = {k: localise_latency(args.checkpoint, k) for k in ks}
        for k, s in out["localise_s"].items():
            print(f"stage 2: SA-DETR on {k} windows: {1000 * s:.1f} ms (1 thread)")
    if args.index:
        searcher = CorpusSearcher.open(args.index)
        gt = read_split(args.annotations)
        if args.max_queries:
            gt = gt[: args.max_queries]
        out["two_stage"] = two_stage_vs_exhaustive(searcher, gt, args.text_features, ks)
        print(
            f"\n{len(gt)} queries, {len(searcher.videos)} videos, {searcher.num_windows} windows, "
            f"alpha {searcher.alpha:g}"
        )
        print(
            "| method | K windows | SA-DETR forwards / query | compute vs exhaustive | VCMR R@1 IoU.5 "
            "| R@10 IoU.5 "
            "| VR R@10 | R@1 kept | s / query |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in out["two_stage"]:
            print(
                f"| {r['method']} | {r['k_windows']} | {r['forwards_per_query']:.1f} | "
                f"{r['compute_ratio']:.1f}x less | "
                f"{r['VCMR-R@1-IoU=0.5']:.1f} | {r['VCMR-R@10-IoU=0.5']:.1f} | {r['VR-R@10']:.1f} | "
                f"{100 * r['R@1_kept']:.0f}% | {r['s_per_query']:.3f} |"
            )
    if args.out:
        write_json(args.out, out)
    return 0
