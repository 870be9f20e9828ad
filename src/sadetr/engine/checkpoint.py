"""Training checkpoints: model, optimiser, scheduler, position, RNG states, config, feature pipeline.

Format (docs/CONTRACTS.md): a `torch.save` dict with `model`, `optimizer`, `scheduler`, `epoch`, `step`
(batches already consumed in `epoch`), `rng`, `config` (plain dict), `features`, `metrics`,
`sadetr_version`, plus `global_step` and `best` (selection value so far). Everything is stored as
plain types and tensors so that it loads with `torch.load(weights_only=True)` (no code execution).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sadetr import __version__
from sadetr.config.compose import stored_config
from sadetr.core.atomic import atomic_path, library_write_error
from sadetr.core.errors import CheckpointError, ConfigError, state_mismatch
from sadetr.core.safe_load import load_weights
from sadetr.data.config import DataConfig
from sadetr.data.pipeline import FeaturePipeline
from sadetr.model.build import build_model

REQUIRED_KEYS = ("model", "config", "features", "epoch", "step")


def feature_pipeline(data_cfg: DataConfig) -> dict[str, Any]:
    """The feature pipeline record a checkpoint stores (`FeaturePipeline.to_record`) for its data config."""
    return FeaturePipeline.from_data_config(data_cfg).to_record()


def pipeline_of(cfg: Any, features: Mapping[str, Any] | None, source: str = "") -> FeaturePipeline:
    """The feature pipeline of a loaded checkpoint: its `features` entry, completed from its config for
    keys an older checkpoint lacks (`FeaturePipeline.from_record`)."""
    return FeaturePipeline.from_record(features, cfg.data, (cfg.model.video_dim, cfg.model.text_dim), source)


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """`path` if it is a file, else `best.ckpt` (or `last.ckpt`) of the run directory `path`; none of
    them is a `CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / name).is_file():
                return path / name
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (the identity of a checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """`torch.save` to a temp file in the same directory, fsync, then `os.replace` (never a partial file).

    Temp files of this target left by a killed earlier writer are removed first."""
    path = Path(path)
    state = {**state, "sadetr_version": __version__}
    with atomic_path(path, clean_stale=True) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as err:  # torch reports a failed write (a full disk) as a RuntimeError
            raise library_write_error(err, tmp.parent) from None


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; any problem is a `CheckpointError`."""
    path = checkpoint_file(path)
    state = load_weights(path, "checkpoint", map_location=map_location)  # weights_only: no code runs
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a sadetr checkpoint (top level is {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a sadetr checkpoint (missing {', '.join(missing)})")
    return state


def load_trained_model(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(model built from the checkpoint's own config with its weights, in eval mode; its `Config`; the
    checkpoint dict). A config or weights that do not fit this sadetr version raise `CheckpointError`."""
    state = load_checkpoint(path, map_location=map_location)
    model, cfg = model_from_state(state["config"], state["model"], str(path))
    return model, cfg, state


def model_from_state(config: Any, weights: Any, where: str) -> tuple[torch.nn.Module, Any]:
    """(eval model built from a stored `config` mapping with `weights` loaded, its `Config`); a config or
    weights that do not fit this sadetr version (or hold NaN/inf) are a `CheckpointError` naming `where`."""

    try:
        cfg = stored_config(config)
    except ConfigError as err:
        raise CheckpointError(f"{where}: its config does not fit this sadetr version ({err})") from None
    model = build_model(cfg.model)
    bad = first_non_finite(weights) if isinstance(weights, dict) else None
    if bad is not None:
        raise CheckpointError(f"{where}: parameter {bad!r} holds NaN/inf values (the run diverged)")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{where}: 'model' is not a state dict of tensors")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mismatch = state_mismatch(expected, {k: tuple(v.shape) for k, v in weights.items()})
    if mismatch:
        raise CheckpointError(f"{where}: weights do not fit the model of its config: {mismatch}")
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(f"{where}: weights do not fit the model of its config ({first})") from None
    return model.eval(), cfg


def non_finite_entries(obj: Any, name: str = "") -> list[str]:
    """Names (`aux_outputs[0].pred_spans`, a state dict's keys, ...) of the floating tensors in a nested
    structure (model outputs, a state dict) that hold NaN or inf; one device sync when everything is
    finite (the common case)."""
    found: list[tuple[str, torch.Tensor]] = []

    def walk(o: Any, key: str) -> None:
        if torch.is_tensor(o):
            if o.is_floating_point():
                found.append((key, o))
        elif isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, f"{key}[{i}]")

    walk(obj, name)
    if not found or bool(torch.stack([t.detach().isfinite().all() for _, t in found]).all()):
        return []
    return [k for k, t in found if not bool(t.detach().isfinite().all())]


def first_non_finite(state_dict: dict[str, Any]) -> str | None:
    """Name of the first floating tensor of `state_dict` that holds NaN or inf, else None."""
    return next(iter(non_finite_entries(state_dict)), None)
