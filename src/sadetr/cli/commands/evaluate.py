"""`sadetr evaluate`: score a prediction file against ground truth (official QVHighlights metrics)."""

from __future__ import annotations

import argparse
import sys
import time

from sadetr.core.paths import ensure_out_file
from sadetr.eval import evaluate, format_table, load_jsonl, write_json_atomic


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a submission (JSON lines) against ground truth",
        description="Moment retrieval (R1, mIoU, mAP by length bucket) and highlight detection "
        "(HL-mAP, HL-Hit1) metrics, identical to the official QVHighlights evaluation.",
    )
    parser.add_argument(
        "--submission", required=True, metavar="PRED.jsonl", help="predictions, one query a line"
    )
    parser.add_argument("--gt", required=True, metavar="GT.jsonl", help="ground-truth annotations")
    parser.add_argument("--out", metavar="METRICS.json", help="write the full metrics JSON here (atomically)")
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="evaluate only the qids present in both files (reports how many were left out)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out:
        ensure_out_file(args.out)
    submission = load_jsonl(args.submission)
    ground_truth = load_jsonl(args.gt)
    start = time.perf_counter()
    metrics = evaluate(submission, ground_truth, allow_partial=args.allow_partial)
    elapsed = time.perf_counter() - start
    print(format_table(metrics), end="")
    meta = metrics["meta"]
    if meta["num_left_out"]:
        print(
            f"left out {meta['num_left_out']} qids ({meta['num_missing']} without prediction, "
            f"{meta['num_extra']} not in the ground truth); evaluated {meta['num_queries']}",
            file=sys.stderr,
        )
    print(f"evaluated {meta['num_queries']} queries in {elapsed:.2f} s", file=sys.stderr)
    if args.out:
        write_json_atomic(args.out, metrics)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
