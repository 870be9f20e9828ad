"""`sadetr compare`: train several models under identical data, budget and evaluation, then tabulate.

Each entry of `--models` is a model name (sa_detr, qd_detr, moment_detr), a recipe (paper, tuned) or a
named preset (e.g. `table11.gaussian_mask`); `--variant NAME=BASE,KEY=VALUE,...` adds an entry NAME: the
model, recipe or preset BASE with its own overrides on top of the shared ones (one reading against the
defaults, in one table).
Every entry gets the same composed config (`--config`, `--set`), the same `--epochs` and `--seeds`, and
the engine's training loop and evaluation. Writes into `--out`:
`<entry>/` (one run directory, or `seed<k>/` sub-runs), `compare.json` (best metrics per entry: per
seed and mean ± std; per-epoch curves), `compare.md` (the table), `compare_epochs.md` (convergence:
MR-mAP, R1@0.5, R1@0.7 per evaluated epoch, mean ± std over the seeds, and the first epoch at which each
entry's mean mAP reaches the `--reference` entry's final mean mAP) and `compare_curves.png` (validation
mAP per epoch per entry, the paper's Figure 5; mean ± std band with several seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sadetr.cli.commands.train import add_config_arguments, config_overrides
from sadetr.core.atomic import atomic_path
from sadetr.core.errors import ConfigError

MODEL_NAMES = ("sa_detr", "qd_detr", "moment_detr")
# Columns of the table, in this order, when the evaluation reports them (QVHighlights, then R1/mIoU sets).
TABLE_KEYS = (
    "MR-full-R1@0.5",
    "MR-full-R1@0.7",
    "MR-full-mAP",
    "MR-full-mAP@0.5",
    "MR-full-mAP@0.75",
    "MR-full-R1@0.3",
    "MR-full-mIoU",
    "HL-min-VeryGood-mAP",
    "HL-min-VeryGood-Hit1",
)
CURVE_KEY = "MR-full-mAP"
# Numbers of an evaluation record that are not metrics.
CPU_KEY = "train_cpu_s"  # process CPU seconds of training up to an evaluation (the trainer logs it)
NOT_METRICS = ("global_step", CPU_KEY)
# mAP levels of the convergence table: the first epoch and the training CPU-seconds at which each is reached.
MAP_LEVELS = (10.0, 20.0, 30.0, 40.0, 50.0)
# Metrics of the convergence table (compare_epochs.md), per evaluated epoch.
EPOCH_KEYS = ("MR-full-mAP", "MR-full-R1@0.5", "MR-full-R1@0.7")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train several models identically and compare them (table + mAP curves)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models",
        default="sa_detr,qd_detr,moment_detr",
        help="comma-separated model names or presets (default: sa_detr,qd_detr,moment_detr; "
        "'' with --variant: the variants only)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=BASE,KEY=VALUE,...",
        help="an extra entry NAME: model or preset BASE plus its own dotted overrides, e.g. "
        "gate=sa_detr,model.gate_scale=true (repeatable)",
    )
    add_config_arguments(p, required=True)
    p.add_argument("--epochs", type=int, help="training epochs for every model (default: the config's)")
    p.add_argument("--seeds", help="comma-separated seeds: every model is trained once per seed")
    p.add_argument("--resume", action="store_true", help="continue runs already in --out from last.ckpt")
    p.add_argument(
        "--report",
        action="store_true",
        help="train nothing: tabulate the runs already in --out as they stand (finished or not), e.g. "
        "after running the entries as separate processes",
    )
    p.add_argument(
        "--reference",
        default="qd_detr",
        help="entry whose final mean mAP the convergence table measures the others against (qd_detr)",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.set_defaults(func=run)


def check_base(name: str, key: str) -> None:
    """`name` must be a model name, a recipe (`sadetr.config.recipes`) or a preset
    (`sadetr.config.presets`)."""
    from sadetr.config.presets import list_presets
    from sadetr.config.recipes import RECIPES

    if name not in MODEL_NAMES and name not in RECIPES and name not in set(list_presets()):
        raise ConfigError(
            f"{name!r} is neither a model ({', '.join(MODEL_NAMES)}), a recipe ({', '.join(RECIPES)}) "
            "nor a preset (sadetr.config.presets)",
            key=key,
        )


def parse_models(text: str) -> list[str]:
    """`"sa_detr,qd_detr"` -> names; each must be a model name, a recipe or a preset, no duplicates."""
    entries = [m.strip() for m in text.split(",") if m.strip()]
    if not entries or len(set(entries)) != len(entries):
        raise ConfigError(f"expected distinct comma-separated names, got {text!r}", key="--models")
    for entry in entries:
        check_base(entry, "--models")
    return entries


def parse_variant(text: str) -> tuple[str, str, list[str]]:
    """`"gate=sa_detr,model.gate_scale=true"` -> ("gate", "sa_detr", ["model.gate_scale=true"])."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    if not sep or not name or not parts:
        raise ConfigError(f"expected NAME=BASE,KEY=VALUE,..., got {text!r}", key="--variant")
    if any(c in name for c in "/\\") or name in (".", "..") or name.startswith("."):
        raise ConfigError(f"{name!r} cannot name a run folder", key="--variant")
    base, overrides = parts[0], parts[1:]
    check_base(base, "--variant")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"{name}: expected KEY=VALUE overrides, got {bad[0]!r}", key="--variant")
    return name, base, overrides


