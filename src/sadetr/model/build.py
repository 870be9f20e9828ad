"""`build_model(cfg)` / `build_criterion(model_cfg, loss_cfg)`: the only readers of `ModelConfig` for the
architectures and their criteria (both dispatch on `model.name`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from sadetr.core.errors import ConfigError
from sadetr.model.baselines.losses import build_baseline_criterion
from sadetr.model.baselines.moment_detr import build_moment_detr
from sadetr.model.baselines.qd_detr import build_qd_detr
from sadetr.model.config import LossConfig, ModelConfig
from sadetr.model.decoder import (
    ANCHOR_GRADS,
    CROSS_RESIDUALS,
    GAUSSIAN_MODES,
    POSITION_MODES,
    SELF_ATTN_POSITIONS,
    SpanAwareRefineDecoder,
)
from sadetr.model.denoising import build_denoiser
from sadetr.model.encoder import MultiModalAlignEncoder
from sadetr.model.losses import build_sa_detr_criterion
from sadetr.model.query_init import DualPathQueryInitializer
from sadetr.model.sa_detr import SADETR
from sadetr.model.span_ops import CLIP_TIMES

if TYPE_CHECKING:
    from sadetr.model.losses import SetCriterion


def _check_common(cfg: ModelConfig, *positive: str) -> None:
    """Checks every architecture needs: heads divide d; layer/query counts (and `positive`) are >= 1."""
    if cfg.hidden_dim % cfg.nheads:
        raise ConfigError(f"{cfg.hidden_dim} is not divisible by nheads ({cfg.nheads})", "model.hidden_dim")
    for name in ("num_queries", "n_dec_layers", "n_input_proj", *positive):
        value = getattr(cfg, name)
        if value < 1:
            raise ConfigError(f"must be >= 1, got {value}", f"model.{name}")


def build_sa_detr(cfg: ModelConfig) -> nn.Module:
    """SA-DETR with every component switch of `cfg` (3.2-3.4, Tables 4-8)."""

    for key, value, allowed in (
        ("model.vtc_stage", cfg.vtc_stage, ("before", "after")),
        ("model.ctm_stage", cfg.ctm_stage, ("before", "after")),
        ("model.anchor_init", cfg.anchor_init, ("instance", "learnable")),
        # the decoder's readings: the decoder's own lists of allowed values
        ("model.self_attn_pos", cfg.self_attn_pos, SELF_ATTN_POSITIONS),
        ("model.position_mode", cfg.position_mode, POSITION_MODES),
        ("model.mask_clip_time", cfg.mask_clip_time, CLIP_TIMES),
        ("model.gaussian_mode", cfg.gaussian_mode, GAUSSIAN_MODES),
        ("model.cross_residual", cfg.cross_residual, CROSS_RESIDUALS),
        ("model.anchor_grad", cfg.anchor_grad, ANCHOR_GRADS),
    ):
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(allowed)}, got {value!r}", key)
    _check_common(cfg, "num_align_points")
    if cfg.hidden_dim % 4:
        raise ConfigError("must be a multiple of 4 (sine embedding of c and w)", "model.hidden_dim")

    encoder = MultiModalAlignEncoder(
        video_dim=cfg.video_dim,
        text_dim=cfg.text_dim,
        hidden_dim=cfg.hidden_dim,
        nheads=cfg.nheads,
        ffn_dim=cfg.ffn_dim,
        dropout=cfg.dropout,
        input_dropout=cfg.input_dropout,
        n_input_proj=cfg.n_input_proj,
        n_fusion_layers=cfg.n_fusion_layers,
        n_global_layers=cfg.n_global_layers,
        use_local_enhance=cfg.use_local_enhance,
        use_negative_pass=cfg.use_negative_pass,
        use_vtc=cfg.use_vtc,
        vtc_stage=cfg.vtc_stage,
        use_ctm=cfg.use_ctm,
        ctm_stage=cfg.ctm_stage,
    )
    query_init = DualPathQueryInitializer(cfg.hidden_dim, cfg.num_queries, cfg.anchor_init)
    decoder = SpanAwareRefineDecoder(
        dim=cfg.hidden_dim,
        nheads=cfg.nheads,
        ffn_dim=cfg.ffn_dim,
        dropout=cfg.dropout,
        num_layers=cfg.n_dec_layers,
        use_span_enhance=cfg.use_span_enhance,
        use_gaussian_mask=cfg.use_gaussian_mask,
        gaussian_alpha=cfg.gaussian_alpha,
        num_align_points=cfg.num_align_points,
        gaussian_mode=cfg.gaussian_mode,
        position_mode=cfg.position_mode,
        gate_scale=cfg.gate_scale,
        anchor_grad=cfg.anchor_grad,
        self_attn_pos=cfg.self_attn_pos,
        mask_clip_time=cfg.mask_clip_time,
        cross_residual=cfg.cross_residual,
    )
    try:
        denoiser = build_denoiser(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc), "model.use_dn") from exc
    return SADETR(encoder, query_init, decoder, denoiser)


def build_baseline(cfg: ModelConfig) -> nn.Module:
    """Moment-DETR or QD-DETR (docs/baselines.md); Table 11 switches qd_dynamic_anchor, qd_gaussian_mask."""

    _check_common(cfg, "max_text_len")
    if cfg.qd_activation not in ("relu", "prelu"):
        raise ConfigError(f"must be one of relu, prelu, got {cfg.qd_activation!r}", "model.qd_activation")
    if cfg.qd_t2v_form not in ("public", "normed"):
        raise ConfigError(f"must be one of public, normed, got {cfg.qd_t2v_form!r}", "model.qd_t2v_form")
    if cfg.mask_clip_time not in CLIP_TIMES:
        allowed = ", ".join(CLIP_TIMES)
        raise ConfigError(f"must be one of {allowed}, got {cfg.mask_clip_time!r}", "model.mask_clip_time")
    return build_moment_detr(cfg) if cfg.name == "moment_detr" else build_qd_detr(cfg)


# name -> builder; the baselines (qd_detr, moment_detr) register here.
BUILDERS = {
    "sa_detr": build_sa_detr,
    "qd_detr": build_baseline,
    "moment_detr": build_baseline,
}


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model named by `cfg.name` (sa_detr | qd_detr | moment_detr)."""
    builder = BUILDERS.get(cfg.name)
    if builder is None:
        raise ConfigError(f"unknown model {cfg.name!r}; valid: {', '.join(sorted(BUILDERS))}", "model.name")
    return builder(cfg)


