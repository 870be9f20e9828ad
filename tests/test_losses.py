"""Tests of the SA-DETR losses (sadetr.model.losses) on small hand-computable cases."""

from __future__ import annotations

import math

import pytest
import torch

from sadetr.model.build import build_criterion
from sadetr.model.config import LossConfig, ModelConfig
from sadetr.model.losses import (
    ctm_inter_loss,
    ctm_intra_loss,
    ctm_local_loss,
    quality_loss,
    quality_margin_loss,
    quality_targets,
    saliency_margin_loss,
    saliency_neg_loss,
    saliency_rank_loss,
    span_losses,
    vtc_loss,
)

GT = [torch.tensor([[0.5, 0.4]]), torch.tensor([[0.2, 0.2], [0.7, 0.3]])]
NQ, L, D, GROUPS = 4, 5, 8, 2


def _fake_out(gen: torch.Generator, dn: bool = True, requires_grad: bool = False) -> dict:
    """A model output dict as in CONTRACTS.md (2 decoder layers, B=2, Nq=4, L=5, G=2 noise groups)."""

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).requires_grad_(requires_grad)

    def spans() -> torch.Tensor:
        return (torch.rand(2, NQ, 2, generator=gen) * 0.5 + 0.25).requires_grad_(requires_grad)

    video_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = {
        "pred_spans": spans(),
        "pred_quality": rand(2, NQ),
        "aux_outputs": [{"pred_spans": spans(), "pred_quality": rand(2, NQ)}],
        "init_spans": spans(),
        "dn_outputs": None,
        "dn_meta": None,
        "saliency_scores": torch.randn(2, L, generator=gen),
        "saliency_scores_neg": torch.randn(2, L, generator=gen),
        "video_mask": video_mask,
        "vtc": {
            "video_emb": torch.randn(2, D, generator=gen),
            "text_emb": torch.randn(2, D, generator=gen),
            "logit_scale": torch.tensor(math.log(1 / 0.07)),
        },
        "ctm": {
            "clip_emb": torch.randn(2, L, D, generator=gen),
            "sent_emb": torch.randn(2, D, generator=gen),
        },
    }
    if dn:
        n_dn = GROUPS * 2 * 2  # M = 2
        out["dn_outputs"] = [
            {"pred_spans": torch.rand(2, n_dn, 2, generator=gen) * 0.5 + 0.25, "pred_quality": rand(2, n_dn)}
            for _ in range(2)
        ]
        out["dn_meta"] = {
            "num_groups": GROUPS,
            "max_gt": 2,
            "pos_valid": torch.tensor([[True, False], [True, True]]),
            "has_negatives": True,
        }
    return out


def _batch() -> dict:
    return {
        "spans": [t.clone() for t in GT],
        "saliency": torch.tensor([[0.0, 4.0, 8.0, 2.0, 0.0], [1.0, 1.0, 0.0, 0.0, 0.0]]),
        "relevant": torch.tensor([[False, True, True, True, False], [True, True, False, False, False]]),
        "saliency_pos_idx": torch.tensor([[2, 1], [0, 1]]),
        "saliency_neg_idx": torch.tensor([[0, 4], [2, 2]]),
        "vid_index": torch.tensor([0, 1]),
    }


# ----------------------------------------------------------------------------------------------- L_M


def test_span_losses_hand_values() -> None:
    # pred [0.4, 0.6] vs GT [0.3, 0.7]: L1 mean over (c, w) = 0.1; IoU = 0.5 = gIoU (enclosing = union)
    l1, giou = span_losses(torch.tensor([[0.5, 0.2]]), torch.tensor([[0.5, 0.4]]), 1)
    assert l1.item() == pytest.approx(0.1)
    assert giou.item() == pytest.approx(0.5)
    # disjoint: [0.0, 0.2] vs [0.6, 1.0]: gIoU = -0.4 -> loss 1.4; normalised by 2 GT spans
    l1, giou = span_losses(torch.tensor([[0.1, 0.2]]), torch.tensor([[0.8, 0.4]]), 2)
    assert l1.item() == pytest.approx((0.7 + 0.2) / 2 / 2)
    assert giou.item() == pytest.approx(1.4 / 2)


