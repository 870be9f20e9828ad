"""`sadetr extract-text`: CLIP token features of queries (`clip_text_features/qid{qid}.npz`)."""

from __future__ import annotations

import argparse

from rich.console import Console


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract-text",
        help="extract CLIP text features of queries",
        description="Writes <out>/clip_text_features/qid{qid}.npz with 'last_hidden_state' [L_t, 512] "
        "and 'pooler_output' [512] for every line ({qid, query, ...}) of a JSON-lines file. A qid is "
        "an integer or a string of letters, digits, '_', '.', '-'; a qid given twice is an error.",
    )
    p.add_argument("--queries", required=True, help="JSON-lines file with qid and query per line")
    p.add_argument("--clip", required=True, help="CLIP: local transformers folder or OpenAI ViT-B-32.pt")
    p.add_argument("--out", required=True, help="feature root to write into")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--overwrite", action="store_true", help="recompute queries whose files exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sadetr.core.extras import require

    require("transformers", what="sadetr extract-text")
    from sadetr.core.errors import ConfigError
    from sadetr.core.paths import ensure_out_dir
    from sadetr.video.clip import load_clip
    from sadetr.video.extract import extract_texts, read_queries, resolve_device

    if args.batch_size < 1:
        raise ConfigError(f"must be >= 1, got {args.batch_size}", "--batch-size")
    ensure_out_dir(args.out)
    queries = read_queries(args.queries)
    device = resolve_device(args.device)
    clip = load_clip(args.clip, device=device)
    summary = extract_texts(queries, args.out, clip, batch_size=args.batch_size, overwrite=args.overwrite)
    Console(stderr=True).print(
        f"extract-text: {summary.done} done, {summary.skipped} already there "
        f"in {summary.seconds:.1f} s on {device}"
    )
    return 0
