"""Repeated runs over several seeds (Table 12): one sub-run per seed, mean ± std of each best metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sadetr.config.compose import Config
from sadetr.core.errors import ConfigError
from sadetr.core.jsonio import write_json
from sadetr.engine.distributed import init_distributed
from sadetr.engine.trainer import train, with_seed


def parse_seeds(text: str) -> list[int]:
    """`"0,1,2,3,2018"` -> `[0, 1, 2, 3, 2018]`."""

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}", key="--seeds") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"expected distinct comma-separated integers, got {text!r}", key="--seeds")
    return seeds


def summarize(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: mean, sample std (ddof=1; 0 for one seed), min, max over the seeds' best metrics."""
    keys = sorted({k for m in per_seed.values() for k, v in m.items() if isinstance(v, (int, float))})
    out = {}
    for key in keys:
        vals = np.array([m[key] for m in per_seed.values() if key in m], dtype=np.float64)
        out[key] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
            "min": float(vals.min()),
            "max": float(vals.max()),
            "n": len(vals),
        }
    return out


def run_seeds(cfg: Config, run_dir: str | Path, seeds: list[int], resume: bool = False) -> dict[str, Any]:
    """Train `cfg` once per seed into `run_dir/seed<k>/`; write and return `seeds_summary.json`."""

    run_dir = Path(run_dir)
    per_seed: dict[int, dict[str, float]] = {}
    for seed in seeds:
        result = train(with_seed(cfg, seed), run_dir / f"seed{seed}", resume=resume)
        per_seed[seed] = {k: v for k, v in (result["best"] or {}).items() if k != "epoch"}
    summary = {
        "seeds": seeds,
        "per_seed": {str(s): m for s, m in per_seed.items()},
        "summary": summarize(per_seed),
    }
    if init_distributed(cfg.train.device)[0].is_main:
        write_json(run_dir / "seeds_summary.json", summary)
    return summary


def format_summary(summary: dict[str, Any], keys: list[str] | None = None) -> str:
    """Plain-text table `metric  mean ± std  (n)`."""
    stats = summary["summary"]
    keys = keys or list(stats)
    width = max((len(k) for k in keys), default=6)
    lines = [f"{'metric':<{width}}  mean ± std   (n seeds)"]
    for key in keys:
        if key in stats:
            s = stats[key]
            lines.append(f"{key:<{width}}  {s['mean']:.2f} ± {s['std']:.2f}  ({s['n']})")
    return "\n".join(lines)
