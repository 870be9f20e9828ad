"""The reading switches (docs/readings.md), each by hand: eq 6 `gaussian_mode`, eq 4 `position_mode`,
eq 3 `gate_scale`, 3.4's `anchor_grad` (model), eq 9 `qmargin_reduction`, eq 8 `quality_balance` and
L_ctm's `ctm_univtg_weight` (loss). Eq 1 `self_attn_pos`, eq 5 `mask_clip_time` and eq 6 `cross_residual`
are in test_decoder.py, 3.3's noise rule `dn_center_noise` in test_denoising.py, L_noise's
`noise_reduction` in test_losses.py; the recipes that choose them in test_recipes.py."""

from __future__ import annotations

import math

import pytest
import torch

from sadetr.core.errors import ConfigError
from sadetr.model import build_model
from sadetr.model.build import build_criterion
from sadetr.model.config import LossConfig, ModelConfig
from sadetr.model.decoder import (
    SpanAwareCrossAttention,
    SpanAwareRefineDecoder,
    SpanBasedEnhanceBlock,
    clip_position_embedding,
    gaussian_log_mask,
)
from sadetr.model.losses import (
    iou_bin_balanced_mean,
    quality_loss,
    quality_margin_loss,
)
from sadetr.model.span_ops import gaussian_mask, sine_embedding, span_sine_embedding

# ------------------------------------------------------------------------------ eq 6: gaussian_mode


