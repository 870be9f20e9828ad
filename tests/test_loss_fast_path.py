"""The batched (per-step kernel-count) forms of the losses and the training loop's bookkeeping equal the
straightforward per-sample forms they replaced, on random batches with uneven and empty GT lists."""

from __future__ import annotations

import pytest
import torch

from sadetr.engine.trainer import DeviceSums
from sadetr.engine.validation import move_batch
from sadetr.model.denoising import PAD_ANCHOR, SpanDenoiser
from sadetr.model.losses import (
    RANK_LEVELS,
    RANK_NORM,
    dn_positive_spans,
    iou_bin_balanced_mean,
    matched_spans,
    quality_loss,
    quality_targets,
    saliency_rank_loss,
)
from sadetr.model.matcher import HungarianMatcher
from sadetr.model.span_ops import pad_spans, span_cxw_to_xx, temporal_iou

COUNTS = [(3, 0, 1, 2), (1,), (0, 0), (2, 2, 2)]


def _targets(counts: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.stack([torch.rand(n, generator=g) * 0.6 + 0.2, torch.rand(n, generator=g) * 0.3 + 0.05], 1)
        for n in counts
    ]


def _pred(bsz: int, num_q: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [torch.rand(bsz, num_q, generator=g), torch.rand(bsz, num_q, generator=g) * 0.5 + 0.01], -1
    )


# ---------------------------------------------------------------------- the straightforward forms


