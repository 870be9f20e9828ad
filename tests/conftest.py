"""Shared fixtures: synthetic datasets with real feature dims, and a tiny trained checkpoint.

Fixtures for every test module (session-scoped, built once per test session even under pytest-xdist,
guarded by a file lock in the shared base temp dir):

- `synthetic_qvh`: dict of paths (`root`, `feat_root`, `train`, `val`, `config` = its dataset.yaml) of a
  tiny QVHighlights-shaped synthetic dataset (48 train / 24 val queries, 2304+512 video, 512 text dims).
- `synthetic_qvh_learn`: the same kind of paths for 800 train / 100 val queries (learning tests).
- `tiny_config(*overrides)`: a function returning the `synthetic_tiny` Config on that dataset.
- `tool(name)`: `tools/<name>.py` as a module (registered in `sys.modules` first, as dataclasses need).
- `tiny_checkpoint`: Path of `best.ckpt` of a tiny SA-DETR (d=32, all components on) trained 2 epochs on
  `synthetic_qvh` (its run directory, with config.yaml / val_preds.jsonl, is `tiny_checkpoint.parent`).

Torch runs single-threaded in tests: on 2 shared cores, intra-op threads of parallel test workers
oversubscribe the CPU and slow small ops down by an order of magnitude.

Lanes: every test of the modules in `CHECK_MODULES` (the hand-computed math of the model, the losses,
the evaluation, the configs and recipes) carries the `check` marker: `make check` runs them, the linters
and the doctests in about two minutes; `make test` runs everything.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# The fast lane (`make check`): test modules of hand-computable math and configs, no training.
CHECK_MODULES = {
    "test_span_ops", "test_matcher", "test_losses", "test_loss_fast_path", "test_decoder",
    "test_decoder_reference", "test_decoder_fast_path", "test_denoising", "test_query_init",
    "test_encoder", "test_encoder_reference", "test_readings", "test_recipes", "test_legacy_configs",
    "test_config", "test_eval", "test_postprocess", "test_mutation_harness", "test_annotations",
}  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of `CHECK_MODULES` with `check`."""
    for item in items:
        if item.path.stem in CHECK_MODULES:
            item.add_marker(pytest.mark.check)


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shared by all xdist workers of this session."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / "sadetr_shared"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]) -> Path:
    """Run `build(dir)` once per session across workers; later callers reuse the finished directory."""
    from filelock import FileLock

    shared = _shared_dir(tmp_path_factory)
    target, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            build(target)
            done.touch()
    return target


def make_synthetic(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: Any) -> dict[str, Path]:
    """Session-shared synthetic dataset `name` (kwargs of `generate_synthetic`)."""
    from sadetr.data.synth import generate_synthetic

    root = _once(tmp_path_factory, name, lambda d: generate_synthetic(d, **kwargs))
    return {
        "root": root,
        "feat_root": root / "features",
        "train": root / "annotations" / "train.jsonl",
        "val": root / "annotations" / "val.jsonl",
        "config": root / "dataset.yaml",
    }


@pytest.fixture(scope="session")
def synthetic_qvh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_synthetic(
        tmp_path_factory, "syn_qvh_tiny", preset="qvhighlights", n_train=48, n_val=24, seed=0
    )


@pytest.fixture(scope="session")
def synthetic_qvh_learn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """800 train / 100 val queries (seed 1): the learning tests' data."""
    return make_synthetic(
        tmp_path_factory, "syn_qvh_learn", preset="qvhighlights", n_train=800, n_val=100, seed=1
    )


@pytest.fixture(scope="session")
def tiny_config(synthetic_qvh: dict[str, Path]) -> Callable[..., Any]:
    from sadetr.config.compose import compose_config

    def make(*overrides: str, preset: str | None = None) -> Any:
        presets = [preset] if preset else []
        return compose_config(["synthetic_tiny", str(synthetic_qvh["config"])], overrides, presets=presets)

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_config: Callable[..., Any]) -> Path:
    from sadetr.engine.trainer import train

    run = _once(tmp_path_factory, "tiny_run", lambda d: train(tiny_config(), d))
    return run / "best.ckpt"


def load_tool(name: str) -> ModuleType:
    """`tools/<name>.py` as the module `sadetr_tool_<name>` (loaded once; registered before it runs)."""
    key = f"sadetr_tool_{name}"
    if key not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(key, path)
        assert spec is not None and spec.loader is not None
        sys.modules[key] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(scope="session")
def tool() -> Callable[[str], ModuleType]:
    """`tool(name)`: the script `tools/<name>.py` as a module."""
    return load_tool
