"""The readings of issue 11 (docs/model.md "Readings"): each switch by hand, and the measured defaults.

eq 6 `gaussian_mode`, eq 4 `position_mode` and `position_scale`, eq 3 `gate_scale`, S_d `anchor_offset`
(model), eq 9 `qmargin_reduction`, eq 8 `quality_balance` and L_ctm's `ctm_scale` (loss); 3.3's noise
rule `dn_center_noise` is tested in test_denoising.py."""

from __future__ import annotations

import math

import pytest
import torch

from sadetr.errors import ConfigError
from sadetr.model import build_model
from sadetr.model.build import build_criterion
from sadetr.model.config import LossConfig, ModelConfig
from sadetr.model.decoder import (
    SpanAwareCrossAttention,
    SpanAwareRefineDecoder,
    SpanBasedEnhanceBlock,
    clip_position_embedding,
    conditional_span_query,
    gaussian_log_mask,
    position_scale,
)
from sadetr.model.losses import (
    clip_sentence_cosine,
    ctm_inter_loss,
    ctm_intra_batch_loss,
    ctm_intra_loss,
    iou_bin_balanced_mean,
    quality_loss,
    quality_margin_loss,
)
from sadetr.model.query_init import DualPathQueryInitializer
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


def test_position_scale_by_hand():
    # video: the fastest channel pair of a centre at 0.5 turns 2π·0.5 = π; clip: positions in clips, a
    # sample of 4 valid clips puts clip 1's centre (0.375) at 1.5 clips, 1.5 radians in the fastest pair.
    vmask = torch.tensor([[True, True, True, True, False], [True, True, False, False, False]])
    assert position_scale(vmask, "video") == 2 * math.pi
    scale = position_scale(vmask, "clip")
    assert torch.equal(scale, torch.tensor([[4.0], [2.0]]))
    x = torch.tensor([[0.5]])
    assert torch.allclose(sine_embedding(x, 4)[0, 0, :2], torch.tensor([0.0, -1.0]), atol=1e-6)
    raw = clip_position_embedding(vmask, 4, "raw", scale)  # (2, 5, 4)
    assert torch.allclose(raw[0, 1, :2], torch.tensor([math.sin(1.5), math.cos(1.5)]), atol=1e-6)
    assert torch.allclose(raw[1, 1, :2], torch.tensor([math.sin(1.5), math.cos(1.5)]), atol=1e-6)  # 2 clips
    # PE(S) of a span (c, w) = (0.5, 0.25) in a 4-clip video: c at 2 clips, w one clip
    pe = span_sine_embedding(torch.tensor([[[0.5, 0.25]]]), 8, scale[:1])  # (1, 1, 8)
    expected = torch.tensor([math.sin(2.0), math.cos(2.0), math.sin(1.0), math.cos(1.0)])
    assert torch.allclose(pe[0, 0, [0, 1, 4, 5]], expected, atol=1e-6)


def test_position_scale_is_applied_in_the_decoder():
    torch.manual_seed(0)
    video_unit = build_model(_cfg()).eval()
    clip_unit = build_model(_cfg(position_scale="clip")).eval()
    clip_unit.load_state_dict(video_unit.state_dict())  # same parameters: the switch adds none
    g = torch.Generator().manual_seed(1)
    video, text = torch.randn(2, 9, 12, generator=g), torch.randn(2, 5, 7, generator=g)
    vmask, tmask = torch.ones(2, 9, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():  # the quality (the span head's last layer starts at 0: spans equal the anchors)
        a = video_unit(video, vmask, text, tmask)["pred_quality"]
        b = clip_unit(video, vmask, text, tmask)["pred_quality"]
        assert torch.equal(a, video_unit(video, vmask, text, tmask)["pred_quality"])
    assert not torch.allclose(a, b, atol=1e-4)


# ------------------------------------------------------------------------------ quality_detach (diagnosis)


def test_quality_detach_trains_the_quality_head_alone():
    """`quality_detach`: the same forward, but the quality (eq 8-9) reaches only the quality head."""
    torch.manual_seed(0)
    plain = build_model(_cfg()).train()
    detached = build_model(_cfg(quality_detach=True)).train()
    detached.load_state_dict(plain.state_dict())  # the switch adds no parameters
    g = torch.Generator().manual_seed(1)
    video, text = torch.randn(2, 9, 12, generator=g), torch.randn(2, 5, 7, generator=g)
    vmask, tmask = torch.ones(2, 9, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)
    targets = [torch.tensor([[0.3, 0.2]]), torch.tensor([[0.6, 0.3]])]
    grads = {}
    for name, model in (("plain", plain), ("detached", detached)):
        torch.manual_seed(2)  # the same dropout and noise draws
        out = model(video, vmask, text, tmask, targets)
        quality = out["pred_quality"].sum() + sum(o["pred_quality"].sum() for o in out["dn_outputs"])
        model.zero_grad()
        quality.backward()
        grads[name] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
        grads[name + "_q"] = quality.detach()
    assert torch.equal(grads["plain_q"], grads["detached_q"])
    assert set(grads["detached"]) == {"decoder.quality_head.weight", "decoder.quality_head.bias"}
    assert any(n.startswith("encoder.") for n in grads["plain"])  # without the switch, it reaches the encoder


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


# ------------------------------------------------------------------------------ eq 4: span_query


def test_conditional_span_query_by_hand():
    pe, spans = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[0.5, 0.25]]])
    # first layer: PE(S) · sigmoid(0) / w = PE(S) · 0.5 / 0.25
    assert torch.allclose(
        conditional_span_query(pe, spans, None, torch.zeros(1, 1, 1)), torch.tensor([2.0, 4.0])
    )
    got = conditional_span_query(
        pe, spans, torch.tensor([[[3.0, -1.0]]]), torch.full((1, 1, 1), math.log(3.0))
    )
    assert torch.allclose(got, torch.tensor([[[9.0, -6.0]]]))  # (1·3, 2·(−1)) · 0.75 / 0.25


