"""`sadetr synth`: write a synthetic dataset (annotations, SF/CLIP/text features, dataset.yaml)."""

from __future__ import annotations

import argparse
import logging
import time

from sadetr.core.errors import ConfigError
from sadetr.core.paths import ensure_out_dir
from sadetr.data.synth import PRESETS, generate_synthetic

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic dataset in the real feature layout",
        description="Generate a synthetic moment-retrieval dataset: DIR/annotations/{train,val}.jsonl, "
        "DIR/features/{slowfast_features,clip_features,clip_text_features}/ and DIR/dataset.yaml.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qvhighlights", help="dataset shape")
    parser.add_argument("--n-train", type=int, default=800, metavar="N", help="training queries (800)")
    parser.add_argument("--n-val", type=int, default=200, metavar="N", help="validation queries (200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for key, value in (("--n-train", args.n_train), ("--n-val", args.n_val)):
        if value < 1:
            raise ConfigError(f"must be >= 1, got {value}", key=key)
    ensure_out_dir(args.out)
    start = time.perf_counter()
    paths = generate_synthetic(args.out, args.preset, args.n_train, args.n_val, args.seed)
    log.info(
        "wrote %s preset (%d train / %d val queries) to %s in %.1f s; config: %s",
        args.preset,
        args.n_train,
        args.n_val,
        paths["root"],
        time.perf_counter() - start,
        paths["config"],
    )
    return 0
