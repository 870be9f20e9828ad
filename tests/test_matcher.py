"""Tests of the Hungarian matcher (sadetr.model.matcher)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sadetr.model.config import LossConfig
from sadetr.model.matcher import HungarianMatcher, build_matcher
from sadetr.model.span_ops import generalized_temporal_iou, span_cxw_to_xx


def _cost(pred: torch.Tensor, tgt: torch.Tensor, l1: float, giou: float) -> torch.Tensor:
    """Cost matrix written element by element (the reference)."""
    c = torch.zeros(len(pred), len(tgt))
    for i in range(len(pred)):
        for j in range(len(tgt)):
            g = generalized_temporal_iou(span_cxw_to_xx(pred[i : i + 1]), span_cxw_to_xx(tgt[j : j + 1]))[
                0, 0
            ]
            c[i, j] = l1 * (pred[i] - tgt[j]).abs().sum() - giou * g
    return c


def _brute_force(cost: torch.Tensor) -> float:
    q, n = cost.shape
    if n <= q:
        return min(sum(cost[p[j], j] for j in range(n)) for p in itertools.permutations(range(q), n))
    return min(sum(cost[i, p[i]] for i in range(q)) for p in itertools.permutations(range(n), q))


def _random_spans(n: int, gen: torch.Generator) -> torch.Tensor:
    w = torch.rand(n, generator=gen) * 0.5 + 0.05
    c = w / 2 + torch.rand(n, generator=gen) * (1 - w)
    return torch.stack([c, w], dim=-1)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_optimum(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    q = 5
    sizes = [*[1, 3, 5, 6][seed % 4 :], 2]  # includes N > Q
    preds = torch.stack([_random_spans(q, gen) for _ in sizes])  # (B, Q, 2)
    targets = [_random_spans(n, gen) for n in sizes]
    matcher = HungarianMatcher(cost_l1=10.0, cost_giou=1.0)
    for b, (pi, ti) in enumerate(matcher(preds, targets)):
        assert len(pi) == len(ti) == min(q, sizes[b])
        assert len(set(pi.tolist())) == len(pi) and len(set(ti.tolist())) == len(ti)
        cost = _cost(preds[b], targets[b], 10.0, 1.0)
        assert cost[pi, ti].sum().item() == pytest.approx(float(_brute_force(cost)), abs=1e-4)


def test_obvious_assignment() -> None:
    preds = torch.tensor([[[0.8, 0.2], [0.2, 0.2], [0.5, 0.9]]])
    targets = [torch.tensor([[0.21, 0.2], [0.79, 0.21]])]
    pi, ti = HungarianMatcher()(preds, targets)[0]
    assert dict(zip(pi.tolist(), ti.tolist())) == {0: 1, 1: 0}


def test_giou_only_cost_changes_choice() -> None:
    # pred 0 is closer in L1 (cxw), pred 1 overlaps more in gIoU
    preds = torch.tensor([[[0.5, 0.1], [0.5, 0.5]]])
    targets = [torch.tensor([[0.5, 0.45]])]
    assert HungarianMatcher(cost_l1=0.0, cost_giou=1.0)(preds, targets)[0][0].tolist() == [1]
    cost = _cost(preds[0], targets[0], 1.0, 0.0)
    assert HungarianMatcher(cost_l1=1.0, cost_giou=0.0)(preds, targets)[0][0].tolist() == [int(cost.argmin())]


def test_empty_targets() -> None:
    preds = torch.rand(3, 4, 2)
    out = HungarianMatcher()(preds, [torch.zeros(0, 2), torch.tensor([[0.5, 0.2]]), torch.zeros(0, 2)])
    assert [len(p) for p, _ in out] == [0, 1, 0]
    out = HungarianMatcher()(preds, [torch.zeros(0, 2)] * 3)
    assert all(len(p) == 0 and len(t) == 0 for p, t in out)


def test_extra_cost_hook() -> None:
    preds = torch.tensor([[[0.5, 0.2], [0.5, 0.2]]])  # two identical predictions
    targets = [torch.tensor([[0.5, 0.2]])]
    extra = torch.tensor([[[0.0], [-5.0]]])  # (B, Q, 1): query 1 is much cheaper
    assert HungarianMatcher()(preds, targets, extra_cost=extra)[0][0].tolist() == [1]
    extra = torch.tensor([[[-5.0], [0.0]]])
    assert HungarianMatcher()(preds, targets, extra_cost=extra)[0][0].tolist() == [0]


def test_no_grad_and_build() -> None:
    preds = torch.rand(1, 3, 2, requires_grad=True)
    HungarianMatcher()(preds, [torch.tensor([[0.5, 0.2]])])
    assert preds.grad is None
    m = build_matcher(LossConfig(l1=3.0, giou=2.0))
    assert (m.cost_l1, m.cost_giou) == (3.0, 2.0)
