"""Run configuration: the typed `Config` and its composition from layered YAML parts.

A config file may list `_base_: [part, ...]` (paths relative to the file, or built-in names); the parts
are merged in order (recursively, each may have its own `_base_`), then the file itself, then the named
presets in order (`sadetr.config.presets`), then dotted `--set key=value` overrides (values parsed as YAML
scalars), so the user's explicit overrides always win. The recipe named by the result's `model.recipe`
(`sadetr.config.recipes`, `paper` when unset) lies underneath all of them: it gives the reading switches
that no layer sets. The merged mapping becomes typed dataclasses; an unknown key, a wrong type or a
malformed override is a `ConfigError` naming the dotted key. Built-in configs live in `sadetr/config/builtin/`
and can be named without the `.yaml` suffix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sadetr.config.presets import get_preset
from sadetr.config.recipes import DEFAULT_RECIPE, get_recipe
from sadetr.config.train import TrainConfig
from sadetr.core.atomic import atomic_write_text
from sadetr.core.devices import check_device
from sadetr.core.errors import ConfigError, DataError
from sadetr.core.paths import read_user_text
from sadetr.data.config import DataConfig
from sadetr.model.config import LossConfig, ModelConfig

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
_MISSING = object()


@dataclass
class Config:
    """Everything one run needs: data pipeline, model, loss weights and training."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def list_builtin_configs() -> list[str]:
    """Names of the shipped top-level configs (parts under `_parts/` are not listed)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | os.PathLike[str], relative_to: Path | None = None) -> Path:
    """A YAML path as given (relative to `relative_to` if set), or a built-in config by name."""
    raw = str(name_or_path)
    candidates = []
    if relative_to is not None and not os.path.isabs(raw):
        candidates.append(relative_to / raw)
    candidates.append(Path(raw))
    stem = raw[:-5] if raw.endswith(".yaml") else raw
    candidates.append(BUILTIN_DIR / f"{stem}.yaml")
    for cand in candidates:
        if cand.is_file():
            return cand
    raise ConfigError(
        f"no such config file or built-in config (built-in: {', '.join(list_builtin_configs())})", key=raw
    )


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge key by key, anything else in `update` replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_layers(path: str | os.PathLike[str], _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML mapping at `path` with its `_base_` parts merged underneath it, in order."""
    file = resolve_config_path(path).resolve()
    if file in _stack:
        raise ConfigError(f"circular _base_ chain: {' -> '.join(map(str, (*_stack, file)))}", key="_base_")
    data = _read_yaml(file)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: top level must be a mapping, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{file}: must be a list of paths", key="_base_")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = deep_merge(merged, load_layers(resolve_config_path(base, file.parent), (*_stack, file)))
    return deep_merge(merged, data)


