"""Hungarian matching of predicted spans to GT spans (3.5, docs/readings.md): cost
`λ_l1·L1(cxw) − λ_giou·gIoU(xx)`, one optimal one-to-one assignment per sample (scipy's
`linear_sum_assignment`).

Used for the direct group of every decoder layer and for the initial anchors S_d (L_init); the noise
group needs no matching (each noise query belongs to its own GT). The baselines reuse it, adding their
own per-query cost (Moment-DETR's foreground-class cost) through `extra_cost`.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from sadetr.model.config import LossConfig
from sadetr.model.span_ops import generalized_temporal_iou, span_cxw_to_xx

Match = tuple[Tensor, Tensor]  # (pred_idx, tgt_idx), both LongTensor [min(Q, N_i)]


class HungarianMatcher(nn.Module):
    """Optimal assignment of the Q predictions of each sample to its N_i GT spans (eq 7's pairing)."""

    def __init__(self, cost_l1: float = 10.0, cost_giou: float = 1.0) -> None:
        super().__init__()
        if cost_l1 == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0")
        self.cost_l1 = cost_l1
        self.cost_giou = cost_giou

    @torch.no_grad()
    def forward(
        self, pred_spans: Tensor, targets: list[Tensor], extra_cost: Tensor | None = None
    ) -> list[Match]:
        """pred_spans: [B, Q, 2] (center, width); targets: list[B] of [N_i, 2] (center, width);
        extra_cost: optional, broadcastable to [B, Q, sum N_i] (e.g. [B, Q, 1] for a per-query cost).

        Returns, per sample, (pred_idx, tgt_idx) with `len = min(Q, N_i)`, pred_idx sorted ascending.
        """
        bsz, num_q = pred_spans.shape[:2]
        sizes = [int(t.shape[0]) for t in targets]
        empty = torch.zeros(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in range(bsz)]
        out = pred_spans.flatten(0, 1).float()  # (B*Q, 2)
        tgt = torch.cat(list(targets)).to(out)  # (N_total, 2)
        cost_l1 = torch.cdist(out, tgt, p=1)  # (B*Q, N_total)
        cost_giou = -generalized_temporal_iou(span_cxw_to_xx(out), span_cxw_to_xx(tgt))  # (B*Q, N_total)
        cost = self.cost_l1 * cost_l1 + self.cost_giou * cost_giou  # (B*Q, N_total)
        cost = cost.view(bsz, num_q, -1)  # (B, Q, N_total)
        if extra_cost is not None:
            cost = cost + extra_cost.to(cost)
        cost = cost.cpu()
        matches = []
        for b, c in enumerate(cost.split(sizes, dim=-1)):  # c: (B, Q, N_b); sample b's block is c[b]
            rows, cols = linear_sum_assignment(c[b].numpy())
            matches.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return matches


def build_matcher(loss_cfg: LossConfig) -> HungarianMatcher:
    """The matcher of `loss_cfg` (matching costs = loss weights λ_l1, λ_giou, Table 9)."""
    return HungarianMatcher(cost_l1=loss_cfg.l1, cost_giou=loss_cfg.giou)
