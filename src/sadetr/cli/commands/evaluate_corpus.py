"""`sadetr evaluate-corpus`: TVR-protocol corpus metrics of an index on an annotation split.

VCMR R@{1,5,10,100} at IoU {0.5, 0.7} (right video and IoU above the threshold, over all videos of the
index), SVMR (the ranking restricted to the right video) and video retrieval R@{1,5,10,100}.
`--tune-alpha` picks the fusion weight on this split (use a validation split) and `--save-alpha`
stores it in the index; `--exhaustive` localises every window (the reference of two-stage search).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sadetr.core import ranges


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate-corpus",
        help="VCMR / SVMR / VR recall of a corpus index on an annotation split",
        description=__doc__,
    )
    p.add_argument("--index", type=Path, required=True, help="index folder (its videos are the corpus)")
    p.add_argument(
        "--annotations", type=Path, required=True, help="JSON lines with qid, query, vid, relevant_windows"
    )
    p.add_argument(
        "--text-features", type=Path, required=True, help="feature root with <text_source>/qid{qid}.npz"
    )
    p.add_argument("--checkpoint", type=Path, help="default: the checkpoint recorded in the index")
    ranges.add_ranged(
        p, "--k-windows", ranges.K_WINDOWS, help="windows localised per query (default min(100, index size))"
    )
    p.add_argument("--exhaustive", action="store_true", help="localise every window (no retrieval stage)")
    p.add_argument("--no-svmr", action="store_true", help="skip SVMR (saves one localisation per query)")
    ranges.add_ranged(p, "--alpha", ranges.ALPHA, help="fusion weight (default: the index's)")
    p.add_argument("--tune-alpha", action="store_true", help="choose alpha on this split (grid search)")
    p.add_argument("--save-alpha", action="store_true", help="with --tune-alpha: store it in the index")
    p.add_argument("--out", type=Path, help="write metrics (and the alpha table) as JSON")
    p.add_argument("--submission", type=Path, help="write the rankings in TVR's submission format")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sadetr.core.extras import require

    require("faiss", what="sadetr evaluate-corpus")
    from sadetr.core.errors import ConfigError
    from sadetr.core.jsonio import write_json
    from sadetr.corpus import CorpusSearcher
    from sadetr.corpus.evaluate import (
        rankings,
        read_split,
        run_queries,
        score_rankings,
        tune_alpha,
        tvr_submission,
    )
    from sadetr.corpus.index import set_alpha
    from sadetr.corpus.search import check_k

    if args.save_alpha and not args.tune_alpha:
        raise ConfigError("--save-alpha stores the alpha --tune-alpha chooses: give both", "--save-alpha")
    searcher = CorpusSearcher.open(args.index, args.checkpoint, device=args.device)
    gt = read_split(args.annotations)
    k = check_k(args.k_windows, searcher)
    runs = run_queries(searcher, gt, args.text_features, k, svmr=not args.no_svmr, exhaustive=args.exhaustive)
    alpha = searcher.alpha if args.alpha is None else args.alpha
    table = None
    if args.tune_alpha:
        alpha, table = tune_alpha(searcher, runs)
        print(
            "alpha  mean VCMR R@{1,5,10} IoU=0.5: " + ", ".join(f"{a:g}: {v:.1f}" for a, v in table.items())
        )
        print(f"chosen alpha = {alpha:g}")
        if args.save_alpha:
            set_alpha(args.index, alpha)
    vcmr, svmr = rankings(searcher, runs, alpha)  # ranked once, for the metrics and the submission
    metrics = score_rankings(runs, vcmr, svmr)
    n_windows = searcher.num_windows if args.exhaustive else k
    print(
        f"{len(gt)} queries, corpus of {len(searcher.videos)} videos / {searcher.num_windows} windows, "
        f"{n_windows} windows localised per query, alpha {alpha:g}"
    )
    for name, value in metrics.items():
        print(f"  {name:<22} {value:6.2f}")
    if args.out:
        write_json(
            args.out, {"metrics": metrics, "alpha": alpha, "alpha_table": table, "k_windows": n_windows}
        )
    if args.submission:
        write_json(args.submission, tvr_submission(gt, vcmr, searcher.videos, svmr))
    return 0
