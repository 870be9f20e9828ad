"""`sadetr train`: train (or resume, or repeat over seeds) a configured model into a run directory.

Under `torchrun --nproc_per_node K -m sadetr train ...` the same command trains with K processes.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sadetr.core.errors import ConfigError
from sadetr.core.paths import ensure_out_dir

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sadetr.config.compose import Config


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """`--config`, `--recipe`, `--preset`, `--set` (shared by the commands that compose a config)."""
    parser.add_argument(
        "--config",
        action="append",
        required=required,
        help="built-in config name (e.g. qvhighlights_sfc) or a YAML file; repeat to "
        "merge several in order (e.g. --config synthetic_qvh --config DIR/dataset.yaml)",
    )
    add_override_arguments(parser)
    parser.add_argument(
        "--preset",
        dest="presets",
        action="append",
        default=[],
        help="a paper ablation row, e.g. table4.a (repeatable, applied in order on top of the recipe; "
        "`sadetr reproduce` lists them)",
    )


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """`--set` and `--recipe`, read back in order by `config_overrides`."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set train.lr=2e-4 (repeatable; YAML scalar values)",
    )
    parser.add_argument(
        "--recipe",
        help="the readings underneath the config: paper (the default: the paper as written) or tuned "
        "(docs/readings.md); the same as --set model.recipe=NAME",
    )


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The dotted overrides of `--recipe` then `--set`, in the order `compose_config` applies them."""
    recipe = getattr(args, "recipe", None)
    return ([f"model.recipe={recipe}"] if recipe else []) + list(args.overrides)


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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --out that already holds one (its checkpoints, logs and "
        "predictions are removed first); without it such an --out is refused",
    )
    p.add_argument("--seeds", help="comma-separated seeds: one sub-run per seed, then mean ± std (Table 12)")
    p.set_defaults(func=run)


def _compose(args: argparse.Namespace, run_dir: Path) -> Config:
    from sadetr.config.compose import compose_config

    config = args.config
    if config is None:
        saved = run_dir / "config.yaml"
        if not (args.resume and saved.is_file()):
            raise ConfigError(
                "--config is required (unless resuming a run that has config.yaml)", key="--config"
            )
        config = [saved]
    return compose_config(config, overrides=config_overrides(args), presets=args.presets)


def run(args: argparse.Namespace) -> int:
    from sadetr.engine.distributed import init_distributed, shutdown_distributed

    run_dir = Path(args.resume) if isinstance(args.resume, str) else args.out
    if run_dir is None:
        raise ConfigError("--out RUN_DIR is required", key="--out")
    ensure_out_dir(run_dir, "--resume" if isinstance(args.resume, str) else "--out")
    if args.resume and not run_dir.is_dir():
        raise ConfigError(f"no run directory {run_dir} to resume", key="--resume")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues a run, --overwrite replaces it: give one", key="--overwrite")
    cfg = _compose(args, run_dir)
    info, _ = init_distributed(cfg.train.device)
    lock = None
    try:
        lock = _guard_run_dir(run_dir, args, info)
        if args.seeds:
            from sadetr.engine.multiseed import format_summary, parse_seeds, run_seeds

            summary = run_seeds(cfg, run_dir, parse_seeds(args.seeds), resume=bool(args.resume))
            if info.is_main:
                print(format_summary(summary))
                print(f"summary: {run_dir / 'seeds_summary.json'}")
            return 0
        from sadetr.engine.trainer import train

        result = train(cfg, run_dir, resume=bool(args.resume), overwrite=args.overwrite)
        if info.is_main:
            _print_result(run_dir, result)
        return 0
    finally:
        if lock is not None:
            lock.release()
        shutdown_distributed()


def _guard_run_dir(run_dir: Path, args: argparse.Namespace, info: Any) -> Any:
    """Rank 0 locks `run_dir` and, for a new run, refuses (or with --overwrite clears) an earlier run
    there; every rank raises the same `ConfigError` if that failed. Returns rank 0's lock (else None)."""
    from sadetr.engine.distributed import broadcast_object
    from sadetr.engine.rundir import RunDirLock, check_fresh, clear_run

    lock, problem = None, None
    if info.is_main:
        try:
            lock = RunDirLock(run_dir).acquire()
            if not args.resume:
                check_fresh(run_dir, overwrite=args.overwrite)
                # a single run clears once its config is validated (Trainer); --seeds clears here
                if args.overwrite and args.seeds and (removed := clear_run(run_dir)):
                    log.warning("--overwrite: removed %s of the run in %s", ", ".join(removed), run_dir)
        except ConfigError as err:
            if lock is not None:
                lock.release()
            lock, problem = None, str(err)
    problem = broadcast_object(problem, info)
    if problem is not None:
        raise ConfigError(problem)
    return lock


def _print_result(run_dir: Path, result: dict) -> None:
    best = run_dir / "best_metrics.json"
    if best.is_file():
        from sadetr.eval import format_table

        record = json.loads(best.read_text())
        print(f"best epoch {record['epoch']}:")
        print(format_table(record["metrics"]))
    print(f"run directory: {run_dir}")