def entries_of(args: argparse.Namespace) -> dict[str, tuple[str, list[str]]]:
    """{entry: (model or preset, the entry's own overrides)} of `--models` then `--variant`, in order."""
    models = parse_models(args.models) if args.models.strip() or not args.variant else []  # `--models ""`
    entries: dict[str, tuple[str, list[str]]] = {m: (m, []) for m in models}
    for text in args.variant:
        name, base, overrides = parse_variant(text)
        if name in entries:
            raise ConfigError(f"{name!r} names two entries", key="--variant")
        entries[name] = (base, overrides)
    return entries


def entry_config(args: argparse.Namespace, entry: str, own: list[str] | None = None) -> Any:
    """The config of one entry: the shared config, then the model name or preset, then the user's
    `--set` overrides, then the entry's `own` overrides (a `--variant`), then `--epochs` (identical for
    every entry)."""
    from sadetr.config.compose import compose_config
    from sadetr.config.recipes import RECIPES

    overrides = config_overrides(args) + list(own or [])
    presets = list(args.presets)
    if entry in MODEL_NAMES:
        overrides.insert(0, f"model.name={entry}")
    elif entry in RECIPES:
        overrides.insert(0, f"model.recipe={entry}")
    else:
        presets.append(entry)
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"must be >= 1, got {args.epochs}", key="--epochs")
        overrides.append(f"train.epochs={args.epochs}")
    return compose_config(args.config, overrides=overrides, presets=presets)