def test_perfect_prediction_gives_zero_moment_loss() -> None:
    out = _fake_out(torch.Generator().manual_seed(0))
    for layer in [out, *out["aux_outputs"]]:
        layer["pred_spans"] = torch.tensor([[[0.9, 0.1], [0.5, 0.4], [0.1, 0.1], [0.3, 0.1]],
                                            [[0.7, 0.3], [0.5, 0.1], [0.2, 0.2], [0.9, 0.1]]])  # fmt: skip
    out["init_spans"] = out["pred_spans"].clone()
    # positive noise slots g*2M + j hold the GT exactly; negatives and padding hold anything
    for d in out["dn_outputs"]:
        for g in range(GROUPS):
            d["pred_spans"][0, g * 4 + 0] = GT[0][0]
            d["pred_spans"][1, g * 4 : g * 4 + 2] = GT[1]
    crit = build_criterion(ModelConfig(), LossConfig())
    losses = crit(out, _batch())
    for k in ["loss_l1", "loss_giou", "loss_l1_0", "loss_giou_0", "loss_init_l1", "loss_init_giou"]:
        assert losses[k].item() == pytest.approx(0.0, abs=1e-6), k
    for k in ["loss_dn_l1", "loss_dn_giou", "loss_dn_l1_0", "loss_dn_giou_0"]:
        assert losses[k].item() == pytest.approx(0.0, abs=1e-6), k


def test_dn_loss_value_and_gradient_only_to_positives() -> None:
    out = _fake_out(torch.Generator().manual_seed(1))
    dn_spans = out["dn_outputs"][-1]["pred_spans"]
    for g in range(GROUPS):
        dn_spans[0, g * 4] = GT[0][0]
        dn_spans[1, g * 4 : g * 4 + 2] = GT[1]
    dn_spans[0, 4] = torch.tensor([0.5, 0.2])  # group 1, positive, GT 0: L1 0.1, gIoU loss 0.5
    dn_spans.requires_grad_(True)
    # L_noise "in the same way" as eq 7: the sum over every noise group divided by the 3 GT spans (`gt`)
    pairs = build_criterion(ModelConfig(), LossConfig(noise_reduction="pairs"))(out, _batch())
    assert pairs["loss_dn_l1"].item() == pytest.approx(0.1 / (GROUPS * 3))  # DN-DETR: the (group, GT) mean
    crit = build_criterion(ModelConfig(), LossConfig())
    losses = crit(out, _batch())
    assert losses["loss_dn_l1"].item() == pytest.approx(0.1 / 3)
    assert losses["loss_dn_giou"].item() == pytest.approx(0.5 / 3)
    (losses["loss_dn_l1"] + losses["loss_dn_giou"]).backward()
    grad_rows = dn_spans.grad.abs().sum(-1)  # (B, N_dn)
    positive = torch.zeros(2, 8, dtype=torch.bool)  # slots g*2M + j with a real GT
    positive[0, [0, 4]] = True
    positive[1, [0, 1, 4, 5]] = True
    assert (grad_rows[~positive] == 0).all()  # negatives and padding get no moment gradient
    assert grad_rows[0, 4] > 0.01  # the imperfect positive does


# ----------------------------------------------------------------------------------------------- L_Q


def test_quality_loss_hand_value() -> None:
    spans = torch.tensor([[[0.5, 0.2], [0.1, 0.1]]])  # IoU with GT [0.3, 0.7]: 0.5 and 0
    tgt = [torch.tensor([[0.5, 0.4]])]
    matches = [(torch.tensor([0]), torch.tensor([0]))]
    exact = quality_loss(torch.tensor([[0.5, 0.0]]), spans, tgt, matches, 10.0)
    assert exact.item() == pytest.approx(0.0, abs=1e-6)
    loss = quality_loss(torch.tensor([[0.7, 0.2]]), spans, tgt, matches, 10.0)
    assert loss.item() == pytest.approx((10 * 0.2 + 1 * 0.2) / 2)
    # without GT the target is 0
    empty = quality_loss(
        torch.tensor([[0.7, 0.2]]), spans, [torch.zeros(0, 2)], [(torch.zeros(0).long(),) * 2], 10
    )
    assert empty.item() == pytest.approx(0.45)


