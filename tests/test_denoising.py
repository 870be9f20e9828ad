"""Tests of the noise Query group generator (sadetr.model.denoising)."""

from __future__ import annotations

import pytest
import torch

from sadetr.core.errors import ConfigError
from sadetr.model.config import ModelConfig
from sadetr.model.denoising import (
    PAD_ANCHOR,
    SpanDenoiser,
    build_denoiser,
    build_dn_queries,
    dn_attention_mask,
    negative_margin,
    noise_spans,
)
from sadetr.model.span_ops import paired_temporal_iou, span_cxw_to_xx


def _targets() -> list[torch.Tensor]:
    return [torch.tensor([[0.3, 0.2], [0.7, 0.4]]), torch.tensor([[0.5, 0.6], [0.1, 0.2], [0.9, 0.2]])]


def _split(anchors: torch.Tensor, groups: int, max_gt: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = anchors.view(anchors.shape[0], groups, 2, max_gt, 2)  # (B, G, 2, M, 2)
    return a[:, :, 0], a[:, :, 1]  # positive, negative: (B, G, M, 2)


def test_noise_bounds_and_validity() -> None:
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(4000, 2, generator=gen) * torch.tensor([1.0, 0.5]) + torch.tensor([0.0, 0.02])
    gt[:, 0] = gt[:, 0].clamp(gt[:, 1] / 2, 1 - gt[:, 1] / 2)  # valid GT spans inside [0, 1]
    for low, high in [(0.0, 0.2), (0.2, 0.6)]:
        noised = noise_spans(gt, low, high, gen)
        dc = (noised[:, 0] - gt[:, 0]).abs()
        dw = (noised[:, 1] - gt[:, 1]).abs()
        assert (dc <= high * gt[:, 1] / 2 + 1e-6).all()
        assert (dw <= high * gt[:, 1] + 1e-6).all()
        xx = span_cxw_to_xx(noised)
        assert (noised[:, 1] > 0).all()
        assert (xx[:, 0] >= -1e-6).all() and (xx[:, 1] <= 1 + 1e-6).all()


def test_clamp_keeps_span_inside() -> None:
    # GT touching the right end; widening pushes the centre back inside
    gt = torch.tensor([[0.9, 0.2]]).repeat(500, 1)
    noised = noise_spans(gt, 0.5, 0.6, torch.Generator().manual_seed(1))
    assert (span_cxw_to_xx(noised)[:, 1] <= 1 + 1e-6).all()
    wide = noise_spans(torch.tensor([[0.5, 0.9]]).repeat(500, 1), 0.5, 0.6, torch.Generator().manual_seed(2))
    assert (wide[:, 1] <= 1.0).all()
    assert torch.allclose(wide[wide[:, 1] == 1.0, 0], torch.tensor(0.5))


def test_negatives_noisier_than_positives() -> None:
    targets = [torch.tensor([[0.5, 0.3], [0.3, 0.2]]) for _ in range(50)]
    dn = build_dn_queries(targets, 10, 5, 0.2, 0.6, generator=torch.Generator().manual_seed(0))
    pos, neg = _split(dn.anchors, 5, 2)
    gt = torch.stack(targets)[:, None].expand_as(pos)  # (B, G, M, 2)
    rel = lambda a: ((a - gt).abs() / gt[..., 1:2]).sum(-1)  # noqa: E731
    assert rel(neg).mean() > 1.5 * rel(pos).mean()
    iou_pos = paired_temporal_iou(span_cxw_to_xx(pos), span_cxw_to_xx(gt)).mean()
    iou_neg = paired_temporal_iou(span_cxw_to_xx(neg), span_cxw_to_xx(gt)).mean()
    assert iou_pos > iou_neg + 0.1
    # every positive |Δw| stays in the positive band; every negative |Δw| at least σ_p·w (up to clamp)
    assert ((pos - gt)[..., 1].abs() <= 0.2 * gt[..., 1] + 1e-6).all()
    assert ((neg - gt)[..., 1].abs() >= 0.2 * gt[..., 1] - 1e-6).all()


def test_layout_padding_and_meta() -> None:
    dn = build_dn_queries(_targets(), 3, 2, 0.2, 0.6, generator=torch.Generator().manual_seed(0))
    assert dn.anchors.shape == (2, 12, 2)  # G=2, 2M=6
    assert dn.attn_mask.shape == (2, 15, 15)
    assert dn.meta["num_groups"] == 2 and dn.meta["max_gt"] == 3 and dn.meta["has_negatives"] is True
    assert dn.meta["pos_valid"].tolist() == [[True, True, False], [True, True, True]]
    pad = torch.tensor(PAD_ANCHOR)
    for slot in range(12):
        is_pad = slot in (2, 5, 8, 11)
        assert torch.equal(dn.anchors[0, slot], pad) == is_pad
    # slot g*2M + p*M + j of sample 1 is near GT j
    gt = _targets()[1]
    for g in range(2):
        for p in range(2):
            for j in range(3):
                a = dn.anchors[1, g * 6 + p * 3 + j]
                assert (a - gt[j]).abs()[0] <= 0.6 * gt[j, 1] / 2 + 1e-6


def test_layout_without_negatives() -> None:
    dn = build_dn_queries(
        _targets(), 3, 2, 0.2, 0.6, negatives=False, generator=torch.Generator().manual_seed(0)
    )
    assert dn.anchors.shape == (2, 6, 2)  # slot g*M + j
    assert dn.meta["has_negatives"] is False
    gt = _targets()[1]
    for g in range(2):
        for j in range(3):
            assert ((dn.anchors[1, g * 3 + j] - gt[j]).abs() <= 0.2 * gt[j, 1] + 1e-6).all()


def test_attention_mask_entry_by_entry() -> None:
    nq, groups, m = 2, 2, 2
    pos_valid = torch.tensor([[True, False], [True, True]])
    mask = dn_attention_mask(nq, groups, m, True, pos_valid)  # (2, 2+8, 2+8)
    size = 2 * m
    for b in range(2):
        for r in range(nq + groups * size):
            for c in range(nq + groups * size):
                if c < nq:
                    expected = False  # everyone sees the direct queries
                elif r < nq:
                    expected = True  # direct queries never see noise queries
                else:
                    same_group = (r - nq) // size == (c - nq) // size
                    padded_key = not pos_valid[b, (c - nq) % m]
                    expected = (not same_group) or padded_key
                assert bool(mask[b, r, c]) == expected, (b, r, c)
    assert not mask.all(dim=-1).any()  # no fully masked row
    # concrete spot checks: sample 0, slot 1 (g0, pos, j=1) is padding
    assert mask[0, 0, nq + 1] and mask[0, nq, nq + 1] and not mask[0, nq, nq + 2]
    assert mask[1, nq, nq + size] and not mask[1, nq + size, nq + size + 3]


def test_mask_no_nan_in_attention() -> None:
    dn = build_dn_queries(_targets(), 3, 2, 0.2, 0.6)
    logits = torch.randn(2, 15, 15).masked_fill(dn.attn_mask, float("-inf"))
    assert torch.isfinite(logits.softmax(-1)).all()


def test_deterministic_with_generator() -> None:
    a = build_dn_queries(_targets(), 3, 5, 0.2, 0.6, generator=torch.Generator().manual_seed(7))
    b = build_dn_queries(_targets(), 3, 5, 0.2, 0.6, generator=torch.Generator().manual_seed(7))
    c = build_dn_queries(_targets(), 3, 5, 0.2, 0.6, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.anchors, b.anchors)
    assert not torch.equal(a.anchors, c.anchors)


def test_empty_targets() -> None:
    assert build_dn_queries([torch.zeros(0, 2), torch.zeros(0, 2)], 3, 2, 0.2, 0.6) is None
    dn = build_dn_queries([torch.zeros(0, 2), torch.tensor([[0.5, 0.2]])], 3, 2, 0.2, 0.6)
    assert dn.meta["pos_valid"].tolist() == [[False], [True]]
    assert dn.attn_mask[0, :, 3:].all() and not dn.attn_mask[0].all(dim=-1).any()


def test_curriculum_schedule() -> None:
    assert negative_margin(0.2, 0.6, "fixed", 0.1, 0.9) == pytest.approx(0.4)
    assert negative_margin(0.2, 0.6, "curriculum", 0.1, 0.0) == pytest.approx(0.4)
    assert negative_margin(0.2, 0.6, "curriculum", 0.1, 1.0) == pytest.approx(0.1)
    den = SpanDenoiser(5, 0.2, 0.6, schedule="curriculum", min_margin=0.1)
    den.set_progress(0.5)
    assert den.negative_band() == pytest.approx((0.2, 0.45))
    den.set_progress(1.0)
    targets = [torch.tensor([[0.5, 0.3]]) for _ in range(200)]
    dn = den(targets, 2, torch.Generator().manual_seed(0))
    _, neg = _split(dn.anchors, 5, 1)
    assert ((neg - targets[0])[..., 1].abs() <= 0.3 * 0.3 + 1e-6).all()  # band now [0.2, 0.3]
    with pytest.raises(ValueError, match="schedule"):
        SpanDenoiser(5, 0.2, 0.6, schedule="nope")


def test_build_denoiser_reads_config() -> None:
    assert build_denoiser(ModelConfig(use_dn=False)) is None
    den = build_denoiser(ModelConfig(num_dn_groups=3, dn_negatives=False))
    assert den.num_groups == 3 and den.negatives is False
    with pytest.raises(ConfigError, match=r"model\.dn_sigma_p"):
        build_denoiser(ModelConfig(dn_sigma_p=0.7, dn_sigma_n=0.6))
    with pytest.raises(ConfigError, match=r"model\.dn_schedule"):
        build_denoiser(ModelConfig(dn_schedule="linear"))
    with pytest.raises(ConfigError, match=r"model\.dn_sigma_n"):
        build_denoiser(ModelConfig(dn_sigma_n=1.0))
    assert build_denoiser(ModelConfig()).center_scale == "width"
    assert build_denoiser(ModelConfig(dn_center_noise="center")).center_scale == "center"
    with pytest.raises(ConfigError, match=r"model\.dn_center_noise"):
        build_denoiser(ModelConfig(dn_center_noise="gt"))


@pytest.mark.parametrize("center_scale, scale", [("width", 0.2), ("center", 0.8)])
def test_center_noise_scale_by_hand(center_scale: str, scale: float) -> None:
    # The two readings of 3.3's centre rule on GT (c, w) = (0.8, 0.2) with the magnitude pinned to σ = 0.1
    # (low = high): width (DN-DETR) moves the centre by σ·w/2 = 0.01, center (the paper's "σc/2") by
    # σ·c/2 = 0.04; the width moves by σ·w = 0.02 in both. Far from the borders: no clamp.
    gt = torch.tensor([[0.8, 0.2]]).repeat(64, 1)
    noised = noise_spans(gt, 0.1, 0.1, torch.Generator().manual_seed(0), center_scale=center_scale)
    torch.testing.assert_close((noised[:, 0] - 0.8).abs(), torch.full((64,), 0.1 * scale / 2))
    torch.testing.assert_close((noised[:, 1] - 0.2).abs(), torch.full((64,), 0.02))
    with pytest.raises(ValueError, match="center noise scale"):
        noise_spans(gt, 0.1, 0.1, center_scale="gt")


def test_center_noise_draws_the_same_numbers() -> None:
    # Both readings draw the same random numbers in the same order: only the centre's scale differs, so
    # with c = w the two give the same anchors, and the generator ends in the same state.
    targets = [torch.tensor([[0.3, 0.3], [0.5, 0.5]])]
    out = {}
    for center_scale in ("width", "center"):
        gen = torch.Generator().manual_seed(7)
        dn = SpanDenoiser(3, 0.2, 0.6, center_scale=center_scale)(targets, 10, gen)
        out[center_scale] = (dn.anchors, gen.get_state())
    torch.testing.assert_close(out["width"][0], out["center"][0])
    assert torch.equal(out["width"][1], out["center"][1])


def test_noise_has_both_signs() -> None:
    # Δc and Δw have independent random signs (a span is moved left or right, shrunk or widened): over
    # many draws of a GT far from the borders (no clamp), each sign occurs about half the time, for
    # positives and negatives alike, and the two signs are not tied to each other.
    gt = torch.tensor([[0.5, 0.2]]).repeat(4000, 1)
    gen = torch.Generator().manual_seed(3)
    for low, high in [(0.0, 0.2), (0.2, 0.6)]:
        noised = noise_spans(gt, low, high, gen)
        dc, dw = noised[:, 0] - gt[:, 0], noised[:, 1] - gt[:, 1]
        for d in (dc, dw):
            assert 0.45 < (d > 0).float().mean() < 0.55
        assert 0.2 < ((dc > 0) == (dw > 0)).float().mean() < 0.8
