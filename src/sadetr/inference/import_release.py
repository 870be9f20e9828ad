"""Released Moment-DETR / QD-DETR checkpoints -> sadetr checkpoints (`sadetr import-checkpoint`).

Owns: safe reading of the public containers (`{"model", "opt", "epoch", ...}` with an argparse `Namespace`
or an `easydict.EasyDict` as `opt`, read with `torch.load(weights_only=True)`: no code runs), format
detection, the per-format key maps (docs/baselines.md "Released checkpoints"), the key and shape checks,
the model config read from the tensors' shapes and `opt`, and the feature pipeline (sources and their
order, TEF, clip length, normalisation) recorded in the new checkpoint, so that `predict` and the
Predictor rebuild exactly the inputs the released model was trained on.

Nothing in the file is trusted: every `opt` field read is checked for its type and range (`check_opt`),
the state dict's keys must be names, every parameter must be finite and of the shape the model built from
the file's sizes expects, and `--out` may not be the file being imported.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sadetr.config.compose import Config, config_to_dict
from sadetr.core.errors import CheckpointError, ConfigError
from sadetr.core.paths import ensure_out_file
from sadetr.core.safe_load import load_weights
from sadetr.data.config import DataConfig
from sadetr.engine.checkpoint import feature_pipeline, file_sha256, save_checkpoint
from sadetr.model.build import build_model
from sadetr.model.config import ModelConfig

SOURCE_DIMS = {"slowfast_features": 2304, "clip_features": 512}
CLIP_TEXT_DIM = 512


@dataclass(frozen=True)
class ReleaseFormat:
    """One family of released checkpoints: which model, where it is published, default source order."""

    name: str
    model: str  # sadetr model name: moment_detr | qd_detr
    repository: str
    default_sources: tuple[str, ...]  # SF+C order when `opt` does not name the feature directories


FORMATS = {
    f.name: f
    for f in (
        ReleaseFormat(
            "moment_detr", "moment_detr", "jayleicn/moment_detr", ("slowfast_features", "clip_features")
        ),
        ReleaseFormat("qd_detr", "qd_detr", "wjun0830/QD-DETR", ("slowfast_features", "clip_features")),
        ReleaseFormat(
            "lighthouse_moment_detr", "moment_detr", "line/lighthouse", ("clip_features", "slowfast_features")
        ),
        ReleaseFormat(
            "lighthouse_qd_detr", "qd_detr", "line/lighthouse", ("clip_features", "slowfast_features")
        ),
    )
}

# (public name, sadetr name); `{i}` is a layer index, `{*}` the rest of the name, copied unchanged.
# Rules are tried in order in both directions; the first match wins.
_SHARED_RULES = (
    ("input_vid_proj.{i}.LayerNorm.{*}", "inputs.input_vid_proj.{i}.norm.{*}"),
    ("input_vid_proj.{i}.net.1.{*}", "inputs.input_vid_proj.{i}.linear.{*}"),
    ("input_txt_proj.{i}.LayerNorm.{*}", "inputs.input_txt_proj.{i}.norm.{*}"),
    ("input_txt_proj.{i}.net.1.{*}", "inputs.input_txt_proj.{i}.linear.{*}"),
    ("txt_position_embed.position_embeddings.weight", "inputs.txt_position_embed.position_embeddings.weight"),
    ("txt_position_embed.LayerNorm.{*}", "inputs.txt_position_embed.norm.{*}"),
    ("query_embed.weight", "query_embed.weight"),
    ("class_embed.{*}", "class_embed.{*}"),
    ("span_embed.layers.{i}.{*}", "span_embed.layers.{i}.{*}"),
)
KEY_RULES = {
    "moment_detr": (
        *_SHARED_RULES,
        ("transformer.encoder.layers.{i}.{*}", "encoder.{i}.{*}"),
        ("transformer.decoder.layers.{i}.multihead_attn.{*}", "decoder.{i}.cross_attn.{*}"),
        ("transformer.decoder.layers.{i}.{*}", "decoder.{i}.{*}"),
        ("transformer.decoder.norm.{*}", "decoder_norm.{*}"),
        ("saliency_proj.{*}", "saliency_proj.{*}"),
    ),
    "qd_detr": (
        *_SHARED_RULES,
        ("global_rep_token", "global_rep_token"),
        ("global_rep_pos", "global_rep_pos"),
        ("transformer.t2v_encoder.layers.{i}.self_attn.{*}", "t2v_encoder.{i}.cross_attn.{*}"),
        ("transformer.t2v_encoder.layers.{i}.{*}", "t2v_encoder.{i}.{*}"),
        ("transformer.encoder.layers.{i}.{*}", "encoder.{i}.{*}"),
        ("transformer.decoder.layers.{i}.self_attn.out_proj.{*}", "decoder.layers.{i}.sa_out_proj.{*}"),
        ("transformer.decoder.layers.{i}.cross_attn.out_proj.{*}", "decoder.layers.{i}.ca_out_proj.{*}"),
        ("transformer.decoder.layers.{i}.{*}", "decoder.layers.{i}.{*}"),
        ("transformer.decoder.{*}", "decoder.{*}"),
        ("saliency_proj1.{*}", "saliency_proj1.{*}"),
        ("saliency_proj2.{*}", "saliency_proj2.{*}"),
    ),
}
# Training-only heads of the public code (contrastive_align_loss), not used for spans or saliency.
IGNORED_PREFIXES = (
    "contrastive_align_projection_query.",
    "contrastive_align_projection_txt.",
    "contrastive_align_projection_vid.",
)


def _compile(pattern: str) -> re.Pattern[str]:
    body = re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{\*\}", r"(?P<rest>.+)")
    return re.compile(body + r"\Z")


def _fill(template: str, match: re.Match[str]) -> str:
    groups = match.groupdict()
    return template.replace("{i}", groups.get("i") or "").replace("{*}", groups.get("rest") or "")


class KeyMap:
    """Bijective renaming between a public state dict and a sadetr one, from a rule table."""

    def __init__(self, rules: tuple[tuple[str, str], ...]) -> None:
        self.forward_rules = [(_compile(pub), ours) for pub, ours in rules]
        self.inverse_rules = [(_compile(ours), pub) for pub, ours in rules]

    @staticmethod
    def _apply(rules: list[tuple[re.Pattern[str], str]], name: str) -> str | None:
        for pattern, template in rules:
            match = pattern.match(name)
            if match:
                return _fill(template, match)
        return None

    def to_sadetr(self, public: str) -> str | None:
        """The sadetr name of a public parameter, or None when no rule maps it back to itself."""
        ours = self._apply(self.forward_rules, public)
        return ours if ours is not None and self.to_public(ours) == public else None

    def to_public(self, ours: str) -> str | None:
        """The public name of a sadetr parameter (None when no rule covers it)."""
        return self._apply(self.inverse_rules, ours)


# ---------------------------------------------------------------------------------------- reading


@dataclass
class Release:
    """What a released checkpoint holds: the state dict, `opt` as a plain dict, the `opt` object itself
    (a Namespace, a mapping or None) and the container's `epoch`."""

    state: dict[str, torch.Tensor]
    opt: dict[str, Any]
    opt_obj: Any
    epoch: Any