def test_quality_target_is_max_iou_over_all_gt() -> None:
    # Eq 8: the target is the best IoU over ALL GT spans of the sample, not the matched or the mean one.
    # Prediction [0.3, 0.7]; GT [0.3, 0.7] gives IoU 1, GT [0.0, 0.2] gives 0 (mean would be 0.5).
    spans = torch.tensor([[[0.5, 0.4]]])
    tgt = [torch.tensor([[0.1, 0.2], [0.5, 0.4]])]
    assert quality_targets(spans, tgt).tolist() == [[pytest.approx(1.0)]]
    # matched to the non-overlapping GT: the target is still the max IoU, so q = 1 costs nothing
    matched_to_far = [(torch.tensor([0]), torch.tensor([0]))]
    assert quality_loss(torch.tensor([[1.0]]), spans, tgt, matched_to_far, 1.0).item() == pytest.approx(0.0)


def test_quality_target_detached() -> None:
    out = _fake_out(torch.Generator().manual_seed(2), requires_grad=True)
    crit = build_criterion(ModelConfig(), LossConfig())
    losses = crit(out, _batch())
    losses["loss_quality"].backward()
    assert out["pred_spans"].grad is None  # IoU target carries no gradient
    assert out["pred_quality"].grad.abs().sum() > 0
    out = _fake_out(torch.Generator().manual_seed(2), requires_grad=True)
    losses = crit(out, _batch())
    losses["loss_l1"].backward()
    assert out["pred_quality"].grad is None and out["pred_spans"].grad.abs().sum() > 0


def test_quality_margin_hand_value() -> None:
    meta = {"num_groups": 1, "max_gt": 2, "pos_valid": torch.tensor([[True, False]]), "has_negatives": True}
    # slots: pos j0, pos j1 (pad), neg j0, neg j1 (pad)
    q = torch.tensor([[0.6, 0.0, 0.5, 0.9]])
    assert quality_margin_loss(q, meta, 0.4).item() == pytest.approx(0.3)
    meta2 = {**meta, "num_groups": 2}
    q2 = torch.tensor([[0.6, 0.0, 0.5, 0.9, 0.9, 0.0, 0.1, 0.9]])  # group 1: hinge(0.1 - 0.9 + 0.4) = 0
    # eq 9's 1/N_gt: the hinges of both groups (0.3 + 0) over the one GT span; pairs: over the 2 pairs
    assert quality_margin_loss(q2, meta2, 0.4).item() == pytest.approx(0.3)
    assert quality_margin_loss(q2, meta2, 0.4, reduction="pairs").item() == pytest.approx(0.15)


# ----------------------------------------------------------------------------------------------- L_A


def test_vtc_hand_values() -> None:
    e = torch.eye(2, dtype=torch.float64)
    scale = torch.tensor(math.log(10.0), dtype=torch.float64)
    loss = vtc_loss(e, e, scale, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-10)))
    # same video: the off-diagonal pair is not a negative -> loss 0
    assert vtc_loss(e, e, scale, torch.tensor([3, 3])).item() == pytest.approx(0.0, abs=1e-7)
    # texts both e1: logits [[10, 10], [0, 0]]
    t = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)  # normalised inside
    rows = math.log(2)
    cols = 0.5 * (math.log(1 + math.exp(-10)) + math.log(1 + math.exp(10)))
    assert vtc_loss(e, t, scale, torch.tensor([0, 1])).item() == pytest.approx(0.5 * (rows + cols))
    # logit scale is clamped at 100
    big = vtc_loss(e, t, torch.tensor(10.0), torch.tensor([0, 1]))
    assert big.item() == pytest.approx(
        vtc_loss(e, t, torch.tensor(math.log(100)), torch.tensor([0, 1])).item()
    )


