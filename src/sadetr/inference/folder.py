"""Portable model folders (`save_pretrained` / `load_pretrained`): what a trained model needs to run
anywhere, without its run directory and without unpickling anything.

    DIR/config.json        format, sadetr version, the run config, feature pipeline, post-processing,
                           metrics, provenance, and the ONNX graphs beside it (if any)
    DIR/model.safetensors  the weights
    DIR/README.md          a short model card: data, recipe, metrics, feature pipeline, usage
    DIR/model.onnx         the eval model as ONNX (`sadetr export --format onnx`), optional
    DIR/model.int8.onnx    its int8 dynamically quantised copy (`--int8`), optional

Reading is JSON and safetensors only; every file is written atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sadetr import __version__
from sadetr.config.compose import Config, config_to_dict
from sadetr.core.atomic import atomic_path, atomic_write_text
from sadetr.core.errors import CheckpointError
from sadetr.data.pipeline import FeaturePipeline
from sadetr.engine.checkpoint import file_sha256, model_from_state
from sadetr.inference.backend import ONNX_FILES

FORMAT = "sadetr-model/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
CARD_METRICS = (
    "MR-full-R1@0.5",
    "MR-full-R1@0.7",
    "MR-full-mAP",
    "HL-min-VeryGood-mAP",
    "HL-min-VeryGood-Hit1",
)


@dataclass
class ModelFolder:
    """A loaded model folder: eval model (CPU), its config and pipeline, and what config.json records."""

    path: Path
    model: nn.Module
    cfg: Config
    pipeline: FeaturePipeline
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    onnx: dict[str, Any] = field(default_factory=dict)  # file name -> export settings


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding a model folder's config.json and weights."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def save_pretrained(
    out: str | os.PathLike[str],
    model: nn.Module,
    cfg: Config,
    pipeline: FeaturePipeline,
    *,
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    onnx: dict[str, Any] | None = None,
) -> Path:
    """Write the model folder `out` (created; its weights, config.json and README.md replaced)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ONNX_FILES.values():  # graphs of earlier weights must not run with these
        if name not in (onnx or {}):
            (out / name).unlink(missing_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(weights, str(tmp), metadata={"format": FORMAT})
    record = {
        "format": FORMAT,
        "sadetr_version": __version__,
        "model_name": cfg.model.name,
        "config": config_to_dict(cfg),
        "feature_pipeline": pipeline.to_record(),
        "postprocess": {"round_to_clip": bool(cfg.model.round_to_clip)},
        "metrics": metrics or {},
        "provenance": {**(provenance or {}), "weights_sha256": file_sha256(out / WEIGHTS_FILE)},
        "onnx": onnx or {},
    }
    atomic_write_text(out / CONFIG_FILE, json.dumps(record, indent=1) + "\n")
    atomic_write_text(out / CARD_FILE, model_card(record))
    return out


def record_onnx(folder: str | os.PathLike[str], name: str, settings: dict[str, Any]) -> None:
    """Add the graph `name` (a file of the folder) and its export settings to config.json."""
    path = Path(folder) / CONFIG_FILE
    record = _read_record(Path(folder))
    record["onnx"] = {**record.get("onnx", {}), name: settings}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    atomic_write_text(Path(folder) / CARD_FILE, model_card(record))


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} model folder")
    return record


def load_pretrained(folder: str | os.PathLike[str]) -> ModelFolder:
    """Read a model folder (JSON and safetensors: nothing is unpickled); any problem is a
    `CheckpointError` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    record = _read_record(folder)
    try:
        weights: dict[str, torch.Tensor] = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: unreadable weights ({err})") from None
    model, cfg = model_from_state(record.get("config"), weights, str(folder))
    pipeline = FeaturePipeline.from_record(
        record.get("feature_pipeline"), cfg.data, (cfg.model.video_dim, cfg.model.text_dim), str(folder)
    )
    return ModelFolder(
        folder,
        model,
        cfg,
        pipeline,
        dict(record.get("metrics") or {}),
        dict(record.get("provenance") or {}),
        dict(record.get("onnx") or {}),
    )


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def model_card(record: dict[str, Any]) -> str:
    """The README.md of a model folder: data, recipe, metrics, feature pipeline, how to use it."""
    cfg, pipe = record["config"], record["feature_pipeline"]
    data, model, train = cfg.get("data", {}), cfg.get("model", {}), cfg.get("train", {})
    metrics = record.get("metrics") or {}
    brief = metrics.get("brief") or metrics  # a checkpoint stores the brief metrics (+ epoch) flat
    shown = [k for k in CARD_METRICS if isinstance(brief.get(k), (int, float))]
    prov = record.get("provenance") or {}
    lines = [
        f"# {record['model_name']} model folder",
        "",
        f"Written by sadetr {record['sadetr_version']} ({record['format']}). Load it with",
        "`sadetr predict --checkpoint THIS_FOLDER ...` (also `serve`, `app`, `index`, `search`), or in",
        "Python with `sadetr.inference.folder.load_pretrained`. Nothing in it is unpickled.",
        "",
        "## Data",
        "",
        f"- dataset: {data.get('dataset')}; training annotations `{Path(str(data.get('train_path'))).name}`",
        f"- features: {' + '.join(pipe['video_sources'])} ({'+'.join(map(str, pipe['video_dims']))}-d), "
        f"text {pipe['text_source']} ({pipe['text_dim']}-d)",
        "",
        "## Recipe",
        "",
        f"- model {model.get('name')}: hidden {model.get('hidden_dim')}, {model.get('num_queries')} queries, "
        f"{model.get('n_dec_layers')} decoder layers",
        f"- training: {train.get('epochs')} epochs, batch {train.get('batch_size')}, lr {train.get('lr')} "
        f"({train.get('lr_schedule')}), seed {train.get('seed')}",
    ]
    if prov.get("imported_from"):
        src = prov["imported_from"]
        lines.append(
            f"- imported from {src.get('repository')} ({src.get('file')}, sha256 {src.get('sha256')})"
        )
    lines += ["", "## Metrics", ""]
    if shown:
        where = f" (validation, epoch {brief['epoch']})" if "epoch" in brief else ""
        lines += [f"- {k}: {_fmt(brief[k])}{where if i == 0 else ''}" for i, k in enumerate(shown)]
    else:
        lines.append("- none recorded (an imported or untrained model)")
    lines += [
        "",
        "## Feature pipeline",
        "",
        f"- {pipe['clip_len']:g} s per clip; at most {pipe['max_v_l']} clips per model input (longer videos: "
        f"sliding windows), {pipe['max_q_l']} query tokens",
        f"- per-source L2 norm of clips: {pipe['normalize_video']}; L2 norm of tokens: "
        f"{pipe['normalize_text']}; TEF: {pipe['use_tef']}",
        f"- post-processing: clip-grid rounding {record['postprocess']['round_to_clip']}, duplicate windows "
        "merged",
    ]
    if record.get("onnx"):
        lines += ["", "## ONNX", ""]
        for name, settings in record["onnx"].items():
            extra = ", ".join(f"{k} {v}" for k, v in settings.items())
            lines.append(f"- `{name}`: {extra}")
    return "\n".join(lines) + "\n"
