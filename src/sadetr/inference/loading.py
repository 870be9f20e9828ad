"""One loader for every command that runs a trained model: a training checkpoint (file or run directory)
or a portable model folder, and the backend (`--backend torch|onnx|onnx-int8`) to run it with.

A checkpoint is read with `torch.load(weights_only=True)`, a model folder as JSON + safetensors. The ONNX
backends need a model folder with the graph (`sadetr export --format onnx [--int8]`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sadetr.config.compose import Config, config_to_dict, parse_override, set_dotted, stored_config
from sadetr.core.errors import CheckpointError, ConfigError
from sadetr.data.pipeline import FeaturePipeline
from sadetr.engine.checkpoint import checkpoint_file, file_sha256, load_trained_model, pipeline_of
from sadetr.inference.backend import ONNX_FILES, Backend, OnnxBackend, TorchBackend, check_backend
from sadetr.inference.folder import WEIGHTS_FILE, is_model_folder, load_pretrained

# `--set` of a trained model may change where its data is and how its output is post-processed; other
# keys would no longer describe the weights (model.*) or only matter for training (loss.*, train.*).
SETTABLE = ("data.", "model.round_to_clip")


@dataclass
class LoadedModel:
    """A trained model ready for inference, whatever it was loaded from."""

    model: nn.Module  # eval mode, on the CPU
    cfg: Config
    pipeline: FeaturePipeline
    source: str  # the path given, for messages
    identity: str  # SHA-256 of the weights file (checkpoint or model.safetensors)
    folder: Path | None = None  # the model folder (its ONNX graphs), None for a checkpoint
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def round_to_clip(self) -> bool:
        return bool(self.cfg.model.round_to_clip)


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """A checkpoint file, a run directory (its best.ckpt / last.ckpt) or a model folder."""
    path = Path(path)
    if is_model_folder(path):
        folder = load_pretrained(path)
        return LoadedModel(
            folder.model,
            folder.cfg,
            folder.pipeline,
            str(path),
            file_sha256(path / WEIGHTS_FILE),
            path,
            folder.metrics,
            folder.provenance,
        )
    file = checkpoint_file(path)
    model, cfg, state = load_trained_model(file, map_location="cpu")
    provenance = {"checkpoint": str(file), "epoch": state.get("epoch")}
    if state.get("imported_from"):
        provenance["imported_from"] = state["imported_from"]
    return LoadedModel(
        model,
        cfg,
        pipeline_of(cfg, state.get("features"), str(file)),
        str(file),
        file_sha256(file),
        None,
        dict(state.get("metrics") or {}),
        provenance,
    )


def with_overrides(loaded: LoadedModel, overrides: Iterable[str]) -> LoadedModel:
    """`--set key=value` on a trained model's config (data.* and model.round_to_clip only; the same
    syntax as `train --set`)."""
    tree = config_to_dict(loaded.cfg)
    changed = False
    for text in overrides:
        key, value = parse_override(text)
        if not key.startswith(SETTABLE):
            raise ConfigError(
                "a trained model takes --set data.* and model.round_to_clip only (the others describe "
                "its weights or its training)",
                key=key,
            )
        set_dotted(tree, key, value)
        changed = True
    if not changed:
        return loaded
    return replace(loaded, cfg=stored_config(tree))


def make_backend(
    loaded: LoadedModel, name: str = "torch", device: str | torch.device = "cpu", threads: int = 0
) -> Backend:
    """The backend `name` for `loaded` on `device` (the model is moved there for torch); `threads`: the
    onnxruntime intra-op threads (0 = its default)."""
    check_backend(name)
    if name == "torch":
        return TorchBackend(loaded.model.to(device), device)
    if loaded.folder is None:
        raise CheckpointError(
            f"{loaded.source}: --backend {name} runs an exported model folder; write one with "
            f"sadetr export --checkpoint {loaded.source} --format onnx{' --int8' if 'int8' in name else ''} "
            "--out DIR, then pass --checkpoint DIR"
        )
    graph = loaded.folder / ONNX_FILES[name]
    if not graph.is_file():
        flag = " --int8" if "int8" in name else ""
        raise CheckpointError(
            f"{loaded.folder}: no {graph.name} (export it with sadetr export --format onnx{flag})"
        )
    return OnnxBackend(
        graph,
        max_v_l=loaded.pipeline.max_v_l,
        max_q_l=loaded.pipeline.max_q_l,
        device=device,
        threads=threads,
        name=name,
    )