def test_ctm_local_hand_value_and_padding() -> None:
    cos = torch.tensor([[0.07, -0.07, 5.0]])
    rel = torch.tensor([[True, False, True]])
    mask = torch.tensor([[True, True, False]])
    expected = math.log(1 + math.exp(-1))  # both valid clips: BCE(logit ±1, label 1/0)
    assert ctm_local_loss(cos, rel, mask, 0.07).item() == pytest.approx(expected)
    cos[0, 2] = -3.0
    assert ctm_local_loss(cos, rel, mask, 0.07).item() == pytest.approx(expected)


def test_ctm_intra_hand_value() -> None:
    cos = torch.tensor([[0.1, 0.5, -0.2, 0.9]])
    sal = torch.tensor([[2.0, 5.0, 3.0, 5.0]])
    rel = torch.tensor([[False, True, True, True]])
    mask = torch.tensor([[True, True, True, False]])  # clip 3 is padding (even with saliency 5)
    # anchor clip 1; negatives: valid clips with lower saliency: 0 and 2
    expected = -(0.5 - math.log(math.exp(0.1) + math.exp(0.5) + math.exp(-0.2)))
    assert ctm_intra_loss(cos, sal, rel, mask, 1.0).item() == pytest.approx(expected)
    # a sample without a positive clip is left out of the mean
    cos2 = torch.cat([cos, torch.tensor([[3.0, 1.0, 0.0, 0.0]])])
    sal2 = torch.cat([sal, torch.zeros(1, 4)])
    rel2 = torch.cat([rel, torch.zeros(1, 4, dtype=torch.bool)])
    mask2 = torch.cat([mask, torch.ones(1, 4, dtype=torch.bool)])
    assert ctm_intra_loss(cos2, sal2, rel2, mask2, 1.0).item() == pytest.approx(expected)
    # a valid clip with the anchor's saliency is not a negative (strictly lower saliency only): clip 2
    # now ties with the anchor (clip 1, first on ties) and leaves the denominator
    sal3 = torch.tensor([[2.0, 5.0, 5.0, 5.0]])
    expected3 = -(0.5 - math.log(math.exp(0.1) + math.exp(0.5)))
    assert ctm_intra_loss(cos, sal3, rel, mask, 1.0).item() == pytest.approx(expected3)


def test_ctm_inter_hand_value() -> None:
    r = 1 / math.sqrt(2)
    clip_emb = torch.zeros(3, 2, 2)
    clip_emb[0, 1] = torch.tensor([1.0, 0.0])  # anchor of sample 0 (highest saliency positive)
    clip_emb[0, 0] = torch.tensor([0.0, 5.0])  # lower saliency
    clip_emb[1, 0] = torch.tensor([0.0, 2.0])  # anchor of sample 1
    clip_emb[2] = torch.randn(2, 2)  # sample 2 has no positive clip: left out
    sent_emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.3, 0.4]])
    sal = torch.tensor([[1.0, 3.0], [2.0, 0.0], [0.0, 0.0]])
    rel = torch.tensor([[True, True], [True, False], [False, False]])
    mask = torch.ones(3, 2, dtype=torch.bool)
    # cosines [[1, r], [0, r]] at tau = 1
    row0 = -(1 - math.log(math.e + math.exp(r)))
    row1 = -(r - math.log(1 + math.exp(r)))
    col0 = -(1 - math.log(math.e + 1))
    col1 = math.log(2)
    expected = 0.5 * ((row0 + row1) / 2 + (col0 + col1) / 2)
    assert ctm_inter_loss(clip_emb, sent_emb, sal, rel, mask, 1.0).item() == pytest.approx(expected, rel=1e-5)
    # at tau = 0.5 the cosines are doubled: logits [[2, 2r], [0, 2r]]
    row0 = -(2 - math.log(math.exp(2) + math.exp(2 * r)))
    row1 = -(2 * r - math.log(1 + math.exp(2 * r)))
    col0 = -(2 - math.log(math.exp(2) + 1))
    expected = 0.5 * ((row0 + row1) / 2 + (col0 + math.log(2)) / 2)
    assert ctm_inter_loss(clip_emb, sent_emb, sal, rel, mask, 0.5).item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------------------------- L_S