def read_release(path: str | os.PathLike[str]) -> Release:
    """Read a released checkpoint (a `{"model", "opt", "epoch", ...}` dict, or a bare state dict).

    Loaded with `weights_only=True`; the only classes allowed besides tensors and plain types are
    argparse's `Namespace` (official repositories) and `easydict.EasyDict` (lighthouse), read as an
    `OrderedDict`. Anything else (a pickled function, a custom class) is refused before it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    obj = load_weights(
        path, "released checkpoint", extra_globals=[argparse.Namespace, (OrderedDict, "easydict.EasyDict")]
    )
    if isinstance(obj, Mapping) and "model" in obj:
        state, opt, epoch = obj["model"], obj.get("opt"), obj.get("epoch")
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, opt, epoch = obj, None, None  # a bare state dict
    else:
        raise CheckpointError(f"{path}: not a released Moment-DETR/QD-DETR checkpoint (no 'model' entry)")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: its 'model' entry is not a state dict of tensors")
    bad_keys = [k for k in state if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(
            f"{path}: model key {bad_keys[0]!r} is not a string ({len(bad_keys)} such key(s); a state "
            "dict's keys are parameter names)"
        )
    if isinstance(opt, argparse.Namespace):
        opt_dict = dict(vars(opt))
    elif isinstance(opt, Mapping):
        opt_dict = dict(opt)
    else:
        opt_dict = {}
    return Release(dict(state), opt_dict, opt, epoch)


def detect_format(state: Mapping[str, torch.Tensor], opt: Mapping[str, Any], opt_obj: Any, path: str) -> str:
    """Model from the keys (QD-DETR has `global_rep_token`), source from the `opt` container
    (lighthouse: a mapping with `model_name`; the official repositories: an argparse Namespace)."""
    lighthouse = isinstance(opt_obj, Mapping) or "model_name" in opt
    model_name = opt.get("model_name")
    if model_name is not None and model_name not in ("moment_detr", "qd_detr"):
        raise CheckpointError(
            f"{path}: a lighthouse {model_name!r} checkpoint; only moment_detr and qd_detr can be imported"
        )
    if "global_rep_token" in state:
        model = "qd_detr"
    elif any(k.startswith("transformer.decoder.layers.") and ".multihead_attn." in k for k in state):
        model = "moment_detr"
    else:
        raise CheckpointError(
            f"{path}: not a Moment-DETR or QD-DETR state dict (no 'global_rep_token' and no "
            f"'transformer.decoder.layers.*.multihead_attn.*' keys); give --format to force one"
        )
    return f"lighthouse_{model}" if lighthouse else model


# ---------------------------------------------------------------------------------------- opt

# The `opt` fields this importer reads, by kind. Absent or None: the default.
OPT_SIZES = (  # integers >= 1
    "v_feat_dim",
    "t_feat_dim",
    "hidden_dim",
    "nheads",
    "dim_feedforward",
    "n_input_proj",
    "enc_layers",
    "dec_layers",
    "num_queries",
    "max_q_l",
    "max_v_l",
)
OPT_RATES = ("dropout", "input_dropout")  # in [0, 1)
OPT_FLAGS = ("use_txt_pos", "no_norm_vfeat", "no_norm_tfeat", "normalize_v", "normalize_t")
OPT_NAMES = ("ctx_mode", "dset_name", "model_name")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_opt(opt: Mapping[str, Any], path: str) -> None:
    """Refuse (one line naming `opt.<field>`) a field of the wrong type or out of range."""

    def bad(key: str, need: str) -> CheckpointError:
        shown = repr(opt[key])
        return CheckpointError(f"{path}: opt.{key}: must be {need}, got {shown[:60]}")

    def given(key: str) -> bool:
        return opt.get(key) is not None

    for key in OPT_SIZES:
        if given(key) and (not isinstance(opt[key], int) or isinstance(opt[key], bool) or opt[key] < 1):
            raise bad(key, "an integer >= 1")
    for key in OPT_RATES:
        if given(key) and (not _is_number(opt[key]) or not 0 <= opt[key] < 1):
            raise bad(key, "a number in [0, 1)")
    for key in OPT_FLAGS:
        if given(key) and not isinstance(opt[key], bool):
            raise bad(key, "true or false")
    for key in OPT_NAMES:
        if given(key) and not isinstance(opt[key], str):
            raise bad(key, "a string")
    if given("clip_length"):
        check_clip_len(opt["clip_length"], f"{path}: opt.clip_length")
    dirs = opt.get("v_feat_dirs")
    if dirs is not None and (
        not isinstance(dirs, list | tuple) or not all(isinstance(d, str) and d for d in dirs)
    ):
        raise bad("v_feat_dirs", "a list of feature folder names")


def check_clip_len(value: Any, where: str) -> float:
    """Seconds per clip: a finite number > 0 (`where` names the field in the refusal)."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"{where}: must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_finite(state: Mapping[str, torch.Tensor], path: str) -> None:
    """Refuse parameters with NaN/Inf values (naming the first few)."""
    bad = [
        k
        for k, t in state.items()
        if not k.startswith(IGNORED_PREFIXES) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} parameter(s) with NaN/Inf values: {_first(bad)}")


