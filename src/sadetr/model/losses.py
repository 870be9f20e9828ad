"""SA-DETR's training objective (3.2, 3.5, eq 7-10, docs/readings.md): the loss functions and `SetCriterion`.

Terms (CONTRACTS.md "Model"), grouped as in eq 10 `L = λ_A·L_A + λ_S·L_S + λ_M·L_M + λ_Q·L_Q`:
- L_M (eq 7): `loss_l1`, `loss_giou` on Hungarian-matched direct predictions of every decoder layer;
  `loss_init_l1/giou` on the initial anchors S_d (L_init); `loss_dn_l1/giou` on positive noise queries
  against their own GT (L_noise).
- L_Q: `loss_quality` (eq 8) on every layer; `loss_qmargin` (eq 9) on the noise queries.
- L_A: `loss_vtc` (video-text InfoNCE), `loss_ctm_local` (TR-DETR), `loss_ctm_intra`, `loss_ctm_inter`
  (UniVTG; weighted `loss.ctm_univtg_weight`·λ_A, 1 in the `paper` recipe) on clip-sentence cosines.
- L_S: QD-DETR's saliency loss: `loss_sal_margin`, `loss_sal_rank`, `loss_sal_neg`.
Aux layers repeat the per-layer terms with suffixes `_0`, `_1`, ... (aux_outputs[i] -> `_i`).

Normalisation (DETR's `num_boxes`): the terms that divide by a count that varies between batches (L_M by
the #GT spans, L_noise and eq 9 by the #GT spans or the #positive noise queries (`loss.noise_reduction`,
`loss.qmargin_reduction`), `loss_ctm_local` by the #valid clips)
take it from `SetCriterion.normalizers`, which passes this process's counts through the public hook
`SetCriterion.count_reducer`. One process: the counts as they are. Distributed data parallel: set
`criterion.count_reducer = mean_over_processes` (the trainer does), so each process divides by the
global count / world size and DDP's gradient average equals one process on the global batch.

The pure functions below and `SetCriterion` are reused by the Moment-DETR / QD-DETR baselines
(`sadetr.model.baselines.losses`); `build_sa_detr_criterion` builds SA-DETR's, and
`sadetr.model.build.build_criterion` picks the one of `model.name`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from sadetr.core.errors import ConfigError
from sadetr.model.config import LossConfig, ModelConfig
from sadetr.model.matcher import HungarianMatcher, Match, build_matcher
from sadetr.model.span_ops import (
    pad_spans,
    paired_generalized_temporal_iou,
    paired_temporal_iou,
    span_cxw_to_xx,
)

# QD-DETR's rank-contrastive term: thresholds r = 1..11 over QVHighlights' summed levels (0..12),
# and the sum over thresholds divided by 12 (kept as in QD-DETR so its loss weights carry over).
RANK_LEVELS = tuple(range(1, 12))
RANK_NORM = 12.0
# CLIP clamps the learnable logit scale at 100.
MAX_LOGIT_SCALE = math.log(100.0)


# ----------------------------------------------------------------------------------------------- L_M


def matched_index(matches: Sequence[Match], sizes: Sequence[int], device: torch.device) -> Tensor:
    """The matched pairs as one index [3, K] on `device`: (sample, prediction, GT row in the batch's
    concatenated GT). Built on the host from the matcher's host tensors and moved in one copy."""
    rows = [
        (torch.full_like(p, b), p, j + offset)
        for b, ((p, j), offset) in enumerate(zip(matches, _offsets(sizes)))
    ]
    index = (
        torch.stack([torch.cat(part) for part in zip(*rows)])
        if rows
        else torch.zeros(3, 0, dtype=torch.int64)
    )
    return index.to(device, non_blocking=True)  # (3, K)


def _offsets(sizes: Sequence[int]) -> list[int]:
    """Start of each sample's GT rows in the concatenated GT: [0, N_0, N_0 + N_1, ...]."""
    return [sum(sizes[:b]) for b in range(len(sizes))]


def matched_spans(
    pred_spans: Tensor, targets: Sequence[Tensor], matches: Sequence[Match]
) -> tuple[Tensor, Tensor]:
    """Gather matched (prediction, GT) pairs: [B, Q, 2] + matches -> ([K, 2], [K, 2]), K = Σ len(match)."""
    index = matched_index(matches, [int(t.shape[0]) for t in targets], pred_spans.device)  # (3, K)
    src = pred_spans[index[0], index[1]]  # (K, 2)
    tgt = torch.cat(list(targets)).to(src)[index[2]]  # (K, 2)
    return src, tgt


