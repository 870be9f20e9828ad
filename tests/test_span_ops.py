"""Tests of the span operations (sadetr.model.span_ops) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from sadetr.model.span_ops import (
    clip_centers,
    clip_times,
    gaussian_mask,
    generalized_temporal_iou,
    inverse_sigmoid,
    paired_generalized_temporal_iou,
    paired_temporal_iou,
    sine_embedding,
    span_cxw_to_xx,
    span_sine_embedding,
    span_xx_to_cxw,
    temporal_align,
    temporal_iou,
)


def test_cxw_xx_round_trip_and_values() -> None:
    assert torch.allclose(span_cxw_to_xx(torch.tensor([0.5, 0.2])), torch.tensor([0.4, 0.6]))
    assert torch.allclose(span_xx_to_cxw(torch.tensor([0.1, 0.7])), torch.tensor([0.4, 0.6]))
    spans = torch.rand(3, 4, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(span_xx_to_cxw(span_cxw_to_xx(spans)), spans, atol=1e-6)


def test_temporal_iou_hand_values() -> None:
    a = torch.tensor([[0.0, 0.4], [0.2, 0.4]])
    b = torch.tensor([[0.2, 0.6], [0.5, 0.7], [0.0, 1.0]])
    iou, union = temporal_iou(a, b)
    expected = torch.tensor([[0.2 / 0.6, 0.0, 0.4], [0.5, 0.0, 0.2]])
    assert torch.allclose(iou, expected, atol=1e-6)
    assert torch.allclose(union, torch.tensor([[0.6, 0.6, 1.0], [0.4, 0.4, 1.0]]), atol=1e-6)
    assert torch.allclose(temporal_iou(a, a)[0].diagonal(), torch.ones(2))


def test_generalized_iou_hand_values() -> None:
    a = torch.tensor([[0.0, 0.2], [0.0, 0.4]])
    b = torch.tensor([[0.6, 1.0], [0.2, 0.6]])
    giou = generalized_temporal_iou(a, b)
    # [0,0.2] vs [0.6,1]: iou 0, enclosing 1, union 0.6 -> -0.4; [0,0.2] vs [0.2,0.6]: 0 - (0.6-0.6)/0.6 = 0
    # [0,0.4] vs [0.6,1]: 0 - (1-0.8)/1 = -0.2; [0,0.4] vs [0.2,0.6]: 1/3 (enclosing = union)
    expected = torch.tensor([[-0.4, 0.0], [-0.2, 1 / 3]])
    assert torch.allclose(giou, expected, atol=1e-6)


def test_paired_versions_match_pairwise_diagonal() -> None:
    gen = torch.Generator().manual_seed(1)
    s1 = span_cxw_to_xx(torch.rand(6, 2, generator=gen) * 0.5 + 0.2)
    s2 = span_cxw_to_xx(torch.rand(6, 2, generator=gen) * 0.5 + 0.2)
    assert torch.allclose(paired_temporal_iou(s1, s2), temporal_iou(s1, s2)[0].diagonal(), atol=1e-6)
    assert torch.allclose(
        paired_generalized_temporal_iou(s1, s2), generalized_temporal_iou(s1, s2).diagonal()
    )
    assert paired_generalized_temporal_iou(torch.tensor([0.0, 0.2]), torch.tensor([0.6, 1.0])).item() == (
        pytest.approx(-0.4)
    )


def test_clip_centers_use_own_length() -> None:
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    expected = torch.tensor([[0.25, 0.75, 1.25, 1.75], [0.125, 0.375, 0.625, 0.875]])
    assert torch.allclose(clip_centers(mask), expected)


def test_gaussian_mask_eq5_values() -> None:
    mask = torch.tensor([[True, True, False, False]])  # L_v = 2: centres 0.25, 0.75
    spans = torch.tensor([[[0.25, 0.5], [0.5, 1.0]]])
    g = gaussian_mask(spans, mask, alpha=2.0, clip_time="center")
    expected = torch.tensor(
        [
            [
                [1.0, math.exp(-2 * 0.5**2 / 0.25), 0.0, 0.0],
                [math.exp(-2 * 0.0625), math.exp(-2 * 0.0625), 0.0, 0.0],
            ]
        ]
    )
    assert torch.allclose(g, expected, atol=1e-6)


def test_gaussian_mask_eq5_as_written_uses_i_over_lv() -> None:
    # eq 5: t_i = i / L_v for i = 1..L_v (the end of clip i): L_v = 4 -> 0.25, 0.5, 0.75, 1.0
    mask = torch.tensor([[True, True, True, True, False]])
    spans = torch.tensor([[[0.5, 0.5]]])  # c = 0.5, w = 0.5, alpha = 2: exp(-8 (t - 0.5)^2)
    g = gaussian_mask(spans, mask, alpha=2.0)  # the default is eq 5 as written
    expected = torch.tensor([[[math.exp(-0.5), 1.0, math.exp(-0.5), math.exp(-2.0), 0.0]]])
    assert torch.allclose(g, expected, atol=1e-6)
    assert torch.allclose(clip_times(mask, "end")[0, :4], torch.tensor([0.25, 0.5, 0.75, 1.0]))
    assert torch.allclose(clip_times(mask, "center")[0, :4], torch.tensor([0.125, 0.375, 0.625, 0.875]))


def _align_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    feats = torch.tensor([[10.0, 20.0, 30.0, 999.0], [1.0, 2.0, 3.0, 4.0]])[..., None]  # (B=2, L=4, D=1)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])  # L_v = 3 and 4
    return feats, mask


def test_temporal_align_interpolation() -> None:
    feats, mask = _align_inputs()
    whole = torch.tensor([[[0.5, 1.0]], [[0.5, 1.0]]])  # (B, Q=1, 2)
    # N_s = 3 on L_v = 3: points 1/6, 1/2, 5/6 fall exactly on the clip centres
    out = temporal_align(feats, whole, mask, 3)  # (B, Q, N_s, D)
    assert torch.allclose(out[0, 0, :, 0], torch.tensor([10.0, 20.0, 30.0]))
    # N_s = 2: points 0.25, 0.75 -> fractional index 0.25, 1.75 (L_v = 3) and 0.5, 2.5 (L_v = 4)
    out = temporal_align(feats, whole, mask, 2)
    assert torch.allclose(out[0, 0, :, 0], torch.tensor([12.5, 27.5]))
    assert torch.allclose(out[1, 0, :, 0], torch.tensor([1.5, 3.5]))


def test_temporal_align_clamps_and_never_reads_padding() -> None:
    feats, mask = _align_inputs()
    spans = torch.tensor([[[0.95, 0.1], [0.02, 0.04]], [[0.95, 0.1], [0.02, 0.04]]])
    out = temporal_align(feats, spans, mask, 1)[..., 0, 0]  # (B, Q)
    assert torch.allclose(out, torch.tensor([[30.0, 10.0], [4.0, 1.0]]))
    changed = feats.clone()
    changed[0, 3] = -5.0
    assert torch.equal(temporal_align(changed, spans, mask, 4), temporal_align(feats, spans, mask, 4))
    # a predicted span may end past the video (c + w/2 > 1): its points past the last clip centre read
    # the last valid clip, never the padding. Span (1.0, 0.6) on L_v = 3: points 0.8, 1.0, 1.2 ->
    # fractional indices 1.9, 2.5, 3.1 -> 29, 30, 30 (index 3 would be padding of sample 0)
    beyond = torch.tensor([[[1.0, 0.6]], [[1.0, 0.6]]])
    assert torch.allclose(
        temporal_align(feats, beyond, mask, 3)[0, 0, :, 0], torch.tensor([29.0, 30.0, 30.0])
    )
    assert torch.equal(temporal_align(changed, beyond, mask, 3), temporal_align(feats, beyond, mask, 3))


def test_sine_embedding_values() -> None:
    emb = sine_embedding(torch.tensor([0.0, 0.25]), 4)  # freqs 1, 100
    assert torch.allclose(emb[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    a = 2 * math.pi * 0.25
    assert torch.allclose(
        emb[1], torch.tensor([math.sin(a), math.cos(a), math.sin(a / 100), math.cos(a / 100)]), atol=1e-6
    )
    pe = span_sine_embedding(torch.tensor([[0.25, 0.0]]), 8)
    assert torch.allclose(pe[0, :4], emb[1]) and torch.allclose(pe[0, 4:], emb[0])
    with pytest.raises(ValueError, match="even"):
        sine_embedding(torch.zeros(1), 3)


def test_inverse_sigmoid() -> None:
    x = torch.tensor([0.01, 0.3, 0.5, 0.9])
    assert torch.allclose(inverse_sigmoid(x).sigmoid(), x, atol=1e-6)
    assert torch.isfinite(inverse_sigmoid(torch.tensor([0.0, 1.0]))).all()