def test_saliency_margin_hand_value() -> None:
    scores = torch.tensor([[0.4, 0.5, 0.3]])
    loss = saliency_margin_loss(scores, torch.tensor([[1, 2]]), torch.tensor([[0, 0]]), 0.2)
    assert loss.item() == pytest.approx((0.1 + 0.3) / 2 * 2)
    # asymmetric: pairs (pos 1.0, neg 0.0) and (pos 0.1, neg 0.0): hinges max(0, 0.2 - 1) = 0 and
    # max(0, 0.2 - 0.1) = 0.1 (with s_pos and s_neg swapped they would be 1.2 and 0.3)
    scores = torch.tensor([[0.0, 1.0, 0.1]])
    loss = saliency_margin_loss(scores, torch.tensor([[1, 2]]), torch.tensor([[0, 0]]), 0.2)
    assert loss.item() == pytest.approx(0.1 / 2 * 2)


# QD-DETR's rank-contrastive term sums the InfoNCE of the 11 saliency thresholds and divides by 12
# (`loss_rank_contrastive / 12` in QD-DETR's SetCriterion.loss_saliency); written here, not imported,
# so that a changed constant in the code fails this test.
RANK_NORM = 12.0


def test_saliency_rank_hand_value_and_padding() -> None:
    scores = torch.tensor([[1.0, 0.0, 7.0]])
    labels = torch.tensor([[2.0, 0.0, 12.0]])  # clip 2 is padding (its label must not count)
    mask = torch.tensor([[True, False, False]]) | torch.tensor([[False, True, False]])
    # levels 1 and 2 have clip 0 as the only positive; logits [2, 0] at tau 0.5
    expected = 2 * math.log(1 + math.exp(-2)) / RANK_NORM
    assert saliency_rank_loss(scores, None, labels, mask, 0.5).item() == pytest.approx(expected)
    neg = torch.tensor([[0.5, -1.0, 99.0]])
    denom = math.exp(2) + 1 + math.exp(1) + math.exp(-2)
    expected_neg = 2 * -(2 - math.log(denom)) / RANK_NORM
    assert saliency_rank_loss(scores, neg, labels, mask, 0.5).item() == pytest.approx(expected_neg)
    scores[0, 2], neg[0, 2] = -50.0, -50.0
    assert saliency_rank_loss(scores, neg, labels, mask, 0.5).item() == pytest.approx(expected_neg)
    # a sample without positives contributes 0 to the batch mean
    two = saliency_rank_loss(
        torch.cat([scores, scores]),
        None,
        torch.cat([labels, torch.zeros(1, 3)]),
        torch.cat([mask, mask]),
        0.5,
    )
    assert two.item() == pytest.approx(expected / 2)


def test_saliency_neg_hand_value() -> None:
    neg = torch.tensor([[0.0, math.log(3), 99.0]])
    mask = torch.tensor([[True, True, False]])
    assert saliency_neg_loss(neg, mask).item() == pytest.approx(math.log(2) + math.log(4))


# ----------------------------------------------------------------------------------------------- criterion