def span_losses(src: Tensor, tgt: Tensor, num_spans: float) -> tuple[Tensor, Tensor]:
    """Eq 7 terms on aligned pairs of (center, width) spans [K, 2]: (L1, 1 − gIoU), summed over pairs and
    divided by `num_spans` (the batch's GT count). L1 is averaged over (c, w) as in Moment-DETR/QD-DETR.
    """
    num = max(float(num_spans), 1.0)
    loss_l1 = F.l1_loss(src, tgt, reduction="none").mean(-1).sum() / num
    giou = paired_generalized_temporal_iou(span_cxw_to_xx(src), span_cxw_to_xx(tgt))  # (K,)
    loss_giou = (1 - giou).sum() / num
    return loss_l1, loss_giou


def dn_positive_spans(dn_spans: Tensor, targets: Sequence[Tensor], dn_meta: dict) -> tuple[Tensor, Tensor]:
    """Positive noise predictions and their own GT (fixed matching): [B, N_dn, 2] -> ([K, 2], [K, 2]).

    Slot of group g, polarity p, GT j is `g·2M + p·M + j` (`g·M + j` without negatives); K = G · Σ N_i.
    """
    bsz = dn_spans.shape[0]
    groups, max_gt = dn_meta["num_groups"], dn_meta["max_gt"]
    polarities = 2 if dn_meta["has_negatives"] else 1
    pred = dn_spans.view(bsz, groups, polarities, max_gt, 2)[:, :, 0]  # (B, G, M, 2) positives
    gt = pad_spans(targets)[0].to(dn_spans)  # (B, M, 2)
    valid = dn_meta["pos_valid"].to(dn_spans.device)[:, None, :].expand(bsz, groups, max_gt)  # (B, G, M)
    return pred[valid], gt[:, None].expand(bsz, groups, max_gt, 2)[valid]  # (K, 2), (K, 2)


# ----------------------------------------------------------------------------------------------- L_Q


def quality_targets(pred_spans: Tensor, targets: Sequence[Tensor]) -> Tensor:
    """Eq 8 target: max temporal IoU (not gIoU) of each prediction with its sample's GT, detached: [B, Q].
    A sample without GT gets 0."""
    with torch.no_grad():
        gt, valid = pad_spans(targets)  # (B, M, 2), (B, M)
        if gt.shape[1] == 0:
            return pred_spans.new_zeros(pred_spans.shape[:2])
        pred_xx = span_cxw_to_xx(pred_spans.detach())[:, :, None]  # (B, Q, 1, 2)
        iou = paired_temporal_iou(pred_xx, span_cxw_to_xx(gt.to(pred_spans))[:, None])  # (B, Q, M)
        iou = iou.masked_fill(~valid[:, None, :], 0.0)  # padded GT rows never count
        return iou.max(dim=2).values  # (B, Q)


# BAM-DETR's IoU bins of the quality loss: (0.7, 1], (0.3, 0.7], [0, 0.3].
QUALITY_BINS = (0.3, 0.7)
QUALITY_BALANCES = ("none", "iou_bins")
# How the N_n noise groups enter L_noise and eq 9 (docs/readings.md "Noise groups"): gt divides the sum over
# groups and GT spans by the #GT spans (eq 9's 1/N_gt); pairs by the #(group, GT) pairs (DN-DETR).
NOISE_REDUCTIONS = ("gt", "pairs")


def iou_bin_balanced_mean(
    errors: Tensor, target: Tensor, count_reducer: CountReducer | None = None
) -> Tensor:
    """BAM-DETR's balancing of eq 8: the mean of `errors` within each IoU bin of `target` (IoU > 0.7,
    0.3 < IoU <= 0.7, IoU <= 0.3; an empty bin adds 0), summed and divided by 3. Both [B, Q].

    count_reducer: maps this process's 3 bin counts to the counts to divide by (DDP: the global count /
    world size, so that the gradient average equals one process on the global batch); None: local."""
    low, high = QUALITY_BINS
    bins = (target > high, (target > low) & (target <= high), target <= low)
    members = torch.stack(bins).to(errors.dtype)  # (3, B, Q) one-hot bin of each query
    counts = members.sum(dim=(1, 2))  # (3,)
    if count_reducer is not None:
        counts = count_reducer(counts)
    sums = (members * errors).sum(dim=(1, 2))  # (3,)
    # an empty bin has sum 0 and adds 0; no host sync on its count
    return (sums / counts.clamp(min=1e-12)).sum() / len(bins)