def loop_quality_targets(pred: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
    rows = []
    for b, t in enumerate(targets):
        if t.shape[0] == 0:
            rows.append(pred.new_zeros(pred.shape[1]))
            continue
        iou, _ = temporal_iou(span_cxw_to_xx(pred[b]), span_cxw_to_xx(t))
        rows.append(iou.max(dim=1).values)
    return torch.stack(rows)


def loop_bin_mean(errors: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bins = (target > 0.7, (target > 0.3) & (target <= 0.7), target <= 0.3)
    total = errors.new_zeros(())
    for members in bins:
        if members.sum() > 0:
            total = total + errors[members].sum() / members.sum()
    return total / 3


def loop_rank_loss(scores, scores_neg, labels, mask, tau):
    valid = mask.bool()
    scores = torch.cat([scores, scores_neg], 1)
    labels = torch.cat([labels, torch.zeros_like(labels)], 1)
    valid = torch.cat([valid, valid], 1)
    log_prob = (scores / tau).masked_fill(~valid, float("-inf")).log_softmax(1)
    total = scores.new_zeros(())
    for r in RANK_LEVELS:
        pos = (labels >= r) & valid
        if not pos.any():
            continue
        num_pos = pos.sum(1)
        mean_pos = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1) / num_pos.clamp(min=1)
        total = total + (-mean_pos * (num_pos > 0)).mean()
    return total / RANK_NORM


# ---------------------------------------------------------------------- tests


@pytest.mark.parametrize("counts", COUNTS)
def test_pad_spans_places_each_sample_in_its_row(counts):
    targets = _targets(counts, 0)
    padded, valid = pad_spans(targets, fill=PAD_ANCHOR)
    assert padded.shape == (len(counts), max(counts), 2)
    for b, t in enumerate(targets):
        assert valid[b].tolist() == [j < len(t) for j in range(max(counts))]
        assert torch.equal(padded[b, : len(t)], t)
        assert (padded[b, len(t) :] == torch.tensor(PAD_ANCHOR)).all()


@pytest.mark.parametrize("counts", COUNTS)
def test_quality_targets_equal_the_per_sample_loop(counts):
    targets, pred = _targets(counts, 1), _pred(len(counts), 7, 2)
    assert torch.allclose(quality_targets(pred, targets), loop_quality_targets(pred, targets), atol=1e-7)


@pytest.mark.parametrize("counts", COUNTS)
def test_matched_pairs_and_quality_weights_equal_the_per_sample_loop(counts):
    targets, pred = _targets(counts, 3), _pred(len(counts), 6, 4)
    matches = HungarianMatcher()(pred, targets)
    src, tgt = matched_spans(pred, targets, matches)
    want_src = [pred[b, p] for b, (p, _) in enumerate(matches)]
    want_tgt = [targets[b][j] for b, (_, j) in enumerate(matches)]
    assert torch.equal(src, torch.cat(want_src).view(-1, 2))
    assert torch.equal(tgt, torch.cat(want_tgt).view(-1, 2))
    quality = torch.rand(pred.shape[:2])
    weight = torch.ones(pred.shape[:2])
    for b, (p, _) in enumerate(matches):
        weight[b, p] = 10.0
    want = (weight * (quality - loop_quality_targets(pred, targets)).abs()).mean()
    assert quality_loss(quality, pred, targets, matches, 10.0).item() == pytest.approx(want.item(), abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_bin_balanced_mean_and_gradient_equal_the_loop(seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(5, 10, generator=g) * (0.4 if seed == 3 else 1.0)  # seed 3: the top bin is empty
    errors = torch.rand(5, 10, generator=g, requires_grad=True)
    fast = iou_bin_balanced_mean(errors, target)
    (grad_fast,) = torch.autograd.grad(fast, errors)
    slow = loop_bin_mean(errors, target)
    (grad_slow,) = torch.autograd.grad(slow, errors)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-6)
    assert torch.allclose(grad_fast, grad_slow, atol=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_rank_loss_over_all_levels_at_once_equals_the_loop_with_gradients(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(4, 12, generator=g, requires_grad=True)
    neg = torch.randn(4, 12, generator=g, requires_grad=True)
    labels = torch.randint(0, 13 if seed else 5, (4, 12), generator=g).float()  # seed 0: high levels empty
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[1, 9:] = False
    fast = saliency_rank_loss(scores, neg, labels, mask, 0.5)
    slow = loop_rank_loss(scores, neg, labels, mask, 0.5)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-6)
    for a, b in zip(torch.autograd.grad(fast, (scores, neg)), torch.autograd.grad(slow, (scores, neg))):
        assert torch.allclose(a, b, atol=1e-7)


@pytest.mark.parametrize("counts", [(3, 1, 2), (1,), (2, 0, 1)])
def test_denoising_gt_and_positive_pairs_equal_the_per_sample_fill(counts):
    targets = _targets(counts, 5)
    dn = SpanDenoiser(num_groups=3, sigma_p=0.2, sigma_n=0.6, negatives=True)
    queries = dn(targets, num_queries=10, generator=torch.Generator().manual_seed(0))
    assert queries is not None
    max_gt = max(counts)
    assert queries.meta["pos_valid"].tolist() == [[j < n for j in range(max_gt)] for n in counts]
    dn_spans = torch.rand(len(counts), queries.anchors.shape[1], 2)
    src, tgt = dn_positive_spans(dn_spans, targets, queries.meta)
    want_src, want_tgt = [], []
    for b, t in enumerate(targets):
        for grp in range(3):
            for j in range(len(t)):
                want_src.append(dn_spans[b, grp * 2 * max_gt + j])
                want_tgt.append(t[j])
    assert torch.equal(src, torch.stack(want_src))
    assert torch.equal(tgt, torch.stack(want_tgt))


def test_device_sums_equal_float_sums_when_terms_come_and_go():
    sums = DeviceSums()
    steps = [{"loss": 1.0, "a": 2.0}, {"loss": 3.0, "a": 4.0}, {"loss": 5.0}, {"loss": 7.0, "a": 1.0}]
    for step in steps:
        sums.add({k: torch.tensor(v) for k, v in step.items()})
    assert sums.pop() == {"loss": 16.0, "a": 7.0}
    assert sums.pop() == {}
    sums.add({"loss": torch.tensor(2.5)})
    assert sums.pop() == {"loss": 2.5}


def test_move_batch_moves_a_list_in_one_copy_and_keeps_each_tensor():
    spans = [torch.rand(n, 2) for n in (2, 0, 3)]
    moved = move_batch(
        {"spans": spans, "scalars": [torch.tensor(1.0), torch.tensor(2.0)]}, torch.device("meta")
    )
    assert [t.shape for t in moved["spans"]] == [t.shape for t in spans]
    assert all(t.device.type == "meta" for t in moved["spans"])
    assert [t.shape for t in moved["scalars"]] == [torch.Size([]), torch.Size([])]