def test_criterion_terms_weights_and_total() -> None:
    out = _fake_out(torch.Generator().manual_seed(3))
    crit = build_criterion(ModelConfig(), LossConfig(lambda_moment=2.0, lambda_align=0.5))
    losses = crit(out, _batch())
    expected = {
        "loss_vtc", "loss_ctm_local", "loss_ctm_intra", "loss_ctm_inter", "loss_sal_margin", "loss_sal_rank",
        "loss_sal_neg", "loss_l1", "loss_giou", "loss_quality", "loss_l1_0", "loss_giou_0", "loss_quality_0",
        "loss_init_l1", "loss_init_giou", "loss_dn_l1", "loss_dn_giou", "loss_dn_l1_0", "loss_dn_giou_0",
        "loss_qmargin", "loss_qmargin_0",
    }  # fmt: skip
    assert set(losses) == expected == set(crit.weight_dict)
    assert all(torch.isfinite(v) for v in losses.values())
    assert crit.weight_dict["loss_l1"] == 20.0 and crit.weight_dict["loss_giou_0"] == 2.0
    assert crit.weight_dict["loss_vtc"] == 0.5 and crit.weight_dict["loss_quality"] == 1.0
    assert crit.weight_dict["loss_ctm_local"] == 0.5
    # L_ctm = L_local + L_intra + L_inter (3.2), all three at λ_A
    assert crit.weight_dict["loss_ctm_intra"] == crit.weight_dict["loss_ctm_inter"] == pytest.approx(0.5)
    tuned = build_criterion(ModelConfig(), LossConfig(lambda_align=0.5, ctm_univtg_weight=0.1))
    assert tuned.weight_dict["loss_ctm_intra"] == tuned.weight_dict["loss_ctm_inter"] == pytest.approx(0.05)
    manual = sum(crit.weight_dict[k] * v for k, v in losses.items())
    assert crit.total(losses).item() == pytest.approx(manual.item())


def test_config_switches_remove_terms() -> None:
    cfg = ModelConfig(
        use_vtc=False, use_ctm=False, use_init_loss=False, dn_negatives=False, use_negative_pass=False
    )
    out = _fake_out(torch.Generator().manual_seed(4))
    out["vtc"] = out["ctm"] = out["saliency_scores_neg"] = None
    out["dn_meta"]["has_negatives"] = False
    for d in out["dn_outputs"]:  # without negatives: G*M slots
        d["pred_spans"], d["pred_quality"] = d["pred_spans"][:, :4], d["pred_quality"][:, :4]
    crit = build_criterion(cfg, LossConfig(aux_loss=False))
    losses = crit(out, _batch())
    assert set(losses) == set(crit.weight_dict) == {
        "loss_l1", "loss_giou", "loss_quality", "loss_dn_l1", "loss_dn_giou",
        "loss_sal_margin", "loss_sal_rank",
    }  # fmt: skip
    crit = build_criterion(ModelConfig(use_dn=False, anchor_init="learnable"), LossConfig())
    losses = crit(_fake_out(torch.Generator().manual_seed(4), dn=False), _batch())
    assert not any(k.startswith(("loss_dn", "loss_qmargin", "loss_init")) for k in losses)
    # evaluation-mode output (no noise queries) with DN enabled: DN terms simply absent
    losses = build_criterion(ModelConfig(), LossConfig())(
        _fake_out(torch.Generator().manual_seed(4), dn=False), _batch()
    )
    assert "loss_dn_l1" not in losses and "loss_l1" in losses


def test_enabled_term_missing_from_output_is_an_error() -> None:
    out = _fake_out(torch.Generator().manual_seed(5))
    out["vtc"] = None
    with pytest.raises(ValueError, match="vtc"):
        build_criterion(ModelConfig(), LossConfig())(out, _batch())


def test_padding_does_not_change_any_loss() -> None:
    crit = build_criterion(ModelConfig(), LossConfig())
    out = _fake_out(torch.Generator().manual_seed(6))
    before = crit(out, _batch())
    pad = ~out["video_mask"]  # sample 1, clips 3-4
    out["saliency_scores"] = out["saliency_scores"].masked_fill(pad, 123.0)
    out["saliency_scores_neg"] = out["saliency_scores_neg"].masked_fill(pad, -77.0)
    out["ctm"]["clip_emb"] = out["ctm"]["clip_emb"].masked_fill(pad[..., None], 9.0)
    batch = _batch()
    batch["saliency"][1, 3:] = 12.0
    batch["relevant"][1, 3:] = True
    after = crit(out, batch)
    for k in before:
        assert after[k].item() == pytest.approx(before[k].item(), rel=1e-6, abs=1e-7), k