def test_conditional_span_query_is_applied_in_the_decoder():
    torch.manual_seed(0)
    dec = SpanAwareRefineDecoder(
        dim=8, nheads=2, ffn_dim=16, dropout=0.0, num_align_points=3, span_query="conditional"
    )
    assert dec.query_scale is not None and dec.width_head is not None
    with torch.no_grad():  # scale 2 everywhere, sigmoid(width) 0.5; MLP_3 at zero keeps the spans
        dec.query_scale.output_layer.weight.zero_()
        dec.query_scale.output_layer.bias.fill_(2.0)
        dec.width_head.output_layer.weight.zero_()
        dec.width_head.output_layer.bias.zero_()
    g = torch.Generator().manual_seed(0)
    content, memory, sentence = (torch.randn(*shape, generator=g) for shape in ((2, 4, 8), (2, 6, 8), (2, 8)))
    spans = torch.rand(2, 4, 2, generator=g) * 0.8 + 0.1
    vmask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    with torch.no_grad():
        outs = dec(content, spans, memory, vmask, sentence)
        memory_pos = clip_position_embedding(vmask, 8, "projected", position_scale(vmask, "video"))
        pe = span_sine_embedding(spans, 8)
        c = content
        for i, layer in enumerate(dec.layers):
            cross = pe * (1.0 if i == 0 else 2.0) * 0.5 / spans[..., 1:2]  # no scale at the first layer
            c = layer(c, spans, dec.span_pos_mlp(pe), memory, memory_pos, vmask, sentence, None, cross)
            assert torch.allclose(outs[i][1], torch.sigmoid(dec.quality_head(c)).squeeze(-1), atol=1e-6)
        plain = SpanAwareRefineDecoder(dim=8, nheads=2, ffn_dim=16, dropout=0.0, num_align_points=3)
        plain.load_state_dict(dec.state_dict(), strict=False)
        assert not torch.allclose(plain(content, spans, memory, vmask, sentence)[0][1], outs[0][1], atol=1e-4)
    extra = {n for n, _ in dec.named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert {n.split(".")[0] for n in extra} == {"query_scale", "width_head"}


# ------------------------------------------------------------------------------ eq 3: gate_scale


def test_gate_scale_by_hand():
    d = 16
    content, pooled = torch.full((1, 1, d), 0.5), torch.ones(1, 1, d)  # ⟨Ĉ, M̂_s⟩ = 8
    unscaled = SpanBasedEnhanceBlock(d, 2, gate_scale=False).gate(content, pooled)
    scaled = SpanBasedEnhanceBlock(d, 2).gate(content, pooled)  # the default (measured, issue 11)
    assert unscaled.item() == pytest.approx(1 / (1 + math.exp(-8.0)))
    assert scaled.item() == pytest.approx(1 / (1 + math.exp(-8.0 / 4.0)))  # / √16


# ------------------------------------------------------------------------------ S_d: anchor_offset


def test_anchor_offset_spreads_the_initial_anchors():
    token = torch.randn(2, 8)
    for offset in (False, True):
        qi = DualPathQueryInitializer(8, 4, "instance", anchor_offset=offset)
        with torch.no_grad():  # MLP_3 outputs 0: the anchors are sigmoid(o_q)
            qi.anchor_mlp.layers[-1].weight.zero_()
            qi.anchor_mlp.layers[-1].bias.zero_()
        anchors, _, init = qi.direct(token)
        centres = [0.125, 0.375, 0.625, 0.875] if offset else [0.5] * 4
        assert anchors[1, :, 0].tolist() == pytest.approx(centres, abs=1e-6)
        assert anchors[1, :, 1].tolist() == pytest.approx([0.5] * 4)
        assert init is anchors


# ------------------------------------------------------------------------------ eq 9: qmargin_reduction


def test_qmargin_reduction_pairs_or_gt_by_hand():
    # 2 groups, 1 GT: layout g·2M + p·M + j -> [pos g0, neg g0, pos g1, neg g1]
    q = torch.tensor([[0.9, 0.3, 0.5, 0.6]])
    meta = {"num_groups": 2, "max_gt": 1, "pos_valid": torch.tensor([[True]])}
    # hinges: max(0.3 - 0.9 + 0.4, 0) = 0, max(0.6 - 0.5 + 0.4, 0) = 0.5
    assert quality_margin_loss(q, meta, 0.4).item() == pytest.approx(0.25)  # mean over 2 pairs
    assert quality_margin_loss(q, meta, 0.4, reduction="gt").item() == pytest.approx(0.5)  # over 1 GT
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
    # eq 8's Σ_j as written (`quality_reduction: sum`): the 6 queries' errors summed, 6 times the mean
    summed = quality_loss(quality, spans, gt, matches, 1.0, reduction="sum")
    assert summed.item() == pytest.approx(0.2 + 0.3 * 4)
    summed_bins = quality_loss(quality, spans, gt, matches, 1.0, "iou_bins", reduction="sum")
    assert summed_bins.item() == pytest.approx(6 * (0.2 + 0.0 + 0.3) / 3)
    with pytest.raises(ValueError, match="quality reduction"):
        quality_loss(quality, spans, gt, matches, 1.0, reduction="total")


# ------------------------------------------------------------------------------ L_ctm: ctm_scale


def _ctm_batch():
    """3 samples, 3 clips: anchors clip 1 (sample 0, saliency 3) and clip 0 (sample 1, saliency 2);
    sample 2 has no positive clip (its clips 1 and 2 are still less salient than its clip 0)."""
    cos = torch.tensor([[0.2, 0.9, -0.1], [0.4, -0.3, 0.6], [0.7, 0.5, 0.1]])
    sal = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
    rel = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    return cos, sal, rel, torch.ones(3, 3, dtype=torch.bool)


def test_ctm_intra_batch_direction_by_hand():
    cos, sal, rel, mask = _ctm_batch()
    # sample 0 at clip 1: itself (0.9) against sample 1's clip 1 (saliency 0 < its anchor's 2);
    # sample 2 has no anchor, so none of its clips is a negative
    loss0 = -(0.9 - math.log(math.exp(0.9) + math.exp(-0.3)))
    # sample 1 at clip 0: itself (0.4) against sample 0's clip 0 (saliency 1 < 3)
    loss1 = -(0.4 - math.log(math.exp(0.2) + math.exp(0.4)))
    assert ctm_intra_batch_loss(cos, sal, rel, mask, 1.0).item() == pytest.approx((loss0 + loss1) / 2)
    # τ divides the cosines
    loss0_t = -(1.8 - math.log(math.exp(1.8) + math.exp(-0.6)))
    loss1_t = -(0.8 - math.log(math.exp(0.4) + math.exp(0.8)))
    assert ctm_intra_batch_loss(cos, sal, rel, mask, 0.5).item() == pytest.approx((loss0_t + loss1_t) / 2)
    # a padded clip is no negative: sample 1's clip 1 padded leaves sample 0 alone (loss 0)
    padded = mask.clone()
    padded[1, 1] = False
    assert ctm_intra_batch_loss(cos, sal, rel, padded, 1.0).item() == pytest.approx(loss1 / 2)
    # strictly less salient only: sample 1's clip 1 at its anchor's saliency (2) leaves sample 0 alone
    tied = sal.clone()
    tied[1, 1] = 2.0
    assert ctm_intra_batch_loss(cos, tied, rel, mask, 1.0).item() == pytest.approx(loss1 / 2)


def test_ctm_scale_univtg_sums_both_directions():
    torch.manual_seed(0)
    clip_emb, sent_emb = torch.randn(3, 3, 4), torch.randn(3, 4)
    _, sal, rel, mask = _ctm_batch()
    mean = ctm_inter_loss(clip_emb, sent_emb, sal, rel, mask, 0.07)
    both = ctm_inter_loss(clip_emb, sent_emb, sal, rel, mask, 0.07, "univtg")
    assert both.item() == pytest.approx(2 * mean.item(), rel=1e-6) and mean.item() > 0
    with pytest.raises(ValueError, match="ctm scale"):
        ctm_inter_loss(clip_emb, sent_emb, sal, rel, mask, 0.07, "sum")
    # the criterion: L_intra gains the batch direction, L_inter doubles, L_local is unchanged
    out = {"ctm": {"clip_emb": clip_emb, "sent_emb": sent_emb}, "video_mask": mask}
    batch = {"saliency": sal, "relevant": rel}
    plain = build_criterion(_cfg(), LossConfig()).loss_ctm(out, batch)
    crit = build_criterion(_cfg(), LossConfig(ctm_scale="univtg"))
    assert crit.ctm_scale == "univtg"
    univtg = crit.loss_ctm(out, batch)
    cos = clip_sentence_cosine(clip_emb, sent_emb)
    batch_dir = ctm_intra_batch_loss(cos, sal, rel, mask, 0.07)
    assert plain["loss_ctm_intra"].item() == pytest.approx(ctm_intra_loss(cos, sal, rel, mask, 0.07).item())
    assert univtg["loss_ctm_intra"].item() == pytest.approx(plain["loss_ctm_intra"].item() + batch_dir.item())
    assert univtg["loss_ctm_inter"].item() == pytest.approx(2 * plain["loss_ctm_inter"].item(), rel=1e-6)
    assert univtg["loss_ctm_local"].item() == pytest.approx(plain["loss_ctm_local"].item())


def test_ctm_intra_negatives_irrelevant_by_hand():
    """`irrelevant`: only clips outside the relevant set are L_intra's negatives, in both directions."""
    cos, sal, rel, mask = _ctm_batch()
    # sample 0's anchor (clip 1): `lower` has clips 0 (saliency 1, relevant) and 2; `irrelevant` only clip 2.
    # sample 1's anchor (clip 0): clips 1 and 2 are both less salient and irrelevant: the same in both.
    lower0 = -(0.9 - math.log(math.exp(0.2) + math.exp(0.9) + math.exp(-0.1)))
    irr0 = -(0.9 - math.log(math.exp(0.9) + math.exp(-0.1)))
    both1 = -(0.4 - math.log(math.exp(0.4) + math.exp(-0.3) + math.exp(0.6)))
    assert ctm_intra_loss(cos, sal, rel, mask, 1.0).item() == pytest.approx((lower0 + both1) / 2)
    assert ctm_intra_loss(cos, sal, rel, mask, 1.0, "irrelevant").item() == pytest.approx((irr0 + both1) / 2)
    # the batch direction: at clip 0, sample 0's clip is relevant, so sample 1 has no negative (loss 0);
    # at clip 1, sample 1's clip is irrelevant: the same negative as `lower`
    batch0 = -(0.9 - math.log(math.exp(0.9) + math.exp(-0.3)))
    irr_batch = ctm_intra_batch_loss(cos, sal, rel, mask, 1.0, "irrelevant").item()
    assert irr_batch == pytest.approx(batch0 / 2)
    with pytest.raises(ValueError, match="ctm intra negatives"):
        ctm_intra_loss(cos, sal, rel, mask, 1.0, "lowest")
    # the criterion passes the switch to L_intra; L_local and L_inter are unchanged
    torch.manual_seed(0)
    clip_emb, sent_emb = torch.randn(3, 3, 4), torch.randn(3, 4)
    out = {"ctm": {"clip_emb": clip_emb, "sent_emb": sent_emb}, "video_mask": mask}
    batch = {"saliency": sal, "relevant": rel}
    plain = build_criterion(_cfg(), LossConfig()).loss_ctm(out, batch)
    irr = build_criterion(_cfg(), LossConfig(ctm_intra_negatives="irrelevant")).loss_ctm(out, batch)
    emb_cos = clip_sentence_cosine(clip_emb, sent_emb)
    assert irr["loss_ctm_intra"].item() == pytest.approx(
        ctm_intra_loss(emb_cos, sal, rel, mask, 0.07, "irrelevant").item()
    )
    assert irr["loss_ctm_intra"].item() != pytest.approx(plain["loss_ctm_intra"].item())
    assert irr["loss_ctm_local"].item() == pytest.approx(plain["loss_ctm_local"].item())
    assert irr["loss_ctm_inter"].item() == pytest.approx(plain["loss_ctm_inter"].item())
    # with `ctm_scale: univtg` the switch reaches L_intra's batch direction too
    both = LossConfig(ctm_intra_negatives="irrelevant", ctm_scale="univtg")
    irr_univtg = build_criterion(_cfg(), both).loss_ctm(out, batch)
    irr_batch_dir = ctm_intra_batch_loss(emb_cos, sal, rel, mask, 0.07, "irrelevant").item()
    assert irr_univtg["loss_ctm_intra"].item() == pytest.approx(irr["loss_ctm_intra"].item() + irr_batch_dir)


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


ALL_ON = dict(gaussian_mode="probs", position_mode="projected", gate_scale=True, anchor_offset=True)


def test_measured_defaults():
    """The readings chosen by the full-size convergence benchmark (docs/model.md "Readings")."""
    assert ModelConfig().gate_scale and LossConfig().quality_balance == "iou_bins"
    assert ModelConfig().position_mode == "projected"
    assert SpanBasedEnhanceBlock(16, 2).gate_div == 4.0
    crit = build_criterion(_cfg(), LossConfig())
    assert crit.quality_balance == "iou_bins"
    assert LossConfig().qmargin_reduction == "gt" and crit.qmargin_reduction == "gt"
    assert LossConfig().quality_reduction == "mean" and crit.quality_reduction == "mean"
    assert LossConfig().ctm_scale == "mean" and crit.ctm_scale == "mean"
    assert LossConfig().ctm_intra_negatives == "lower" and crit.ctm_intra_negatives == "lower"
    w = crit.weight_dict  # UniVTG's 0.1 on its two terms (seventh round); L_local and L_vtc at λ_A
    assert LossConfig().ctm_univtg_weight == 0.1
    assert w["loss_ctm_intra"] == w["loss_ctm_inter"] == pytest.approx(0.1 * LossConfig().lambda_align)
    assert w["loss_ctm_local"] == w["loss_vtc"] == LossConfig().lambda_align
    assert ModelConfig().anchor_grad == "first" and build_model(_cfg()).decoder.anchor_grad == "first"
    assert ModelConfig().span_query == "plain" and build_model(_cfg()).decoder.query_scale is None
    assert not ModelConfig().quality_detach and not build_model(_cfg()).decoder.quality_detach
    assert build_criterion(_cfg(), LossConfig(quality_reduction="sum")).quality_reduction == "sum"


def test_literal_readings_add_no_parameters_and_switches_train():
    """NOTES.md's readings have no W_p and no o_q; the switches add exactly those, and all of them train."""
    names = {n for n, _ in build_model(_cfg(position_mode="raw")).named_parameters()}
    assert not any("pos_proj" in n or "anchor_offset" in n for n in names)
    default = {n for n, _ in build_model(_cfg()).named_parameters()}  # the measured default: projected
    assert default - names == {
        f"decoder.layers.{i}.cross_attn.pos_proj.{p}" for i in range(2) for p in ("weight", "bias")
    }
    torch.manual_seed(0)
    model = build_model(_cfg(**ALL_ON)).train()
    extra = {n for n, _ in model.named_parameters()} - names
    assert extra == {"query_init.anchor_offset"} | {
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
    assert model.query_init.anchor_offset.grad is not None
    assert model.decoder.layers[0].cross_attn.pos_proj.weight.grad is not None


@pytest.mark.parametrize(
    "key, value",
    [
        ("gaussian_mode", "mask"),
        ("position_mode", "learned"),
        ("position_scale", "s"),
        ("dn_center_noise", "gt"),
        ("anchor_grad", "last"),
        ("span_query", "dab"),
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
        ("quality_reduction", "total"),
        ("ctm_scale", "x2"),
        ("ctm_intra_negatives", "lowest"),
    ],
)
def test_bad_loss_reading_is_a_config_error(key, value):
    with pytest.raises(ConfigError, match=f"loss.{key}"):
        build_criterion(_cfg(), LossConfig(**{key: value}))