def quality_loss(
    pred_quality: Tensor,
    pred_spans: Tensor,
    targets: Sequence[Tensor],
    matches: Sequence[Match],
    matched_weight: float,
    balance: str = "none",
    count_reducer: CountReducer | None = None,
) -> Tensor:
    """Eq 8: `mean_j c_j·|q_j − max_n IoU(m_j, m_n)|`, c_j = w_q for matched queries, 1 otherwise (eq 8's
    Σ_j normalised by the number of queries, as eq 7's Σ by the GT count; docs/readings.md "Eq 8").

    balance (`loss.quality_balance`): `none` is the mean over all queries; `iou_bins` the mean within
    each IoU bin, averaged over the 3 bins (BAM-DETR's code, `iou_bin_balanced_mean`), so the many
    low-IoU queries do not dominate and pull every q to 0."""
    if balance not in QUALITY_BALANCES:
        raise ValueError(f"quality balance must be one of {QUALITY_BALANCES}, got {balance!r}")
    target = quality_targets(pred_spans, targets)  # (B, Q)
    weight = torch.ones_like(target)  # (B, Q)
    index = matched_index(matches, [int(t.shape[0]) for t in targets], weight.device)  # (3, K)
    weight[index[0], index[1]] = matched_weight
    errors = weight * (pred_quality - target).abs()  # (B, Q)
    return iou_bin_balanced_mean(errors, target, count_reducer) if balance == "iou_bins" else errors.mean()


def noise_divisor(num_pairs: float, groups: int, reduction: str) -> float:
    """The divisor of L_noise and eq 9 for `num_pairs` (group, GT) pairs of N_n = `groups` noise groups:
    `gt` the #GT spans (num_pairs / groups), `pairs` num_pairs itself; at least 1.

    >>> noise_divisor(10.0, 5, "gt"), noise_divisor(10.0, 5, "pairs")
    (2.0, 10.0)
    """
    if reduction not in NOISE_REDUCTIONS:
        raise ValueError(f"noise reduction must be one of {NOISE_REDUCTIONS}, got {reduction!r}")
    return max(num_pairs / groups if reduction == "gt" else num_pairs, 1.0)


def quality_margin_loss(
    dn_quality: Tensor, dn_meta: dict, margin: float, num_pairs: float | None = None, reduction: str = "gt"
) -> Tensor:
    """Eq 9: `Σ max(q_neg − q_pos + δ_q, 0)` over the (group, GT) pairs of noise queries, divided by
    `noise_divisor` (reduction `gt`: 1/N_gt as written; `pairs`: the mean over the pairs).

    dn_quality: [B, N_dn] with negatives in the layout `g·2M + p·M + j`; num_pairs: the number of pairs
    (default: this batch's; the criterion passes its reduced count, see `SetCriterion.normalizers`).
    """
    bsz = dn_quality.shape[0]
    groups, max_gt = dn_meta["num_groups"], dn_meta["max_gt"]
    q = dn_quality.view(bsz, groups, 2, max_gt)  # (B, G, 2, M)
    hinge = (q[:, :, 1] - q[:, :, 0] + margin).clamp(min=0)  # (B, G, M)
    valid = dn_meta["pos_valid"].to(dn_quality.device)[:, None, :].expand(bsz, groups, max_gt)  # (B, G, M)
    num = float(valid.sum()) if num_pairs is None else float(num_pairs)
    return hinge[valid].sum() / noise_divisor(num, groups, reduction)


# ----------------------------------------------------------------------------------------------- L_A