@pytest.mark.parametrize("reduction", ["gt", "pairs"])
def test_qmargin_gradient_reaches_only_valid_noise_quality(reduction: str) -> None:
    out = _fake_out(torch.Generator().manual_seed(7))
    dn = out["dn_outputs"][-1]
    dn["pred_quality"] = torch.full((2, 8), 0.5, requires_grad=True)  # every hinge active (margin 0.4)
    dn["pred_spans"].requires_grad_(True)
    losses = build_criterion(ModelConfig(), LossConfig(qmargin_reduction=reduction))(out, _batch())
    # 3 GT spans, GROUPS pairs each: gt divides the hinge sum by 3, pairs by GROUPS * 3
    k = 3 if reduction == "gt" else GROUPS * 3
    assert losses["loss_qmargin"].item() == pytest.approx(0.4 * GROUPS * 3 / k)
    losses["loss_qmargin"].backward()
    assert dn["pred_spans"].grad is None
    grad = dn["pred_quality"].grad  # (B, N_dn): -1/K on valid positives, +1/K on valid negatives
    expected = torch.zeros(2, 8)
    for g in range(GROUPS):
        expected[0, g * 4] = -1 / k
        expected[0, g * 4 + 2] = 1 / k
        expected[1, g * 4 : g * 4 + 2] = -1 / k
        expected[1, g * 4 + 2 : g * 4 + 4] = 1 / k
    assert torch.allclose(grad, expected)


def test_count_reducer_sets_the_divisors_of_count_normalised_terms() -> None:
    """The public DDP hook: doubling every count (as if the other process had twice our counts) halves
    exactly the count-normalised terms (L_M, L_init, L_noise, eq 9, L_local, and eq 8 with its default
    IoU-bin balance) and nothing else; the hook sees this batch's local counts: the normalisers once per
    forward, then eq 8's three bin counts once per decoder layer."""
    out = _fake_out(torch.Generator().manual_seed(8))
    crit = build_criterion(ModelConfig(), LossConfig(quality_balance="iou_bins"))
    local = crit(out, _batch())
    seen: list[list[float]] = []

    def doubled(counts: torch.Tensor) -> torch.Tensor:
        seen.append(counts.tolist())
        return counts * 2

    crit.count_reducer = doubled
    reduced = crit(out, _batch())
    num_pos = GROUPS * sum(len(t) for t in GT)  # positive noise queries = eq 9 pairs
    assert seen[0] == [sum(len(t) for t in GT), num_pos, float(out["video_mask"].sum())]
    n_layers = 1 + len(out["aux_outputs"])
    assert len(seen) == 1 + n_layers
    assert all(len(c) == 3 and sum(c) == len(GT) * NQ for c in seen[1:])  # every direct query in one bin
    halved = (
        "loss_l1",
        "loss_giou",
        "loss_init_",
        "loss_dn_",
        "loss_qmargin",
        "loss_ctm_local",
        "loss_quality",
    )
    for k, v in local.items():
        factor = 0.5 if k.startswith(halved) else 1.0
        assert reduced[k].item() == pytest.approx(factor * v.item(), rel=1e-6, abs=1e-9), k
    assert any(local[k].item() > 0 for k in local if k.startswith("loss_qmargin"))


# ------------------------------------------------------------------- auxiliary layers, by hand