def _zero_(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


def test_probs_mode_by_hand_zero_logits():
    # all logits 0: `logits` mode multiplies them by the mask (still 0: uniform attention); `probs` adds
    # log m, so the attention is m / Σ m = [1, 1/2, 1/4, 1/4] / 2
    mask = torch.tensor([[[1.0, 0.5, 0.25, 0.25]]])  # (B, Q, L)
    args = (torch.zeros(1, 1, 4), torch.zeros(1, 1, 4), torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
    vmask = torch.ones(1, 4, dtype=torch.bool)
    for mode, modulation, expected in (
        ("logits", mask, [0.25, 0.25, 0.25, 0.25]),
        ("probs", mask.log(), [0.5, 0.25, 0.125, 0.125]),
    ):
        ca = SpanAwareCrossAttention(4, 1, dropout=0.0, gaussian_mode=mode)
        _zero_(ca)
        attn = ca.attention_weights(*args, vmask, modulation)  # (B, h, Q, L)
        assert attn[0, 0, 0].tolist() == pytest.approx(expected)


def test_probs_mode_equals_probabilities_times_mask_renormalised():
    torch.manual_seed(0)
    plain = SpanAwareCrossAttention(8, 2, dropout=0.0)
    probs = SpanAwareCrossAttention(8, 2, dropout=0.0, gaussian_mode="probs")
    probs.load_state_dict(plain.state_dict())
    content, qpos = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    memory, mpos = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    vmask = torch.ones(2, 5, dtype=torch.bool)
    vmask[1, 3:] = False
    spans = torch.tensor([[[0.3, 0.2], [0.5, 0.9], [0.9, 0.1]], [[0.2, 0.3], [0.6, 0.5], [0.5, 0.05]]])
    mask = gaussian_mask(spans, vmask, alpha=2.0)  # (B, Q, L)
    p = plain.attention_weights(content, qpos, memory, mpos, vmask, None)  # (B, h, Q, L)
    expected = p * mask[:, None]
    expected = expected / expected.sum(-1, keepdim=True)
    got = probs.attention_weights(content, qpos, memory, mpos, vmask, gaussian_log_mask(spans, vmask, 2.0))
    assert torch.allclose(got, expected, atol=1e-6)
    assert (got[1, :, :, 3:] == 0).all()  # padded clips


def test_log_mask_is_the_log_of_eq5_without_underflow():
    vmask = torch.ones(1, 6, dtype=torch.bool)
    spans = torch.tensor([[[0.5, 0.4], [0.05, 0.001]]])  # the second one underflows eq 5 to 0 far away
    log_m = gaussian_log_mask(spans, vmask, 2.0)
    m = gaussian_mask(spans, vmask, 2.0)
    assert torch.allclose(log_m[0, 0].exp(), m[0, 0], atol=1e-7)
    assert (m[0, 1, 1:] == 0).all() and torch.isfinite(log_m).all()


# ------------------------------------------------------------------------------ eq 4: position_mode


def test_clip_position_embedding_layouts():
    vmask = torch.tensor([[True, True, True, True, False]])  # L_v = 4
    centres = torch.tensor([[0.125, 0.375, 0.625, 0.875, 1.125]])
    raw = clip_position_embedding(vmask, 16, "raw")
    assert torch.allclose(raw, sine_embedding(centres, 16))
    proj = clip_position_embedding(vmask, 16, "projected")
    # clip i is the span (t_i, 1/L_v) in PE(S)'s layout: its centre channels are those of any span at t_i
    spans = torch.stack([centres, torch.full_like(centres, 0.25)], dim=-1)
    assert torch.allclose(proj, span_sine_embedding(spans, 16))
    span_at_clip1 = span_sine_embedding(torch.tensor([0.375, 0.7]), 16)
    assert torch.allclose(proj[0, 1, :8], span_at_clip1[:8])


def test_position_projection_is_applied():
    torch.manual_seed(0)
    plain = SpanAwareCrossAttention(8, 2, dropout=0.0)
    proj = SpanAwareCrossAttention(8, 2, dropout=0.0, position_proj=True)
    proj.load_state_dict(plain.state_dict(), strict=False)
    x = (torch.randn(1, 3, 8), torch.randn(1, 3, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8))
    vmask = torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        proj.pos_proj.weight.copy_(2 * torch.eye(8))
        proj.pos_proj.bias.zero_()
    # W_p = 2 I: the same as feeding 2 P_Mv without the projection
    expected = plain.attention_weights(x[0], x[1], x[2], 2 * x[3], vmask, None)
    assert torch.allclose(proj.attention_weights(*x, vmask, None), expected, atol=1e-6)
    assert not torch.allclose(plain.attention_weights(*x, vmask, None), expected, atol=1e-3)


# ------------------------------------------------------------------------------ 3.4: anchor_grad


@pytest.mark.parametrize("mode, grad_1, grad_2", [("none", 0.0, 0.0), ("first", 1.0, 0.0), ("all", 1.0, 1.0)])
def test_anchor_grad_by_hand(mode, grad_1, grad_2):
    # With MLP_3's last layer at zero every layer returns its input anchor and the content path carries
    # no gradient to the spans: d S^i / d S_d is 1 where the anchor's path is open, 0 where it is cut.
    torch.manual_seed(0)
    dec = SpanAwareRefineDecoder(
        dim=8, nheads=2, ffn_dim=16, dropout=0.0, num_align_points=3, anchor_grad=mode
    )
    g = torch.Generator().manual_seed(0)
    content, memory, sentence = (torch.randn(*shape, generator=g) for shape in ((2, 4, 8), (2, 6, 8), (2, 8)))
    s0 = (torch.rand(2, 4, 2, generator=g) * 0.8 + 0.1).requires_grad_(True)
    vmask = torch.ones(2, 6, dtype=torch.bool)
    outs = dec(content, s0, memory, vmask, sentence)
    for (spans, _), expected in zip(outs, (grad_1, grad_2)):
        assert torch.allclose(spans, s0, atol=1e-6)
        (grad,) = torch.autograd.grad(spans.sum(), s0, retain_graph=True, allow_unused=True)
        grad = torch.zeros_like(s0) if grad is None else grad
        assert torch.allclose(grad, torch.full_like(s0, expected), atol=1e-5)
    # The quality reads the content, which reads S_d (PE(S), the enhance block, the mask) unless it is cut.
    (gq,) = torch.autograd.grad(outs[0][1].sum(), s0, allow_unused=True)
    assert (gq is not None and gq.abs().sum() > 0) == (mode != "none")


# ------------------------------------------------------------------------------ eq 3: gate_scale


def test_gate_scale_by_hand():
    d = 16
    content, pooled = torch.full((1, 1, d), 0.5), torch.ones(1, 1, d)  # ⟨Ĉ, M̂_s⟩ = 8
    unscaled = SpanBasedEnhanceBlock(d, 2).gate(content, pooled)  # eq 3 as written, the default
    scaled = SpanBasedEnhanceBlock(d, 2, gate_scale=True).gate(content, pooled)  # the tuned recipe's
    assert unscaled.item() == pytest.approx(1 / (1 + math.exp(-8.0)))
    assert scaled.item() == pytest.approx(1 / (1 + math.exp(-8.0 / 4.0)))  # / √16


# ------------------------------------------------------------------------------ eq 9: qmargin_reduction


def test_qmargin_reduction_pairs_or_gt_by_hand():
    # 2 groups, 1 GT: layout g·2M + p·M + j -> [pos g0, neg g0, pos g1, neg g1]
    q = torch.tensor([[0.9, 0.3, 0.5, 0.6]])
    meta = {"num_groups": 2, "max_gt": 1, "pos_valid": torch.tensor([[True]])}
    # hinges: max(0.3 - 0.9 + 0.4, 0) = 0, max(0.6 - 0.5 + 0.4, 0) = 0.5
    assert quality_margin_loss(q, meta, 0.4, reduction="pairs").item() == pytest.approx(0.25)  # 2 pairs
    assert quality_margin_loss(q, meta, 0.4).item() == pytest.approx(0.5)  # 1/N_gt as written: over 1 GT
    assert quality_margin_loss(q, meta, 0.4, num_pairs=4.0, reduction="gt").item() == pytest.approx(0.25)


# ------------------------------------------------------------------------------ eq 8: quality_balance


def test_iou_bin_balanced_mean_by_hand():
    target = torch.tensor([[0.9, 0.5, 0.1, 0.0, 0.2]])
    errors = torch.tensor([[0.1, 0.4, 0.2, 0.6, 0.1]])
    # bins: {0.9} -> 0.1; {0.5} -> 0.4; {0.1, 0.0, 0.2} -> 0.3; (0.1 + 0.4 + 0.3) / 3
    assert iou_bin_balanced_mean(errors, target).item() == pytest.approx(0.8 / 3)
    # an empty bin adds 0 and the divisor stays 3 (BAM-DETR)
    assert iou_bin_balanced_mean(errors[:, 2:], target[:, 2:]).item() == pytest.approx(0.3 / 3)


def test_quality_loss_balanced_on_predictions():
    spans = torch.tensor([[[0.5, 0.4], [0.5, 0.2], [0.1, 0.1]]])  # IoU with GT [0.3, 0.7]: 1, 0.5, 0
    gt = [torch.tensor([[0.5, 0.4]])]
    quality = torch.tensor([[0.8, 0.5, 0.3]])  # errors 0.2, 0, 0.3
    matches = [(torch.tensor([0]), torch.tensor([0]))]
    assert quality_loss(quality, spans, gt, matches, 1.0).item() == pytest.approx(0.5 / 3)
    assert quality_loss(quality, spans, gt, matches, 1.0, "iou_bins").item() == pytest.approx(0.5 / 3)
    # three low-IoU queries more: the mean is dominated by them, the bins keep each a third
    spans = torch.cat([spans, torch.tensor([[[0.1, 0.1], [0.9, 0.1], [0.95, 0.05]]])], dim=1)
    quality = torch.tensor([[0.8, 0.5, 0.3, 0.3, 0.3, 0.3]])
    mean = quality_loss(quality, spans, gt, matches, 1.0)
    binned = quality_loss(quality, spans, gt, matches, 1.0, "iou_bins")
    assert mean.item() == pytest.approx((0.2 + 0.3 * 4) / 6)
    assert binned.item() == pytest.approx((0.2 + 0.0 + 0.3) / 3)
    with pytest.raises(ValueError, match="quality balance"):
        quality_loss(quality, spans, gt, matches, 1.0, "bins")


# ------------------------------------------------------------------------------ L_ctm: ctm_univtg_weight


def test_ctm_univtg_weight_scales_intra_and_inter_only():
    """`ctm_univtg_weight` multiplies λ_A for L_intra and L_inter; L_local and L_vtc keep λ_A."""
    crit = build_criterion(_cfg(), LossConfig(lambda_align=2.0, ctm_univtg_weight=0.1))
    w = crit.weight_dict
    assert w["loss_ctm_intra"] == pytest.approx(0.2) and w["loss_ctm_inter"] == pytest.approx(0.2)
    assert w["loss_ctm_local"] == 2.0 and w["loss_vtc"] == 2.0
    plain = build_criterion(_cfg(), LossConfig(lambda_align=2.0, ctm_univtg_weight=1.0)).weight_dict
    assert plain["loss_ctm_intra"] == plain["loss_ctm_inter"] == plain["loss_ctm_local"] == 2.0


# ------------------------------------------------------------------------------ the model with the switches


def _cfg(**kw) -> ModelConfig:
    base = dict(
        video_dim=12, text_dim=7, hidden_dim=16, nheads=2, ffn_dim=32, num_queries=4, num_align_points=3,
        dropout=0.0, input_dropout=0.0, num_dn_groups=2,
    )  # fmt: skip
    return ModelConfig(**{**base, **kw})


ALL_ON = dict(gaussian_mode="probs", position_mode="projected", gate_scale=True)


def test_literal_readings_add_no_parameters_and_switches_train():
    """The paper's readings have no W_p; `position_mode: projected` adds exactly that, and it trains."""
    names = {n for n, _ in build_model(_cfg()).named_parameters()}
    assert not any("pos_proj" in n for n in names)
    torch.manual_seed(0)
    model = build_model(_cfg(**ALL_ON)).train()
    extra = {n for n, _ in model.named_parameters()} - names
    assert extra == {
        f"decoder.layers.{i}.cross_attn.pos_proj.{p}" for i in range(2) for p in ("weight", "bias")
    }
    g = torch.Generator().manual_seed(0)
    video, text = torch.randn(3, 9, 12, generator=g), torch.randn(3, 5, 7, generator=g)
    vmask, tmask = torch.ones(3, 9, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool)
    targets = [torch.tensor([[0.3, 0.2]]), torch.tensor([[0.5, 0.4], [0.1, 0.1]]), torch.tensor([[0.7, 0.2]])]
    out = model(video, vmask, text, tmask, targets)
    crit = build_criterion(
        model_cfg=_cfg(**ALL_ON), loss_cfg=LossConfig(quality_balance="iou_bins", qmargin_reduction="gt")
    )
    batch = {
        "spans": targets,
        "saliency": torch.rand(3, 9, generator=g) * 4,
        "relevant": torch.rand(3, 9, generator=g) > 0.5,
        "saliency_pos_idx": torch.zeros(3, 2, dtype=torch.long),
        "saliency_neg_idx": torch.ones(3, 2, dtype=torch.long),
        "vid_index": torch.arange(3),
    }
    losses = crit(out, batch)
    total = crit.total(losses)
    assert torch.isfinite(total)
    total.backward()
    assert model.decoder.layers[0].cross_attn.pos_proj.weight.grad is not None


@pytest.mark.parametrize(
    "key, value",
    [
        ("gaussian_mode", "mask"),
        ("position_mode", "learned"),
        ("dn_center_noise", "gt"),
        ("anchor_grad", "last"),
        ("self_attn_pos", "inside"),
        ("mask_clip_time", "start"),
        ("cross_residual", "none"),
    ],
)
def test_bad_model_reading_is_a_config_error(key, value):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        build_model(_cfg(**{key: value}))


@pytest.mark.parametrize(
    "key, value",
    [
        ("quality_balance", "bins"),
        ("qmargin_reduction", "sum"),
        ("noise_reduction", "mean"),
    ],
)
def test_bad_loss_reading_is_a_config_error(key, value):
    with pytest.raises(ConfigError, match=f"loss.{key}"):
        build_criterion(_cfg(), LossConfig(**{key: value}))
