"""Criterion of the Moment-DETR and QD-DETR baselines: the parts that differ from SA-DETR's.

Both public implementations use the same set criterion, built here on SA-DETR's `SetCriterion`
(`sadetr.model.losses`), whose span, L_init and saliency terms are reused unchanged:
- matching cost `λ_l1·L1 − λ_giou·gIoU − λ_cls·p_fg` (the shared `HungarianMatcher` plus a per-query
  `extra_cost`; `p_fg` is the foreground softmax probability);
- per decoder layer (aux layers suffixed `_0`, `_1`, ...): `loss_l1`, `loss_giou` (SA-DETR's), and
  `loss_label`: 2-way cross-entropy, foreground (index 0) for matched queries, background (index 1)
  otherwise, background weighted by `eos_coef`, averaged over all B×Nq queries (a plain mean of the
  weighted per-query terms, as the public code, not PyTorch's weight-normalised mean);
- saliency (top layer only): Moment-DETR has the margin ranking term `loss_sal_margin` only;
  QD-DETR adds the rank-contrastive `loss_sal_rank` and the negative-pair `loss_sal_neg`;
- with Table 11's dynamic anchors and `use_init_loss`, L_init (`loss_init_l1`, `loss_init_giou`).
Weights (public defaults): l1 10, giou 1, label 4, each saliency term `lambda_saliency` (1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sadetr.model.config import LossConfig, ModelConfig
from sadetr.model.losses import SetCriterion, saliency_margin_loss
from sadetr.model.matcher import HungarianMatcher, Match

FOREGROUND, BACKGROUND = 0, 1


def label_loss(logits: Tensor, matches: list[Match], eos_coef: float) -> Tensor:
    """Foreground/background CE: logits [B, Nq, 2] -> scalar `mean over B·Nq of w_y·(−log p_y)`,
    w = 1 for foreground (matched queries), eos_coef for background."""
    target = torch.full(logits.shape[:2], BACKGROUND, dtype=torch.int64, device=logits.device)  # (B, Nq)
    for b, (pred_idx, _) in enumerate(matches):
        target[b, pred_idx.to(logits.device)] = FOREGROUND
    weight = logits.new_tensor([1.0, eos_coef])  # (2,) class weights
    per_query = F.cross_entropy(logits.transpose(1, 2), target, weight, reduction="none")  # (B, Nq)
    return per_query.mean()


class BaselineCriterion(SetCriterion):
    """SA-DETR's `SetCriterion` with the baselines' class head: class matching cost and `loss_label`."""

    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        losses: tuple[str, ...],
        cost_label: float = 4.0,
        eos_coef: float = 0.1,
        aux_loss: bool = True,
        saliency_margin: float = 0.2,
        rank_contrast_tau: float = 0.5,
    ) -> None:
        super().__init__(
            matcher,
            weight_dict,
            layer_losses=("spans",),
            losses=(),
            aux_loss=aux_loss,
            saliency_margin=saliency_margin,
            rank_contrast_tau=rank_contrast_tau,
        )
        self.cost_label = cost_label
        self.eos_coef = eos_coef
        self.layer_loss_map["labels"] = self.loss_labels
        self.loss_map["saliency_margin"] = self.loss_saliency_margin
        for name in losses:
            if name not in self.loss_map:
                raise ValueError(f"unknown loss {name!r}")
        self.layer_losses = ["spans", "labels"]
        self.losses = list(losses)

    def match(self, layer_out: dict, targets: Sequence[Tensor]) -> list[Match]:
        """Hungarian matching with the public code's extra cost `−cost_label·p_fg` per query; layers
        without class logits (the anchors S_d of L_init) use the span cost only."""
        if "pred_logits" not in layer_out:
            return super().match(layer_out, targets)
        p_fg = layer_out["pred_logits"].softmax(-1)[..., FOREGROUND : FOREGROUND + 1]  # (B, Nq, 1)
        return self.matcher(layer_out["pred_spans"], list(targets), extra_cost=-self.cost_label * p_fg)

    def loss_labels(self, layer_out: dict, batch: dict, matches: list[Match]) -> dict[str, Tensor]:
        """`loss_label`: foreground/background CE with the background down-weighted by eos_coef."""
        return {"loss_label": label_loss(layer_out["pred_logits"], matches, self.eos_coef)}

    def loss_saliency_margin(self, out: dict, batch: dict) -> dict[str, Tensor]:
        """Moment-DETR's saliency loss: the margin ranking term only."""
        loss = saliency_margin_loss(
            out["saliency_scores"], batch["saliency_pos_idx"], batch["saliency_neg_idx"], self.saliency_margin
        )
        return {"loss_sal_margin": loss}


def build_baseline_criterion(model_cfg: ModelConfig, loss_cfg: LossConfig) -> BaselineCriterion:
    """Criterion of `model_cfg.name` in (moment_detr, qd_detr), weights from `loss_cfg`."""
    per_layer = {"loss_l1": loss_cfg.l1, "loss_giou": loss_cfg.giou, "loss_label": loss_cfg.label}
    weights = dict(per_layer)
    if loss_cfg.aux_loss:
        for i in range(model_cfg.n_dec_layers - 1):
            weights.update({f"{k}_{i}": w for k, w in per_layer.items()})
    lam_s = loss_cfg.lambda_saliency
    losses: list[str] = []
    if model_cfg.name == "moment_detr":
        losses.append("saliency_margin")
        weights["loss_sal_margin"] = lam_s
    else:
        losses.append("saliency")  # margin + rank-contrastive (+ negative pair in training)
        weights.update({"loss_sal_margin": lam_s, "loss_sal_rank": lam_s})
        if model_cfg.use_negative_pass:
            weights["loss_sal_neg"] = lam_s
        if model_cfg.qd_dynamic_anchor and model_cfg.use_init_loss:
            losses.append("init")
            weights.update({"loss_init_l1": loss_cfg.l1, "loss_init_giou": loss_cfg.giou})
    return BaselineCriterion(
        matcher=HungarianMatcher(cost_l1=loss_cfg.l1, cost_giou=loss_cfg.giou),
        weight_dict=weights,
        losses=tuple(losses),
        cost_label=loss_cfg.cost_label,
        eos_coef=loss_cfg.eos_coef,
        aux_loss=loss_cfg.aux_loss,
        saliency_margin=loss_cfg.saliency_margin,
        rank_contrast_tau=loss_cfg.rank_contrast_tau,
    )