def vtc_loss(video_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, vid_index: Tensor) -> Tensor:
    """L_vtc: symmetric CLIP InfoNCE between pooled video [B, d] and text [B, d] embeddings.

    Logits `exp(logit_scale)·cos` (scale clamped at 100 as in CLIP); a pair from the same video but a
    different sample is not a negative and is removed from the logits. Mean of the two directions.
    """
    v = F.normalize(video_emb, dim=-1)
    t = F.normalize(text_emb, dim=-1)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * v @ t.t()  # (B, B): video i vs text j
    vid_index = vid_index.to(logits.device)
    same_video = vid_index[:, None] == vid_index[None, :]  # (B, B)
    eye = torch.eye(len(v), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same_video & ~eye, float("-inf"))
    labels = torch.arange(len(v), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def clip_sentence_cosine(clip_emb: Tensor, sent_emb: Tensor) -> Tensor:
    """S of 3.2: cosine of every clip [B, L, d] with its own sentence token [B, d] -> [B, L]."""
    return F.cosine_similarity(clip_emb, sent_emb[:, None, :], dim=-1)


def ctm_local_loss(
    cos: Tensor, relevant: Tensor, video_mask: Tensor, tau: float, num_clips: float | None = None
) -> Tensor:
    """L_local (TR-DETR): BCE-with-logits of S/τ [B, L] against the 0/1 positives, mean over valid clips
    (divisor `num_clips`, default this batch's number of valid clips)."""
    bce = F.binary_cross_entropy_with_logits(cos / tau, relevant.to(cos.dtype), reduction="none")  # (B, L)
    mask = video_mask.to(cos.dtype)
    num = float(mask.sum()) if num_clips is None else float(num_clips)
    return (bce * mask).sum() / max(num, 1.0)


def ctm_anchors(saliency: Tensor, relevant: Tensor, video_mask: Tensor) -> tuple[Tensor, Tensor]:
    """UniVTG anchor: the positive clip with the highest saliency (first on ties) -> ([B] index, [B] has)."""
    candidates = relevant.bool() & video_mask.bool()  # (B, L)
    score = saliency.float().masked_fill(~candidates, float("-inf"))  # (B, L)
    return score.argmax(dim=1), candidates.any(dim=1)


def ctm_inter_loss(
    clip_emb: Tensor, sent_emb: Tensor, saliency: Tensor, relevant: Tensor, video_mask: Tensor, tau: float
) -> Tensor:
    """L_inter (UniVTG): symmetric InfoNCE at τ over the cosines between each sample's anchor clip and
    the batch's sentence tokens (samples without a positive clip are left out), mean of both directions.
    """
    anchor, has = ctm_anchors(saliency, relevant, video_mask)  # (B,), (B,)
    if not has.any():
        return clip_emb.sum() * 0
    idx = has.nonzero(as_tuple=True)[0]  # (B',)
    clips = F.normalize(clip_emb[idx, anchor[idx]], dim=-1)  # (B', d)
    sents = F.normalize(sent_emb[idx], dim=-1)  # (B', d)
    logits = clips @ sents.t() / tau  # (B', B')
    labels = torch.arange(len(idx), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def ctm_intra_loss(cos: Tensor, saliency: Tensor, relevant: Tensor, video_mask: Tensor, tau: float) -> Tensor:
    """L_intra (UniVTG): InfoNCE of the anchor clip against itself ∪ the valid clips of its video that are
    less salient than it, on S/τ [B, L]; mean over samples with an anchor."""
    anchor, has = ctm_anchors(saliency, relevant, video_mask)  # (B,), (B,)
    if not has.any():
        return cos.sum() * 0
    rows = torch.arange(len(cos), device=cos.device)
    anchor_sal = saliency[rows, anchor]  # (B,)
    keep = (saliency < anchor_sal[:, None]) & video_mask.bool()  # (B, L) negatives
    keep[rows, anchor] = True
    logits = (cos / tau).masked_fill(~keep, float("-inf"))  # (B, L)
    log_prob = logits.log_softmax(dim=1)[rows, anchor]  # (B,)
    return -(log_prob[has]).mean()


# ----------------------------------------------------------------------------------------------- L_S


def saliency_margin_loss(scores: Tensor, pos_idx: Tensor, neg_idx: Tensor, margin: float) -> Tensor:
    """QD-DETR/Moment-DETR margin ranking: `max(0, margin + s_neg − s_pos)` over the sampled clip pairs
    [B, P], summed and divided by B·P, times 2 (as in both codebases, "to keep the scale")."""
    s_pos = scores.gather(1, pos_idx.to(scores.device))  # (B, P)
    s_neg = scores.gather(1, neg_idx.to(scores.device))  # (B, P)
    return (margin + s_neg - s_pos).clamp(min=0).sum() / s_pos.numel() * 2


def saliency_rank_loss(
    scores: Tensor, scores_neg: Tensor | None, labels: Tensor, video_mask: Tensor, tau: float
) -> Tensor:
    """QD-DETR rank-contrastive term: for each level r, clips with label ≥ r are the positives of an
    InfoNCE at τ over all valid clips of the video plus (if given) its negative-pass clips (label 0);
    per level, the mean over the batch (samples without positives add 0); summed over r, divided by 12.
    scores, scores_neg, labels: [B, L]; video_mask: [B, L] bool.
    """
    valid = video_mask.bool()
    if scores_neg is not None:
        scores = torch.cat([scores, scores_neg], dim=1)  # (B, 2L)
        labels = torch.cat([labels, torch.zeros_like(labels)], dim=1)  # (B, 2L)
        valid = torch.cat([valid, valid], dim=1)  # (B, 2L)
    log_prob = (scores / tau).masked_fill(~valid, float("-inf")).log_softmax(dim=1)  # (B, L')
    levels = torch.tensor(RANK_LEVELS, dtype=labels.dtype).to(scores.device, non_blocking=True)  # (R,)
    pos = (labels[None] >= levels[:, None, None]) & valid[None]  # (R, B, L') all levels at once
    num_pos = pos.sum(dim=2)  # (R, B)
    # a sample without positives at a level has mean_pos 0 there: it adds 0 but counts in the batch mean
    mean_pos = torch.where(pos, log_prob[None], 0.0).sum(dim=2) / num_pos.clamp(min=1)  # (R, B)
    return -mean_pos.mean(dim=1).sum() / RANK_NORM


def saliency_neg_loss(scores_neg: Tensor, video_mask: Tensor) -> Tensor:
    """QD-DETR negative pair: `−log(1 − sigmoid(s_neg))` summed over valid clips, mean over the batch."""
    return (F.softplus(scores_neg) * video_mask.to(scores_neg.dtype)).sum(dim=1).mean()


# ----------------------------------------------------------------------------------------------- criterion


def _suffixed(terms: dict, suffix: str) -> dict:
    return {k + suffix: v for k, v in terms.items()}


CountReducer = Callable[[Tensor], Tensor]
# Counts of `SetCriterion.normalizers`, in this order (one all-reduce of a small vector per step).
NORMALIZER_KEYS = ("spans", "dn", "clips")


def mean_over_processes(counts: Tensor) -> Tensor:
    """Count reducer for DDP: all-reduce (sum) `counts` [K] over the default process group and divide by the
    world size (DETR's `num_boxes`); identity when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return counts
    counts = counts.clone()
    dist.all_reduce(counts)
    return counts / dist.get_world_size()


class SetCriterion(nn.Module):
    """All of SA-DETR's losses (detr style): per-layer terms in `layer_losses`, the others in `losses`.

    `forward(out, batch)` returns the named, unweighted terms; `weight_dict` maps each name to its
    weight, so the total is `sum(weight_dict[k] * v)` (see `total`). Subclasses (baselines) may add
    entries to `layer_loss_map` / `loss_map` and override `match`.

    `count_reducer` (public, settable after construction): a function mapping this process's
    normalisation counts [K] (`NORMALIZER_KEYS`) to the counts to divide by; None keeps them local. For
    DDP use `mean_over_processes` (global count / world size), see the module docstring.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        layer_losses: Sequence[str] = ("spans", "quality"),
        losses: Sequence[str] = ("init", "dn", "qmargin", "vtc", "ctm", "saliency"),
        aux_loss: bool = True,
        quality_matched_weight: float = 1.0,
        qmargin: float = 0.4,
        saliency_margin: float = 0.2,
        rank_contrast_tau: float = 0.5,
        align_tau: float = 0.07,
        count_reducer: CountReducer | None = None,
        quality_balance: str = "none",
        noise_reduction: str = "gt",
        qmargin_reduction: str = "gt",
    ) -> None:
        super().__init__()
        self.quality_balance = quality_balance
        self.noise_reduction = noise_reduction
        self.qmargin_reduction = qmargin_reduction
        self.count_reducer = count_reducer
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.aux_loss = aux_loss
        self.quality_matched_weight = quality_matched_weight
        self.qmargin = qmargin
        self.saliency_margin = saliency_margin
        self.rank_contrast_tau = rank_contrast_tau
        self.align_tau = align_tau
        self.layer_loss_map: dict[str, Callable[..., dict[str, Tensor]]] = {
            "spans": self.loss_spans,
            "quality": self.loss_quality,
        }
        self.loss_map: dict[str, Callable[..., dict[str, Tensor]]] = {
            "init": self.loss_init,
            "dn": self.loss_dn,
            "qmargin": self.loss_qmargin,
            "vtc": self.loss_vtc,
            "ctm": self.loss_ctm,
            "saliency": self.loss_saliency,
        }
        for name in layer_losses:
            if name not in self.layer_loss_map:
                raise ValueError(f"unknown per-layer loss {name!r}")
        for name in losses:
            if name not in self.loss_map:
                raise ValueError(f"unknown loss {name!r}")
        self.layer_losses = list(layer_losses)
        self.losses = list(losses)

    # -- helpers
    def match(self, layer_out: dict, targets: Sequence[Tensor]) -> list[Match]:
        """Hungarian matching of one layer's direct predictions (override to add e.g. a class cost)."""
        return self.matcher(layer_out["pred_spans"], list(targets))

    def normalizers(self, out: dict, batch: dict) -> dict[str, float]:
        """The loss divisors of this batch: `spans` (#GT spans), `dn` (#positive noise queries = #eq 9
        pairs), `clips` (#valid clips), after `count_reducer` (called exactly once, on every process)."""
        dn_meta = out.get("dn_meta")
        clips = out["video_mask"].sum().to(torch.float64)  # () on the device
        num_dn = clips.new_zeros(())
        if out.get("dn_outputs") and dn_meta is not None:
            num_dn = dn_meta["num_groups"] * dn_meta["pos_valid"].sum().to(torch.float64)
        num_spans = clips.new_full((), float(sum(int(t.shape[0]) for t in batch["spans"])))  # a fill, no copy
        counts = torch.stack([num_spans, num_dn, clips])  # (K,), no device sync until the reduction below
        if self.count_reducer is not None:
            counts = self.count_reducer(counts)
        return dict(zip(NORMALIZER_KEYS, counts.tolist()))  # (K,): the step's one sync of the criterion

    def _num_spans(self, batch: dict) -> float:
        num = self._norm(batch, "spans")
        return float(sum(int(t.shape[0]) for t in batch["spans"])) if num is None else num

    def _norm(self, batch: dict, key: str) -> float | None:
        """The divisor `key` of this forward (None when a loss method is called outside `forward`)."""
        return (batch.get("normalizers") or {}).get(key)

    def total(self, losses: dict[str, Tensor]) -> Tensor:
        """Eq 10: `Σ weight_dict[k]·losses[k]` over the computed terms that have a weight."""
        # cast: sum() starts from the int 0, which it returns only when no weighted term was computed
        return cast(Tensor, sum(self.weight_dict[k] * v for k, v in losses.items() if k in self.weight_dict))

    # -- per-layer terms (direct group)
    def loss_spans(self, layer_out: dict, batch: dict, matches: list[Match]) -> dict[str, Tensor]:
        """Eq 7 (L_direct): `loss_l1`, `loss_giou` on matched pairs, normalised by the batch's GT count."""
        src, tgt = matched_spans(layer_out["pred_spans"], batch["spans"], matches)
        l1, giou = span_losses(src, tgt, self._num_spans(batch))
        return {"loss_l1": l1, "loss_giou": giou}

    def loss_quality(self, layer_out: dict, batch: dict, matches: list[Match]) -> dict[str, Tensor]:
        """Eq 8: `loss_quality` (IoU target detached, w_q on matched queries)."""
        loss = quality_loss(
            layer_out["pred_quality"],
            layer_out["pred_spans"],
            batch["spans"],
            matches,
            self.quality_matched_weight,
            self.quality_balance,
            self.count_reducer,
        )
        return {"loss_quality": loss}

    # -- other terms
    def loss_init(self, out: dict, batch: dict) -> dict[str, Tensor]:
        """L_init: eq 7 on the initial anchors S_d with their own Hungarian matching."""
        if out.get("init_spans") is None:
            raise ValueError("loss 'init' is enabled but the model output has no init_spans")
        init = {"pred_spans": out["init_spans"]}
        src, tgt = matched_spans(init["pred_spans"], batch["spans"], self.match(init, batch["spans"]))
        l1, giou = span_losses(src, tgt, self._num_spans(batch))
        return {"loss_init_l1": l1, "loss_init_giou": giou}

    def _dn_layers(self, out: dict) -> list[tuple[dict, str]]:
        dn = out.get("dn_outputs")
        if not dn or out.get("dn_meta") is None:
            return []  # no noise queries (evaluation, or a batch without GT): the terms are absent
        layers = [(dn[-1], "")]
        if self.aux_loss:
            layers += [(d, f"_{i}") for i, d in enumerate(dn[:-1])]
        return layers

    def loss_dn(self, out: dict, batch: dict) -> dict[str, Tensor]:
        """L_noise: eq 7 on positive noise predictions vs their own GT, every decoder layer; the sum over
        the noise groups and GT spans divided by `noise_divisor` (`loss.noise_reduction`)."""
        terms: dict[str, Tensor] = {}
        groups = out["dn_meta"]["num_groups"] if out.get("dn_meta") else 1
        for dn_out, suffix in self._dn_layers(out):
            src, tgt = dn_positive_spans(dn_out["pred_spans"], batch["spans"], out["dn_meta"])
            num = self._norm(batch, "dn")
            divisor = noise_divisor(float(len(src) if num is None else num), groups, self.noise_reduction)
            l1, giou = span_losses(src, tgt, divisor)
            terms.update(_suffixed({"loss_dn_l1": l1, "loss_dn_giou": giou}, suffix))
        return terms

    def loss_qmargin(self, out: dict, batch: dict) -> dict[str, Tensor]:
        """Eq 9 on the noise queries' quality, every decoder layer (needs negative noise groups)."""
        layers = self._dn_layers(out)
        if not layers or not out["dn_meta"]["has_negatives"]:
            return {}
        return {
            "loss_qmargin" + suffix: quality_margin_loss(
                dn_out["pred_quality"],
                out["dn_meta"],
                self.qmargin,
                self._norm(batch, "dn"),
                self.qmargin_reduction,
            )
            for dn_out, suffix in layers
        }

    def loss_vtc(self, out: dict, batch: dict) -> dict[str, Tensor]:
        """L_vtc on out["vtc"] (pairs of the same video masked via batch["vid_index"])."""
        vtc = out.get("vtc")
        if vtc is None:
            raise ValueError("loss 'vtc' is enabled but the model output has no 'vtc'")
        return {
            "loss_vtc": vtc_loss(vtc["video_emb"], vtc["text_emb"], vtc["logit_scale"], batch["vid_index"])
        }

    def loss_ctm(self, out: dict, batch: dict) -> dict[str, Tensor]:
        """L_ctm = L_local + L_intra + L_inter on out["ctm"] (positives: batch["relevant"])."""
        ctm = out.get("ctm")
        if ctm is None:
            raise ValueError("loss 'ctm' is enabled but the model output has no 'ctm'")
        mask = out["video_mask"]
        cos = clip_sentence_cosine(ctm["clip_emb"], ctm["sent_emb"])  # (B, L)
        sal, rel = batch["saliency"].to(cos.device), batch["relevant"].to(cos.device)
        tau = self.align_tau
        return {
            "loss_ctm_local": ctm_local_loss(cos, rel, mask, tau, self._norm(batch, "clips")),
            "loss_ctm_intra": ctm_intra_loss(cos, sal, rel, mask, tau),
            "loss_ctm_inter": ctm_inter_loss(ctm["clip_emb"], ctm["sent_emb"], sal, rel, mask, tau),
        }

    def loss_saliency(self, out: dict, batch: dict) -> dict[str, Tensor]:
        """L_S (QD-DETR): margin ranking, rank-contrastive and (with a negative pass) negative-pair terms."""
        scores, neg, mask = out["saliency_scores"], out.get("saliency_scores_neg"), out["video_mask"]
        terms = {
            "loss_sal_margin": saliency_margin_loss(
                scores, batch["saliency_pos_idx"], batch["saliency_neg_idx"], self.saliency_margin
            ),
            "loss_sal_rank": saliency_rank_loss(
                scores, neg, batch["saliency"].to(scores), mask, self.rank_contrast_tau
            ),
        }
        if neg is not None:
            terms["loss_sal_neg"] = saliency_neg_loss(neg, mask)
        return terms

    def forward(self, out: dict, batch: dict) -> dict[str, Tensor]:
        """out: the model's output dict; batch: the collated batch (uses spans, saliency, relevant,
        saliency_pos_idx/neg_idx, vid_index). Returns the unweighted terms, divided by `normalizers`."""
        device = out["pred_spans"].device
        batch = {**batch, "spans": [t.to(device) for t in batch["spans"]]}
        batch["normalizers"] = self.normalizers(out, batch)
        losses: dict[str, Tensor] = {}
        layers = [(out, "")]
        if self.aux_loss:
            layers += [(aux, f"_{i}") for i, aux in enumerate(out.get("aux_outputs") or [])]
        for layer_out, suffix in layers:
            matches = self.match(layer_out, batch["spans"])
            for name in self.layer_losses:
                losses.update(_suffixed(self.layer_loss_map[name](layer_out, batch, matches), suffix))
        for name in self.losses:
            losses.update(self.loss_map[name](out, batch))
        return losses


def build_sa_detr_criterion(model_cfg: ModelConfig, loss_cfg: LossConfig) -> SetCriterion:
    """SA-DETR's criterion: terms switched on by the config and their eq 10 weights (Table 9)."""
    for key, value, allowed in (
        ("loss.quality_balance", loss_cfg.quality_balance, QUALITY_BALANCES),
        ("loss.noise_reduction", loss_cfg.noise_reduction, NOISE_REDUCTIONS),
        ("loss.qmargin_reduction", loss_cfg.qmargin_reduction, NOISE_REDUCTIONS),
    ):
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(allowed)}, got {value!r}", key)
    lam_m, lam_q, lam_a, lam_s = (
        loss_cfg.lambda_moment,
        loss_cfg.lambda_quality,
        loss_cfg.lambda_align,
        loss_cfg.lambda_saliency,
    )
    moment = {"l1": lam_m * loss_cfg.l1, "giou": lam_m * loss_cfg.giou}
    layer_w = {"loss_l1": moment["l1"], "loss_giou": moment["giou"], "loss_quality": lam_q}
    aux_suffixes = [f"_{i}" for i in range(model_cfg.n_dec_layers - 1)] if loss_cfg.aux_loss else []
    weights: dict[str, float] = {}
    for suffix in ["", *aux_suffixes]:
        weights.update(_suffixed(layer_w, suffix))
    losses: list[str] = []
    if model_cfg.anchor_init == "instance" and model_cfg.use_init_loss:
        losses.append("init")
        weights.update({"loss_init_l1": moment["l1"], "loss_init_giou": moment["giou"]})
    if model_cfg.use_dn:
        losses.append("dn")
        for suffix in ["", *aux_suffixes]:
            weights.update({"loss_dn_l1" + suffix: moment["l1"], "loss_dn_giou" + suffix: moment["giou"]})
        if model_cfg.dn_negatives:
            losses.append("qmargin")
            weights.update({"loss_qmargin" + suffix: lam_q for suffix in ["", *aux_suffixes]})
    if model_cfg.use_vtc:
        losses.append("vtc")
        weights["loss_vtc"] = lam_a
    if model_cfg.use_ctm:
        losses.append("ctm")
        lam_univtg = lam_a * loss_cfg.ctm_univtg_weight
        weights.update({"loss_ctm_local": lam_a, "loss_ctm_intra": lam_univtg, "loss_ctm_inter": lam_univtg})
    losses.append("saliency")
    weights.update({"loss_sal_margin": lam_s, "loss_sal_rank": lam_s})
    if model_cfg.use_negative_pass:
        weights["loss_sal_neg"] = lam_s
    return SetCriterion(
        matcher=build_matcher(loss_cfg),
        weight_dict=weights,
        layer_losses=("spans", "quality"),
        losses=losses,
        aux_loss=loss_cfg.aux_loss,
        quality_matched_weight=loss_cfg.quality_matched_weight,
        qmargin=loss_cfg.qmargin,
        saliency_margin=loss_cfg.saliency_margin,
        rank_contrast_tau=loss_cfg.rank_contrast_tau,
        align_tau=loss_cfg.align_tau,
        quality_balance=loss_cfg.quality_balance,
        noise_reduction=loss_cfg.noise_reduction,
        qmargin_reduction=loss_cfg.qmargin_reduction,
    )
