"""`sadetr train`: train (or resume, or repeat over seeds) a configured model into a run directory.

Under `torchrun --nproc_per_node K -m sadetr train ...` the same command trains with K processes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from sadetr.errors import ConfigError

if TYPE_CHECKING:
    from sadetr.config import Config


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """`--config`, `--set`, `--preset` (shared by the commands that compose a config)."""
    parser.add_argument(
        "--config",
        action="append",
        required=required,
        help="built-in config name (e.g. qvhighlights_sfc) or a YAML file; repeat to "
        "merge several in order (e.g. --config synthetic_qvh --config DIR/dataset.yaml)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set train.lr=2e-4 (repeatable; YAML scalar values)",
    )
    parser.add_argument("--preset", help="a named paper setting from sadetr.model.presets, e.g. table4.a")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model (single process, or distributed under torchrun)", description=__doc__
    )
    add_config_arguments(p, required=False)
    p.add_argument("--out", type=Path, help="run directory (checkpoints, logs, predictions)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue the run in --out (or RUN_DIR) from its last checkpoint",
    )
    p.add_argument("--seeds", help="comma-separated seeds: one sub-run per seed, then mean ± std (Table 12)")
    p.set_defaults(func=run)


def _compose(args: argparse.Namespace, run_dir: Path) -> Config:
    from sadetr.config import compose_config

    config = args.config
    if config is None:
        saved = run_dir / "config.yaml"
        if not (args.resume and saved.is_file()):
            raise ConfigError(
                "--config is required (unless resuming a run that has config.yaml)", key="--config"
            )
        config = [saved]
    return compose_config(config, overrides=args.overrides, preset=args.preset)


def run(args: argparse.Namespace) -> int:
    from sadetr.engine.distributed import init_distributed, shutdown_distributed

    run_dir = Path(args.resume) if isinstance(args.resume, str) else args.out
    if run_dir is None:
        raise ConfigError("--out RUN_DIR is required", key="--out")
    if args.resume and not run_dir.is_dir():
        raise ConfigError(f"no run directory {run_dir} to resume", key="--resume")
    cfg = _compose(args, run_dir)
    info, _ = init_distributed(cfg.train.device)
    try:
        if args.seeds:
            from sadetr.engine.seeds import format_summary, parse_seeds, run_seeds

            summary = run_seeds(cfg, run_dir, parse_seeds(args.seeds), resume=bool(args.resume))
            if info.is_main:
                print(format_summary(summary))
                print(f"summary: {run_dir / 'seeds_summary.json'}")
            return 0
        from sadetr.engine.trainer import train

        result = train(cfg, run_dir, resume=bool(args.resume))
        if info.is_main:
            _print_result(run_dir, result)
        return 0
    finally:
        shutdown_distributed()


def _print_result(run_dir: Path, result: dict) -> None:
    best = run_dir / "best_metrics.json"
    if best.is_file():
        from sadetr.eval import format_table

        record = json.loads(best.read_text())
        print(f"best epoch {record['epoch']}:")
        print(format_table(record["metrics"]))
    print(f"run directory: {run_dir}")