def test_each_aux_layer_is_matched_on_its_own_predictions() -> None:
    """Eq 7 on every decoder layer with that layer's own Hungarian matching: GT (0.5, 0.4) of sample 0
    is matched to query 0 in the last layer and to query 1 in the auxiliary layer."""
    out = _fake_out(torch.Generator().manual_seed(4), dn=False)
    last = torch.full((2, NQ, 2), 0.9)
    aux = torch.full((2, NQ, 2), 0.9)
    last[0, 0] = torch.tensor([0.5, 0.3])  # L1 to the GT: (0 + 0.1) / 2 = 0.05
    aux[0, 1] = torch.tensor([0.45, 0.4])  # L1: (0.05 + 0) / 2 = 0.025; query 0 of aux is far away
    last[1, :2], aux[1, :2] = GT[1], GT[1]  # sample 1 exact in both layers
    out["pred_spans"], out["aux_outputs"][0]["pred_spans"] = last, aux
    losses = build_criterion(ModelConfig(use_dn=False), LossConfig())(out, _batch())
    assert losses["loss_l1"].item() == pytest.approx(0.05 / 3)  # 3 GT spans in the batch
    assert losses["loss_l1_0"].item() == pytest.approx(0.025 / 3)  # not (0.9 - 0.5, 0.9 - 0.4): own match


def test_each_noise_layer_gives_its_own_aux_terms() -> None:
    """L_noise and eq 9 on every decoder layer: `_0` from the first layer's noise outputs, the plain
    names from the last layer's; hand values per layer."""
    out = _fake_out(torch.Generator().manual_seed(5))
    for layer, shift in enumerate((0.2, 0.1)):  # layer 0 off by 0.2 in the centre, the last by 0.1
        spans, quality = out["dn_outputs"][layer]["pred_spans"], out["dn_outputs"][layer]["pred_quality"]
        for g in range(GROUPS):
            spans[0, g * 4] = GT[0][0] + torch.tensor([shift, 0.0])
            spans[1, g * 4 : g * 4 + 2] = GT[1]
        quality.data.fill_(0.5)
        quality.data[:, 2::4] = 0.5 + shift  # the negative of GT 0 in each group: hinge shift + 0.4
        quality.data[1, 3::4] = 0.0  # sample 1's second negative: no hinge
    losses = build_criterion(ModelConfig(), LossConfig())(out, _batch())
    # L1 per positive query: (shift + 0) / 2 for sample 0's GT, 0 for sample 1's; GROUPS groups; / 3 GT
    assert losses["loss_dn_l1_0"].item() == pytest.approx(GROUPS * 0.2 / 2 / 3)
    assert losses["loss_dn_l1"].item() == pytest.approx(GROUPS * 0.1 / 2 / 3)
    # eq 9: valid (group, GT) pairs (sample 0: GT 0; sample 1: GT 0, GT 1) over the 3 GT spans
    for suffix, shift in (("_0", 0.2), ("", 0.1)):
        expected = GROUPS * 2 * (shift + 0.4) / 3  # sample 0's and sample 1's first GT per group
        assert losses[f"loss_qmargin{suffix}"].item() == pytest.approx(expected)


def test_clip_sentence_similarity_is_a_cosine_by_hand() -> None:
    """S of 3.2 is the cosine: both vectors normalised (a dot product would give 3 and 6 here)."""
    from sadetr.model.losses import clip_sentence_cosine

    clips = torch.tensor([[[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0]]])  # norms 5, 2, 1
    sentence = torch.tensor([[1.0, 0.0]])
    assert clip_sentence_cosine(clips, sentence).tolist() == [[pytest.approx(0.6), 0.0, -1.0]]
    assert clip_sentence_cosine(clips, sentence * 7).tolist() == [[pytest.approx(0.6), 0.0, -1.0]]
    # through L_local: BCE-with-logits of S/τ, so the scale of the embeddings does not enter
    rel, mask = torch.tensor([[True, False, False]]), torch.ones(1, 3, dtype=torch.bool)
    cos = clip_sentence_cosine(clips * 10, sentence)
    expected = (
        math.log(1 + math.exp(-0.6 / 0.07)) + math.log(1 + math.exp(0.0)) + math.log(1 + math.exp(-1 / 0.07))
    ) / 3
    assert ctm_local_loss(cos, rel, mask, 0.07).item() == pytest.approx(expected, rel=1e-5)