def sa_detr_criterion(model_cfg: ModelConfig, loss_cfg: LossConfig) -> SetCriterion:
    """SA-DETR's criterion (eq 7-10, docs/losses.md)."""

    return build_sa_detr_criterion(model_cfg, loss_cfg)


def baseline_criterion(model_cfg: ModelConfig, loss_cfg: LossConfig) -> SetCriterion:
    """Moment-DETR's or QD-DETR's criterion: class head, their own weights (docs/baselines.md)."""

    return build_baseline_criterion(model_cfg, loss_cfg)


# name -> criterion builder, the same names as BUILDERS.
CRITERIA: dict[str, Callable[[ModelConfig, LossConfig], SetCriterion]] = {
    "sa_detr": sa_detr_criterion,
    "qd_detr": baseline_criterion,
    "moment_detr": baseline_criterion,
}


def build_criterion(model_cfg: ModelConfig, loss_cfg: LossConfig) -> SetCriterion:
    """The criterion of the model named by `model_cfg.name`, weights from `loss_cfg`."""
    builder = CRITERIA.get(model_cfg.name)
    if builder is None:
        valid = ", ".join(sorted(CRITERIA))
        raise ConfigError(f"unknown model {model_cfg.name!r}; valid: {valid}", "model.name")
    return builder(model_cfg, loss_cfg)