def eval_records(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluation records of `run_dir/metrics.jsonl`, in order (unreadable lines are left out)."""
    path = run_dir / "metrics.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("kind") == "eval":
                records.append(rec)
    return records


def eval_curves(records: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """Per key: (epoch, value of the key) of every evaluation record that has it."""
    return {key: [(int(rec["epoch"]), float(rec[key])) for rec in records if key in rec] for key in keys}


def best_evaluation(records: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    """The evaluation record with the highest `key` (its numbers), or None if none has it."""
    scored = [rec for rec in records if key in rec]
    if not scored:
        return None
    best = max(scored, key=lambda rec: rec[key])  # the first of equal values, as the trainer keeps it
    return {k: v for k, v in best.items() if isinstance(v, (int, float)) and k not in NOT_METRICS}


def summarize_entry(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, std (ddof=1; 0 for one seed), n per metric over the seeds' best metrics."""
    from sadetr.engine.multiseed import summarize

    return summarize(per_seed)


def format_table(results: dict[str, dict[str, Any]], keys: list[str]) -> str:
    """Markdown table: one row per entry, `mean ± std` per metric when several seeds, else the value."""
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for entry, res in results.items():
        cells = []
        for key in keys:
            stat = res["summary"].get(key)
            if stat is None:
                cells.append("–")
            elif stat["n"] > 1:
                cells.append(f"{stat['mean']:.2f} ± {stat['std']:.2f}")
            else:
                cells.append(f"{stat['mean']:.2f}")
        lines.append(f"| {entry} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_std_by_epoch(runs: list[list[tuple[int, float]]]) -> dict[int, tuple[float, float, int]]:
    """Per epoch: (mean, std (ddof=1; 0 for one value), n) over the seeds' curves [(epoch, value)]."""
    import numpy as np

    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for epoch, value in run:
            by_epoch.setdefault(int(epoch), []).append(float(value))
    return {
        e: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
        for e, v in sorted(by_epoch.items())
    }


def first_epoch_reaching(curve: dict[int, tuple[float, float, int]], target: float) -> int | None:
    """The first epoch whose mean value is >= target, or None."""
    return next((e for e, (mean, _, _) in sorted(curve.items()) if mean >= target), None)


def format_epochs(curves: dict[str, dict[str, list[list[tuple[int, float]]]]], reference: str) -> str:
    """Markdown convergence report: per metric of `EPOCH_KEYS`, a table epoch x entry of `mean ± std`
    over the seeds; then each entry's first epoch reaching `reference`'s final mean MR-full-mAP.

    curves: {entry: {metric: [per-seed [(epoch, value)]]}}."""
    entries = list(curves)
    parts = []
    for key in EPOCH_KEYS:
        stats = {entry: mean_std_by_epoch(curves[entry].get(key, [])) for entry in entries}
        epochs = sorted({e for st in stats.values() for e in st})
        if not epochs:
            continue
        lines = [
            f"### {key}",
            "",
            "| epoch | " + " | ".join(entries) + " |",
            "|---" * (len(entries) + 1) + "|",
        ]
        for epoch in epochs:
            cells = []
            for entry in entries:
                stat = stats[entry].get(epoch)
                cells.append("–" if stat is None else f"{stat[0]:.2f} ± {stat[1]:.2f}")
            lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    ref = mean_std_by_epoch(curves.get(reference, {}).get(CURVE_KEY, []))
    if ref:
        last = max(ref)
        target = ref[last][0]
        lines = [
            f"### first epoch reaching {reference}'s final {CURVE_KEY} ({target:.2f} at epoch {last})",
            "",
            "| entry | epoch |",
            "|---|---|",
        ]
        for entry in entries:
            reached = first_epoch_reaching(mean_std_by_epoch(curves[entry].get(CURVE_KEY, [])), target)
            lines.append(f"| {entry} | {'not reached' if reached is None else reached} |")
        parts.append("\n".join(lines))
    levels = format_levels(curves, [*MAP_LEVELS, *([ref[max(ref)][0]] if ref else [])])
    if levels:
        parts.append(levels)
    return "\n\n".join(parts)


def format_levels(curves: dict[str, dict[str, list[list[tuple[int, float]]]]], levels: list[float]) -> str:
    """Markdown table: per entry and mean-mAP level, the first epoch whose mean MR-full-mAP reaches it and
    the mean training CPU-seconds at that epoch (`epoch / CPU s`); '' when no entry logged CPU time."""
    cpu = {entry: mean_std_by_epoch(c.get(CPU_KEY, [])) for entry, c in curves.items()}
    if not any(cpu.values()):
        return ""
    lines = [
        f"### first epoch / training CPU-seconds at which the mean {CURVE_KEY} reaches each level",
        "",
        "| entry | " + " | ".join(f"{level:.1f}" for level in levels) + " |",
        "|---" * (len(levels) + 1) + "|",
    ]
    for entry, c in curves.items():
        curve = mean_std_by_epoch(c.get(CURVE_KEY, []))
        cells = []
        for level in levels:
            epoch = first_epoch_reaching(curve, level)
            seconds = cpu[entry].get(epoch) if epoch is not None else None
            spent = "–" if seconds is None else f"{seconds[0]:.0f}"
            cells.append("–" if epoch is None else f"{epoch} / {spent}")
        lines.append(f"| {entry} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(curves: dict[str, list[list[tuple[int, float]]]], key: str, path: Path) -> None:
    """Validation `key` per epoch per entry (mean over seeds, ± std band), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for entry, runs in curves.items():
        epochs = sorted({e for run in runs for e, _ in run})
        if not epochs:
            continue
        by_epoch = [[v for run in runs for e, v in run if e == ep] for ep in epochs]
        mean = np.array([np.mean(v) for v in by_epoch])
        std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in by_epoch])
        (line,) = ax.plot(epochs, mean, marker="o", ms=3, label=entry)
        if any(len(v) > 1 for v in by_epoch):
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"val {key}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def compare(args: argparse.Namespace, configs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Train every entry (every seed) and return {entry: {"per_seed", "summary", "curves"}}."""
    from sadetr.engine.trainer import train, with_seed

    seeds: list[int] | None = None
    if args.seeds:
        from sadetr.engine.multiseed import parse_seeds

        seeds = parse_seeds(args.seeds)
    results: dict[str, dict[str, Any]] = {}
    for entry, cfg in configs.items():
        runs = (
            {s: args.out / entry / f"seed{s}" for s in seeds} if seeds else {cfg.train.seed: args.out / entry}
        )
        per_seed: dict[int, dict[str, float]] = {}
        seed_curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
        for seed, run_dir in runs.items():
            if args.report:
                records = eval_records(run_dir)
                best = best_evaluation(records, cfg.train.selection_metric)
                if best is None:
                    continue
            else:
                best = train(with_seed(cfg, seed), run_dir, resume=args.resume)["best"]
                records = eval_records(run_dir)
            per_seed[seed] = {k: v for k, v in (best or {}).items() if k != "epoch"}
            seed_curves[str(seed)] = eval_curves(records, (*EPOCH_KEYS, CPU_KEY))  # CURVE_KEY is one of them
        results[entry] = {
            "per_seed": {str(s): m for s, m in per_seed.items()},
            "summary": summarize_entry(per_seed),
            "curves": {s: c[CURVE_KEY] for s, c in seed_curves.items()},
            "epoch_curves": {
                key: {s: c[key] for s, c in seed_curves.items()} for key in (*EPOCH_KEYS, CPU_KEY)
            },
        }
    return results


def run(args: argparse.Namespace) -> int:
    from sadetr.core.jsonio import atomic_write_text, write_json
    from sadetr.engine.distributed import init_distributed, shutdown_distributed

    # Every config is composed (and checked) before any training starts.
    configs = {name: entry_config(args, base, own) for name, (base, own) in entries_of(args).items()}
    info, _ = init_distributed(next(iter(configs.values())).train.device)
    try:
        results = compare(args, configs)
        if not info.is_main:
            return 0
        present = {k for res in results.values() for k in res["summary"]}
        keys = [k for k in TABLE_KEYS if k in present]
        table = format_table(results, keys)
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "compare.json", results)
        atomic_write_text(args.out / "compare.md", table + "\n")
        epoch_curves = {
            e: {
                k: [list(map(tuple, c)) for c in per_seed.values()]
                for k, per_seed in res["epoch_curves"].items()
            }
            for e, res in results.items()
        }
        atomic_write_text(args.out / "compare_epochs.md", format_epochs(epoch_curves, args.reference) + "\n")
        curves = {e: [list(map(tuple, c)) for c in res["curves"].values()] for e, res in results.items()}
        plot_curves(curves, CURVE_KEY, args.out / "compare_curves.png")
        print(table)
        print(
            f"table: {args.out / 'compare.md'}  per epoch: {args.out / 'compare_epochs.md'}  "
            f"curves: {args.out / 'compare_curves.png'}"
        )
        return 0
    finally:
        shutdown_distributed()