def check_sizes(cfg: Any, state: Mapping[str, torch.Tensor], path: str) -> None:
    """Sizes read off the tensors' shapes must be >= 1 (an empty `query_embed` would build 0 queries)."""
    sources = {
        "num_queries": "query_embed.weight",
        "hidden_dim": "class_embed.weight",
        "video_dim": "input_vid_proj.0.LayerNorm.weight",
        "text_dim": "input_txt_proj.0.LayerNorm.weight",
        "ffn_dim": "transformer.encoder.layers.0.linear1.weight",
        "max_text_len": "txt_position_embed.position_embeddings.weight",
    }
    for field, key in sources.items():
        if getattr(cfg, field) < 1:
            shape = list(state[key].shape) if key in state else None
            raise CheckpointError(f"{path}: {key}: shape {shape} gives {getattr(cfg, field)} for {field}")


# ---------------------------------------------------------------------------------------- config


def _count(state: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def _dim(state: Mapping[str, torch.Tensor], key: str, axis: int, default: int) -> int:
    tensor = state.get(key)
    return int(tensor.shape[axis]) if tensor is not None and tensor.dim() > axis else int(default)


def model_config(fmt: ReleaseFormat, state: Mapping[str, torch.Tensor], opt: Mapping[str, Any]) -> Any:
    """The sadetr `ModelConfig` of a released model: sizes from the tensors, the rest from `opt`."""

    base = ModelConfig()
    hidden = _dim(state, "class_embed.weight", 1, opt.get("hidden_dim", base.hidden_dim))
    t2v_layers = _count(state, "transformer.t2v_encoder.layers.")
    return ModelConfig(
        name=fmt.model,
        video_dim=_dim(state, "input_vid_proj.0.LayerNorm.weight", 0, opt.get("v_feat_dim", base.video_dim)),
        text_dim=_dim(state, "input_txt_proj.0.LayerNorm.weight", 0, opt.get("t_feat_dim", base.text_dim)),
        hidden_dim=hidden,
        nheads=int(opt.get("nheads", base.nheads)),  # not visible in the shapes
        ffn_dim=_dim(
            state, "transformer.encoder.layers.0.linear1.weight", 0, opt.get("dim_feedforward", base.ffn_dim)
        ),
        dropout=float(opt.get("dropout", base.dropout)),
        input_dropout=float(opt.get("input_dropout", base.input_dropout)),
        n_input_proj=_count(state, "input_vid_proj.") or int(opt.get("n_input_proj", base.n_input_proj)),
        n_fusion_layers=t2v_layers or int(opt.get("enc_layers", base.n_fusion_layers)),
        n_global_layers=_count(state, "transformer.encoder.layers.") or int(opt.get("enc_layers", 2)),
        n_dec_layers=_count(state, "transformer.decoder.layers.") or int(opt.get("dec_layers", 2)),
        num_queries=_dim(state, "query_embed.weight", 0, opt.get("num_queries", base.num_queries)),
        max_text_len=_dim(
            state, "txt_position_embed.position_embeddings.weight", 0, opt.get("max_q_l", base.max_text_len)
        ),
        use_txt_pos=bool(opt.get("use_txt_pos", False)),
        qd_activation="prelu",  # the public QD-DETR transformer builds every FFN with PReLU
        qd_t2v_form="public",
    )


def _source_of(feat_dir: str) -> str | None:
    name = Path(str(feat_dir).rstrip("/\\")).name.lower()
    if "slowfast" in name:
        return "slowfast_features"
    if "clip" in name and "text" not in name:
        return "clip_features"
    return None


def data_config(
    fmt: ReleaseFormat,
    opt: Mapping[str, Any],
    video_dim: int,
    text_dim: int,
    path: str,
    video_sources: list[str] | None = None,
    clip_len: float | None = None,
) -> Any:
    """The sadetr `DataConfig` rebuilding the released model's inputs (sources in order, TEF, clip length)."""

    use_tef = "tef" in str(opt.get("ctx_mode", "video_tef"))
    audio = opt.get("a_feat_dir") or opt.get("a_feat_dirs")
    if audio:
        raise CheckpointError(f"{path}: trained with audio features ({audio}); sadetr cannot rebuild them")
    if video_sources is None and opt.get("v_feat_dirs"):
        dirs = list(opt["v_feat_dirs"])
        found = [_source_of(d) for d in dirs]
        unknown = [d for d, s in zip(dirs, found) if s is None]
        if unknown:
            raise CheckpointError(
                f"{path}: trained on video features {unknown}; sadetr reproduces only CLIP and SlowFast "
                f"(give --video-sources to name them)"
            )
        video_sources = [s for s in found if s is not None]
    if video_sources is None:  # no directories recorded: read the sources off the input width
        n = video_dim - 2 * use_tef
        video_sources = {512: ["clip_features"], 2816: list(fmt.default_sources)}.get(n)
        if video_sources is None:
            raise CheckpointError(
                f"{path}: cannot tell the video features of a {video_dim}-d input; give --video-sources"
            )
    bad = [s for s in video_sources if s not in SOURCE_DIMS]
    if bad:
        raise CheckpointError(f"{path}: unknown video source(s) {bad} (known: {', '.join(SOURCE_DIMS)})")
    dims = [SOURCE_DIMS[s] for s in video_sources]
    if sum(dims) + 2 * use_tef != video_dim:
        raise CheckpointError(
            f"{path}: features {'+'.join(video_sources)} ({'+'.join(map(str, dims))}"
            f"{' + 2 TEF' if use_tef else ''}) do not give the model's {video_dim}-d video input"
        )
    if text_dim != CLIP_TEXT_DIM:
        raise CheckpointError(
            f"{path}: a {text_dim}-d text input; sadetr imports only CLIP-text ({CLIP_TEXT_DIM}-d) models"
        )
    normalize_video = bool(opt.get("normalize_v", not opt.get("no_norm_vfeat", False)))
    normalize_text = bool(opt.get("normalize_t", not opt.get("no_norm_tfeat", False)))
    dataset = str(opt.get("dset_name") or "qvhighlights")
    return DataConfig(
        dataset={"hl": "qvhighlights", "qvhighlight": "qvhighlights"}.get(dataset, dataset),
        video_sources=list(video_sources),
        video_dims=dims,
        text_source="clip_text_features",
        text_dim=text_dim,
        clip_len=float(clip_len if clip_len is not None else opt.get("clip_length") or 2.0),
        max_v_l=int(opt.get("max_v_l", 75)),
        max_q_l=int(opt.get("max_q_l", 32)),
        use_tef=use_tef,
        normalize_video=normalize_video,
        normalize_text=normalize_text,
    )


# ---------------------------------------------------------------------------------------- conversion


def _first(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def convert_state(
    fmt: ReleaseFormat,
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    path: str,
) -> dict[str, torch.Tensor]:
    """Rename `state` to sadetr names; refuse (one line, counts and the first few names) any missing,
    unexpected or wrongly shaped parameter. `expected`: the target model's state dict."""
    keymap = KeyMap(KEY_RULES[fmt.model])
    converted: dict[str, torch.Tensor] = {}
    unexpected, wrong_shape = [], []
    for name, tensor in state.items():
        if name.startswith(IGNORED_PREFIXES):
            continue
        ours = keymap.to_sadetr(name)
        if ours is None or ours not in expected:
            unexpected.append(name)
            continue
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            wrong_shape.append(f"{name} {list(tensor.shape)} (expected {list(expected[ours].shape)})")
            continue
        converted[ours] = tensor.detach().to(dtype=expected[ours].dtype).clone().contiguous()
    missing = [
        keymap.to_public(k) or k for k in expected if k not in converted and not _present(k, keymap, state)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatch(es): {_first(wrong_shape, 2)}")
    if problems:
        raise CheckpointError(f"{path}: does not match the {fmt.name} architecture: " + "; ".join(problems))
    return converted


def _present(ours: str, keymap: KeyMap, state: Mapping[str, Any]) -> bool:
    """True when the public parameter is there (so a problem with it was reported as a wrong shape)."""
    public = keymap.to_public(ours)
    return public is not None and public in state


def import_release(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fmt_name: str | None = None,
    video_sources: list[str] | None = None,
    clip_len: float | None = None,
) -> dict[str, Any]:
    """Convert the released checkpoint `src` into the sadetr checkpoint `out` (atomic write).

    Returns a summary: format, model config, feature pipeline, parameter count, provenance.
    """

    src, out = Path(src), ensure_out_file(out)
    if out.resolve() == src.resolve() or (out.exists() and src.exists() and os.path.samefile(src, out)):
        raise ConfigError(f"{out} is the file being imported; write the conversion to another file", "--out")
    if clip_len is not None:
        try:
            check_clip_len(clip_len, "--clip-len")
        except CheckpointError as err:
            raise ConfigError(str(err).removeprefix("--clip-len: "), "--clip-len") from None
    release = read_release(src)
    state, opt = release.state, release.opt
    check_opt(opt, str(src))
    if fmt_name is None:
        fmt_name = detect_format(state, opt, release.opt_obj, str(src))
    if fmt_name not in FORMATS:
        raise CheckpointError(f"unknown format {fmt_name!r} (known: {', '.join(FORMATS)})")
    fmt = FORMATS[fmt_name]
    model_cfg = model_config(fmt, state, opt)
    check_sizes(model_cfg, state, str(src))
    data_cfg = data_config(
        fmt, opt, model_cfg.video_dim, model_cfg.text_dim, str(src), video_sources, clip_len
    )
    try:
        model = build_model(model_cfg)
    except Exception as err:  # e.g. nheads in opt does not divide the hidden size read off the tensors
        raise CheckpointError(f"{src}: its hyper-parameters do not build a {fmt.model} ({err})") from None
    converted = convert_state(fmt, state, model.state_dict(), str(src))  # names and shapes
    check_finite(state, str(src))
    model.load_state_dict(converted, strict=True)

    cfg = Config(data=data_cfg, model=model_cfg)
    features = feature_pipeline(data_cfg)
    provenance = {
        "format": fmt.name,
        "repository": fmt.repository,
        "file": src.name,
        "sha256": file_sha256(src),
        "epoch": release.epoch if isinstance(release.epoch, int) else None,
    }
    save_checkpoint(
        out,
        {
            "model": converted,
            "config": config_to_dict(cfg),
            "features": features,
            "epoch": 0,  # no sadetr training yet; the release's own epoch is in `imported_from`
            "step": 0,
            "metrics": {},
            "imported_from": provenance,
        },
    )
    return {
        "format": fmt.name,
        "model": fmt.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "features": features,
        "imported_from": provenance,
    }