def yaml_error_line(err: Exception) -> str:
    """One line for a YAML error: the problem and where (`... (line 3, column 7)`), no source excerpt."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        context = f"{err.context}: " if err.context else ""
        return f"{context}{err.problem}{where}"
    return " ".join(str(err).split())


def _read_yaml(file: Path) -> Any:
    """The YAML document in `file` ({} when empty); unreadable, non-UTF-8 or invalid YAML -> ConfigError."""
    try:
        text = read_user_text(file, "YAML file")
    except DataError as err:  # a config is the user's configuration, not data: same line, ConfigError
        raise ConfigError(f"{file}: {err.message}") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: invalid YAML: {yaml_error_line(err)}") from None
    except (ValueError, OverflowError) as err:  # a constructor's own error, e.g. the date 2020-13-45
        raise ConfigError(f"{file}: invalid YAML value: {err}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """`"model.hidden_dim=128"` -> `("model.hidden_dim", 128)`; the value is a YAML scalar."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override {text!r}: expected section.key=value", key=key or text)
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except (yaml.YAMLError, ValueError, OverflowError):  # the date 2020-13-45 is a ValueError
        raise ConfigError(f"bad override value {value!r}", key=key) from None
    return key, parsed


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set `tree["a"]["b"] = value` for `key="a.b"`, creating sections (types are checked later)."""
    node = tree
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError("is not a section", key=".".join(parts[: i + 1]))
        node = child
    node[parts[-1]] = value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` (int/float/bool/str, unions, list/tuple/dict, dataclass)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", key=key)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"expected one of {typing.get_args(tp)}, got {value!r}", key=key)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", key=key)
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", key=key)
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true/false, got {value!r}", key=key)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", key=key)
        return value
    if tp is float:
        number = None
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        if number is None:
            raise ConfigError(f"expected a number, got {value!r}", key=key)
        if not math.isfinite(number):  # NaN passes every `<= 0` check downstream
            raise ConfigError(f"must be a finite number, got {value!r}", key=key)
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", key=key)
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", key=key)
    return value


def build_dataclass(cls: type, values: Any, prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from a mapping, type-checking every field; unknown keys are errors."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"expected a mapping of {cls.__name__} fields, got {values!r}", key=prefix or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key (valid: {', '.join(sorted(fields))})", key=dotted)
        kwargs[key] = _coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # a dataclass's own __post_init__ validation
        raise ConfigError(str(err), key=prefix or None) from None


def config_from_dict(tree: Mapping[str, Any]) -> Config:
    """Typed `Config` from a plain (merged) mapping; missing fields take their defaults. A removed switch
    (`REMOVED_SWITCHES`) at its neutral value is dropped; at any other value it is a ConfigError."""

    cfg = build_dataclass(Config, drop_removed_switches(tree))
    check_device(cfg.train.device, "train.device")
    return cfg


# Every key added after the first stored config format, with the value that runs had before the key
# existed: a stored config (checkpoint) without the key was trained with that value, not the default.
LEGACY_DEFAULTS: dict[str, Any] = {
    "data.allow_empty_windows": False,
    "model.recipe": "unnamed",  # metadata: configs stored before recipes existed name none
    "model.round_to_clip": False,  # windows were not rounded to the clip grid
    "model.qd_t2v_form": "normed",  # QD-DETR's earlier T2V residual form
    "model.self_attn_pos": "before_proj",
    "model.gate_scale": False,
    "model.position_mode": "raw",
    "model.mask_clip_time": "center",
    "model.gaussian_mode": "logits",
    "model.cross_residual": "input",
    "model.anchor_grad": "first",
    "model.dn_center_noise": "width",
    "loss.noise_reduction": "pairs",
    "loss.qmargin_reduction": "pairs",
    "loss.quality_balance": "none",
    "loss.ctm_univtg_weight": 1.0,
    "train.compile": False,  # the training step ran eagerly
}
# Switches removed in sadetr 0.2 (docs/readings.md "Removed switches"), with their neutral value: a config
# that holds one at that value loses nothing when it is dropped; any other value cannot be run here.
REMOVED_SWITCHES: dict[str, Any] = {
    "model.anchor_offset": False,
    "model.position_scale": "video",
    "model.span_query": "plain",
    "model.quality_detach": False,
    "model.dn_noise_min_width": 0.0,
    "loss.quality_reduction": "mean",
    "loss.ctm_scale": "mean",
    "loss.ctm_intra_negatives": "lower",
}
LAST_VERSION_WITH_REMOVED = "0.1.0"


def drop_removed_switches(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    """`tree` without the `REMOVED_SWITCHES` keys it holds at their neutral value (a new mapping when one
    is dropped); a removed switch at another value -> ConfigError naming it and the last version."""
    if not isinstance(tree, Mapping):
        return tree
    out = dict(tree)
    for dotted, neutral in REMOVED_SWITCHES.items():
        section, key = dotted.split(".")
        part = out.get(section)
        if not isinstance(part, Mapping) or key not in part:
            continue
        if part[key] != neutral:
            raise ConfigError(
                f'{part[key]!r} was a reading removed in sadetr 0.2 (docs/readings.md "Removed switches"); '
                f"sadetr {LAST_VERSION_WITH_REMOVED} is the last version that runs it",
                dotted,
            )
        out[section] = {k: v for k, v in part.items() if k != key}
    return out


def stored_config(tree: Mapping[str, Any]) -> Config:
    """`config_from_dict` of a config stored with a run or checkpoint: a key of `LEGACY_DEFAULTS` that it
    lacks (written before the key existed) takes its legacy value, so old checkpoints keep their model."""
    if not isinstance(tree, Mapping):
        return config_from_dict(tree)  # its ConfigError
    tree = dict(tree)  # (the caller's mapping is left as it is)
    for dotted, value in LEGACY_DEFAULTS.items():
        section, key = dotted.split(".")
        part = tree.get(section, {})
        if isinstance(part, Mapping) and key not in part:
            tree[section] = {**part, key: value}
    return config_from_dict(tree)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain YAML/JSON-friendly dict (tuples become lists) of a config dataclass."""

    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        if isinstance(obj, Path):
            return str(obj)
        return obj

    return plain(cfg)


def with_recipe(tree: Mapping[str, Any]) -> dict[str, Any]:
    """`tree` on top of the recipe it names (`model.recipe`, default `paper`): the recipe's readings fill
    the keys that `tree` does not set. An unknown recipe name -> ConfigError."""
    model = tree.get("model")
    name = model.get("recipe", DEFAULT_RECIPE) if isinstance(model, Mapping) else DEFAULT_RECIPE
    if not isinstance(name, str):
        raise ConfigError(f"expected a recipe name, got {name!r}", "model.recipe")
    base: dict[str, Any] = {"model": {"recipe": name}}
    for key, value in get_recipe(name).overrides.items():
        set_dotted(base, key, value)
    return deep_merge(base, tree)


def compose_config(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    overrides: Iterable[str] = (),
    presets: Sequence[str] = (),
) -> Config:
    """Layers of `path` (built-in name or file, or several merged in order; None = defaults), then the
    `presets` in order, then `overrides`, all on top of the recipe the result names (`with_recipe`)."""
    paths = [] if path is None else [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if isinstance(presets, str):
        presets = [presets]
    tree: dict[str, Any] = {}
    for one in paths:
        tree = deep_merge(tree, load_layers(one))
    for preset in presets:
        for key, value in get_preset(preset).items():
            set_dotted(tree, key, value)
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    return config_from_dict(with_recipe(tree))


def save_config(cfg: Config, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically; `load_config` reads it back equal."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write_text(path, text)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a config file (a saved resolved config, or any layered config file)."""
    return compose_config(path)
