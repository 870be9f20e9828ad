"""Mutation harness for the core math: how many realistic small bugs does the fast test suite catch?

Each entry of `MUTATIONS` names one bug: a source file under `src/sadetr/`, an exact snippet of it, its
replacement and the test files that should notice. The harness copies `src/`, `tests/` and
`pyproject.toml` into a scratch directory, applies one mutation at a time there (the checkout is never
touched), runs `pytest -x -q -p no:xdist -m "not slow"` on that mutation's test files with PYTHONPATH
pointing at the copy's `src`, and counts the mutation as caught when pytest fails (or runs past the
timeout). It prints one line per mutation, then the score and the survivors. Each pytest run is a
forked child of the harness, which has imported torch/numpy/scipy/pytest once (never `sadetr`);
`--no-fork` starts a fresh interpreter per run instead.

Shared data: the tests find `../shared/data` as `Path(__file__).parents[2] / "shared" / "data"`. The
scratch layout is `<tmp>/worker<i>/repo/{src,tests}`, so `<tmp>/worker<i>/shared` is what the copied tests
see: by default a link to the checkout's `../shared`; with `--no-shared-data` it does not exist, which
runs the suite as a checkout without the shared data does (the tests that need it skip).

    python tools/mutation.py                      # all mutations, with ../shared/data if present
    python tools/mutation.py --no-shared-data     # as a checkout without it
    python tools/mutation.py --jobs 2             # two mutations at a time (one scratch copy each)
    python tools/mutation.py -k encoder -k rank   # only mutations whose name contains a pattern
    python tools/mutation.py --list               # the names
    python tools/mutation.py --check              # only verify every snippet occurs exactly once

`make mutation` runs both full passes. It is CPU-heavy (one pytest run per mutation) and not part of CI;
the test suite only checks that every snippet still occurs exactly once in its file
(`tests/test_mutation_harness.py`), so the list cannot silently rot when the code changes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    """One named bug: replace the single occurrence of `original` in `src/sadetr/<path>`."""

    name: str
    path: str  # relative to src/sadetr
    original: str
    replacement: str
    tests: tuple[str, ...]  # test files (relative to tests/) that must catch it


# Test files per source module: the module's own tests, its reference tests and the model-level tests.
SPAN_T = (
    "test_span_ops.py",
    "test_decoder.py",
    "test_decoder_reference.py",
    "test_matcher.py",
    "test_losses.py",
    "test_loss_fast_path.py",
)
MATCH_T = ("test_matcher.py", "test_losses.py")
LOSS_T = ("test_losses.py", "test_loss_fast_path.py")
DN_T = ("test_denoising.py", "test_decoder_reference.py", "test_sa_detr.py", "test_loss_fast_path.py")
DEC_T = ("test_decoder.py", "test_decoder_reference.py", "test_decoder_fast_path.py", "test_sa_detr.py")
ENC_T = ("test_encoder.py", "test_encoder_reference.py", "test_sa_detr.py")
QI_T = ("test_query_init.py", "test_sa_detr.py")
EVAL_T = ("test_eval.py",)


def _m(name: str, path: str, original: str, replacement: str, tests: tuple[str, ...]) -> Mutation:
    return Mutation(name, path, original, replacement, tests)


SPAN, MATCH, LOSS = "model/span_ops.py", "model/matcher.py", "model/losses.py"
DN, DEC, ENC, QI = "model/denoising.py", "model/decoder.py", "model/encoder.py", "model/query_init.py"
MOMENT, HL = "eval/moment.py", "eval/highlight.py"

MUTATIONS: tuple[Mutation, ...] = (
    # ------------------------------------------------------------------------------------ span_ops
    _m("span_ops.cxw_to_xx_full_width", SPAN, "[c - 0.5 * w, c + 0.5 * w]", "[c - w, c + w]", SPAN_T),
    _m(
        "span_ops.xx_to_cxw_half_width",
        SPAN,
        "[0.5 * (s + e), e - s]",
        "[0.5 * (s + e), 0.5 * (e - s)]",
        SPAN_T,
    ),
    _m(
        "span_ops.iou_no_clamp",
        SPAN,
        "inter = (right - left).clamp(min=0)  # (N, M)",
        "inter = right - left",
        SPAN_T,
    ),
    _m(
        "span_ops.iou_union_plus_inter",
        SPAN,
        "union = areas1[:, None] + areas2[None, :] - inter",
        "union = areas1[:, None] + areas2[None, :] + inter",
        SPAN_T,
    ),
    _m(
        "span_ops.giou_divides_by_union",
        SPAN,
        "return iou - (enclosing - union) / enclosing.clamp(min=1e-12)",
        "return iou - (enclosing - union) / union.clamp(min=1e-12)",
        SPAN_T,
    ),
    _m(
        "span_ops.giou_enclosing_left_max",
        SPAN,
        "left = torch.min(spans1[:, None, 0], spans2[None, :, 0])",
        "left = torch.max(spans1[:, None, 0], spans2[None, :, 0])",
        SPAN_T,
    ),
    _m(
        "span_ops.paired_giou_sign",
        SPAN,
        "return inter / union.clamp(min=1e-12) - (enclosing - union)",
        "return inter / union.clamp(min=1e-12) + (enclosing - union)",
        SPAN_T,
    ),
    _m(
        "span_ops.paired_iou_wrong_union",
        SPAN,
        "    return inter / union.clamp(min=1e-12)\n",
        "    return inter / (union + inter).clamp(min=1e-12)\n",
        SPAN_T,
    ),
    _m(
        "span_ops.pad_spans_no_row_start",
        SPAN,
        "slots = [b * max_n + j for b, n in enumerate(counts) for j in range(n)]",
        "slots = [b + j for b, n in enumerate(counts) for j in range(n)]",
        SPAN_T,
    ),
    _m("span_ops.inverse_sigmoid_sign", SPAN, "torch.log(x / (1 - x))", "torch.log(x / (1 + x))", SPAN_T),
    _m(
        "span_ops.sine_freq_exponent",
        SPAN,
        "temperature ** (2 * k / dim)",
        "temperature ** (k / dim)",
        SPAN_T,
    ),
    _m(
        "span_ops.sine_no_2pi",
        SPAN,
        "scale: float | Tensor = 2 * math.pi\n) -> Tensor:",
        "scale: float | Tensor = math.pi\n) -> Tensor:",
        SPAN_T,
    ),
    _m(
        "span_ops.sine_cos_first",
        SPAN,
        "[angles.sin(), angles.cos()]",
        "[angles.cos(), angles.sin()]",
        SPAN_T,
    ),
    _m(
        "span_ops.span_embedding_swaps_c_w",
        SPAN,
        "sine_embedding(spans_cxw[..., 0], dim // 2, scale=scale),\n"
        "            sine_embedding(spans_cxw[..., 1], dim // 2, scale=scale),",
        "sine_embedding(spans_cxw[..., 1], dim // 2, scale=scale),\n"
        "            sine_embedding(spans_cxw[..., 0], dim // 2, scale=scale),",
        SPAN_T,
    ),
    _m(
        "span_ops.clip_center_off_by_half",
        SPAN,
        "return (idx[None, :] + 0.5) / lengths",
        "return idx[None, :] / lengths",
        SPAN_T,
    ),
    _m(
        "span_ops.clip_centers_count_padding",
        SPAN,
        "lengths = video_mask.sum(dim=1, keepdim=True)",
        "lengths = torch.ones_like(video_mask).sum(dim=1, keepdim=True)",
        SPAN_T,
    ),
    _m("span_ops.gaussian_w_not_squared", SPAN, "** 2 / w**2)", "** 2 / w)", SPAN_T),
    _m(
        "span_ops.gaussian_keeps_padding",
        SPAN,
        "return mask * video_mask[:, None, :].to(mask.dtype)",
        "return mask",
        SPAN_T,
    ),
    _m(
        "span_ops.align_points_off_by_half",
        SPAN,
        "(k + 0.5) * spans_cxw[..., 1:2] / num_points",
        "k * spans_cxw[..., 1:2] / num_points",
        SPAN_T,
    ),
    _m(
        "span_ops.align_index_no_half",
        SPAN,
        "pos = points * lengths[:, None, None] - 0.5",
        "pos = points * lengths[:, None, None]",
        SPAN_T,
    ),
    _m(
        "span_ops.align_swapped_weights",
        SPAN,
        "f_lo * (1 - frac) + f_hi * frac",
        "f_lo * frac + f_hi * (1 - frac)",
        SPAN_T,
    ),
    _m(
        "span_ops.align_reads_padding",
        SPAN,
        "pos = torch.minimum(pos.clamp(min=0), (lengths - 1)[:, None, None])",
        "pos = pos.clamp(min=0, max=video_mask.shape[1] - 1)",
        SPAN_T,
    ),
    # ------------------------------------------------------------------------------------ matcher
    _m("matcher.l2_cost", MATCH, "torch.cdist(out, tgt, p=1)", "torch.cdist(out, tgt, p=2)", MATCH_T),
    _m(
        "matcher.giou_cost_sign",
        MATCH,
        "cost_giou = -generalized_temporal_iou(",
        "cost_giou = generalized_temporal_iou(",
        MATCH_T,
    ),
    _m(
        "matcher.weights_swapped",
        MATCH,
        "cost = self.cost_l1 * cost_l1 + self.cost_giou * cost_giou",
        "cost = self.cost_giou * cost_l1 + self.cost_l1 * cost_giou",
        MATCH_T,
    ),
    _m(
        "matcher.maximize",
        MATCH,
        "linear_sum_assignment(c[b].numpy())",
        "linear_sum_assignment(c[b].numpy(), maximize=True)",
        MATCH_T,
    ),
    _m(
        "matcher.first_sample_block",
        MATCH,
        "linear_sum_assignment(c[b].numpy())",
        "linear_sum_assignment(c[0].numpy())",
        MATCH_T,
    ),
    _m(
        "matcher.build_swaps_costs",
        MATCH,
        "HungarianMatcher(cost_l1=loss_cfg.l1, cost_giou=loss_cfg.giou)",
        "HungarianMatcher(cost_l1=loss_cfg.giou, cost_giou=loss_cfg.l1)",
        MATCH_T,
    ),
    # ------------------------------------------------------------------------------------ losses
    _m(
        "losses.l1_sum_over_cw",
        LOSS,
        'reduction="none").mean(-1).sum() / num',
        'reduction="none").sum(-1).sum() / num',
        LOSS_T,
    ),
    _m(
        "losses.giou_mean_not_num",
        LOSS,
        "loss_giou = (1 - giou).sum() / num",
        "loss_giou = (1 - giou).mean()",
        LOSS_T,
    ),
    _m(
        "losses.dn_uses_negatives",
        LOSS,
        "[:, :, 0]  # (B, G, M, 2) positives",
        "[:, :, -1]  # (B, G, M, 2) positives",
        LOSS_T,
    ),
    _m(
        "losses.quality_mean_iou",
        LOSS,
        "return iou.max(dim=2).values  # (B, Q)",
        "return iou.mean(dim=2)  # (B, Q)",
        LOSS_T,
    ),
    _m(
        "losses.quality_no_matched_weight",
        LOSS,
        "weight[index[0], index[1]] = matched_weight",
        "weight[index[0], index[1]] = 1.0",
        LOSS_T,
    ),
    _m(
        "losses.quality_squared",
        LOSS,
        "errors = weight * (pred_quality - target).abs()  # (B, Q)",
        "errors = weight * (pred_quality - target) ** 2  # (B, Q)",
        LOSS_T,
    ),
    _m(
        "losses.eq8_bins_divide_by_filled",
        LOSS,
        "return (sums / counts.clamp(min=1e-12)).sum() / len(bins)",
        "return (sums / counts.clamp(min=1e-12)).sum() / (counts > 0).sum()",
        ("test_readings.py",),
    ),
    _m(
        "losses.eq9_default_pairs",
        "model/config.py",
        'qmargin_reduction: str = "gt"  # eq 9',
        'qmargin_reduction: str = "pairs"  # eq 9',
        ("test_readings.py",),
    ),
    _m(
        "decoder.eq4_default_raw",
        "model/config.py",
        'position_mode: str = "projected"  # eq 4',
        'position_mode: str = "raw"  # eq 4',
        ("test_readings.py",),
    ),
    _m(
        "decoder.position_scale_ignored",
        DEC,
        "scale = position_scale(video_mask, self.position_unit)  # 2π or (B, 1)",
        "scale = 2 * math.pi  # 2π or (B, 1)",
        ("test_readings.py",),
    ),
    _m(
        "decoder.position_scale_clip_as_video",
        DEC,
        "return video_mask.sum(dim=1, keepdim=True).clamp(min=1).float()  # (B, 1)",
        "return 2 * math.pi  # (B, 1)",
        ("test_readings.py",),
    ),
    _m(
        "losses.eq8_sum_as_mean",
        LOSS,
        'return loss * pred_quality.shape[1] if reduction == "sum" else loss',
        "return loss",
        ("test_readings.py",),
    ),
    _m(
        "losses.eq8_default_plain_mean",
        "model/config.py",
        'quality_balance: str = "iou_bins"  # eq 8',
        'quality_balance: str = "none"  # eq 8',
        ("test_readings.py",),
    ),
    _m(
        "losses.qmargin_swapped",
        LOSS,
        "(q[:, :, 1] - q[:, :, 0] + margin)",
        "(q[:, :, 0] - q[:, :, 1] + margin)",
        LOSS_T,
    ),
    _m(
        "losses.qmargin_no_hinge",
        LOSS,
        "hinge = (q[:, :, 1] - q[:, :, 0] + margin).clamp(min=0)",
        "hinge = q[:, :, 1] - q[:, :, 0] + margin",
        LOSS_T,
    ),
    _m(
        "losses.vtc_same_video_not_masked",
        LOSS,
        'logits = logits.masked_fill(same_video & ~eye, float("-inf"))',
        "logits = logits",
        LOSS_T,
    ),
    _m(
        "losses.vtc_scale_unclamped",
        LOSS,
        "scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()",
        "scale = logit_scale.exp()",
        LOSS_T,
    ),
    _m(
        "losses.vtc_one_direction",
        LOSS,
        "labels = torch.arange(len(v), device=logits.device)\n"
        "    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))",
        "labels = torch.arange(len(v), device=logits.device)\n    return F.cross_entropy(logits, labels)",
        LOSS_T,
    ),
    _m(
        "losses.ctm_local_no_tau",
        LOSS,
        "F.binary_cross_entropy_with_logits(cos / tau,",
        "F.binary_cross_entropy_with_logits(cos,",
        LOSS_T,
    ),
    _m(
        "losses.ctm_local_counts_padding",
        LOSS,
        "return (bce * mask).sum() / max(num, 1.0)",
        "return bce.sum() / max(num, 1.0)",
        LOSS_T,
    ),
    _m(
        "losses.ctm_anchor_argmin",
        LOSS,
        "return score.argmax(dim=1), candidates.any(dim=1)",
        "return score.argmin(dim=1), candidates.any(dim=1)",
        LOSS_T,
    ),
    _m(
        "losses.ctm_anchor_padding",
        LOSS,
        "candidates = relevant.bool() & video_mask.bool()",
        "candidates = relevant.bool()",
        LOSS_T,
    ),
    _m(
        "losses.ctm_inter_no_tau",
        LOSS,
        "logits = clips @ sents.t() / tau",
        "logits = clips @ sents.t()",
        LOSS_T,
    ),
    _m(
        "losses.ctm_inter_unnormalised_sent",
        LOSS,
        "sents = F.normalize(sent_emb[idx], dim=-1)",
        "sents = sent_emb[idx]",
        LOSS_T,
    ),
    _m(
        "losses.ctm_intra_le",
        LOSS,
        "return saliency < anchor_sal[..., None]",
        "return saliency <= anchor_sal[..., None]",
        LOSS_T,
    ),
    _m(
        "losses.ctm_intra_padding_negatives",
        LOSS,
        "keep = ctm_intra_negatives(saliency, relevant, anchor_sal, negatives) & video_mask.bool()",
        "keep = ctm_intra_negatives(saliency, relevant, anchor_sal, negatives)",
        LOSS_T,
    ),
    _m(
        "losses.ctm_intra_keeps_no_anchor",
        LOSS,
        "log_prob = logits.log_softmax(dim=1)[rows, anchor]  # (B,)\n    return -(log_prob[has]).mean()",
        "log_prob = logits.log_softmax(dim=1)[rows, anchor]  # (B,)\n    return -log_prob.mean()",
        LOSS_T,
    ),
    _m(
        "decoder.quality_detach_ignored",
        DEC,
        "quality_in = content.detach() if self.quality_detach else content",
        "quality_in = content",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_intra_batch_relevance_of_own_clip",
        LOSS,
        "ctm_intra_negatives(at_anchor, relevant[:, anchor], own_sal, negatives)",
        "ctm_intra_negatives(at_anchor, relevant, own_sal, negatives)",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_intra_irrelevant_is_lower",
        LOSS,
        "return ~relevant.bool()",
        "return saliency < anchor_sal[..., None]",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_intra_negatives_ignored",
        LOSS,
        "intra = ctm_intra_loss(cos, sal, rel, mask, tau, negatives)",
        "intra = ctm_intra_loss(cos, sal, rel, mask, tau)",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_intra_negatives_not_in_batch_direction",
        LOSS,
        "intra = intra + ctm_intra_batch_loss(cos, sal, rel, mask, tau, negatives)",
        "intra = intra + ctm_intra_batch_loss(cos, sal, rel, mask, tau)",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_univtg_weight_default_one",
        "model/config.py",
        "ctm_univtg_weight: float = 0.1  #",
        "ctm_univtg_weight: float = 1.0  #",
        ("test_readings.py", "test_losses.py"),
    ),
    _m(
        "config.ctm_univtg_weight_not_legacy",
        "config.py",
        '    "loss.ctm_univtg_weight": 1.0,\n',
        "",
        ("test_checkpoint.py",),
    ),
    _m(
        "losses.ctm_univtg_weight_ignored",
        LOSS,
        "lam_univtg = lam_a * loss_cfg.ctm_univtg_weight",
        "lam_univtg = lam_a",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_univtg_weight_on_local",
        LOSS,
        '{"loss_ctm_local": lam_a, "loss_ctm_intra": lam_univtg',
        '{"loss_ctm_local": lam_univtg, "loss_ctm_intra": lam_univtg',
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_intra_batch_padding_negatives",
        LOSS,
        "& video_mask.bool()[:, anchor] & has[:, None]",
        "& has[:, None]",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_intra_batch_no_anchor_negatives",
        LOSS,
        "& video_mask.bool()[:, anchor] & has[:, None]",
        "& video_mask.bool()[:, anchor]",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_intra_batch_over_clips",
        LOSS,
        "log_prob = logits.log_softmax(dim=0)[rows, rows]",
        "log_prob = logits.log_softmax(dim=1)[rows, rows]",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_univtg_inter_mean",
        LOSS,
        'return both if scale == "univtg" else 0.5 * both',
        "return 0.5 * both",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_univtg_no_batch_direction",
        LOSS,
        "intra = intra + ctm_intra_batch_loss(cos, sal, rel, mask, tau, negatives)",
        "intra = intra",
        ("test_readings.py",),
    ),
    _m("losses.sal_margin_swapped", LOSS, "(margin + s_neg - s_pos)", "(margin + s_pos - s_neg)", LOSS_T),
    _m(
        "losses.sal_margin_no_times_2",
        LOSS,
        ".clamp(min=0).sum() / s_pos.numel() * 2",
        ".clamp(min=0).sum() / s_pos.numel()",
        LOSS_T,
    ),
    _m("losses.rank_norm_1", LOSS, "RANK_NORM = 12.0", "RANK_NORM = 1.0", LOSS_T),
    _m(
        "losses.rank_levels_from_0",
        LOSS,
        "RANK_LEVELS = tuple(range(1, 12))",
        "RANK_LEVELS = tuple(range(0, 12))",
        LOSS_T,
    ),
    _m(
        "losses.rank_strict_level",
        LOSS,
        "(labels[None] >= levels[:, None, None])",
        "(labels[None] > levels[:, None, None])",
        LOSS_T,
    ),
    _m(
        "losses.rank_neg_pass_keeps_labels",
        LOSS,
        "labels = torch.cat([labels, torch.zeros_like(labels)], dim=1)",
        "labels = torch.cat([labels, labels], dim=1)",
        LOSS_T,
    ),
    _m("losses.rank_tau_multiplied", LOSS, "log_prob = (scores / tau)", "log_prob = (scores * tau)", LOSS_T),
    _m(
        "losses.rank_sum_over_batch",
        LOSS,
        "return -mean_pos.mean(dim=1).sum() / RANK_NORM",
        "return -mean_pos.sum(dim=1).sum() / RANK_NORM",
        LOSS_T,
    ),
    _m("losses.sal_neg_sign", LOSS, "(F.softplus(scores_neg) *", "(F.softplus(-scores_neg) *", LOSS_T),
    _m(
        "losses.sal_neg_mean_over_clips",
        LOSS,
        "video_mask.to(scores_neg.dtype)).sum(dim=1).mean()",
        "video_mask.to(scores_neg.dtype)).mean()",
        LOSS_T,
    ),
    _m(
        "losses.eq10_weights_swapped",
        LOSS,
        'moment = {"l1": lam_m * loss_cfg.l1, "giou": lam_m * loss_cfg.giou}',
        'moment = {"l1": lam_m * loss_cfg.giou, "giou": lam_m * loss_cfg.l1}',
        LOSS_T,
    ),
    _m(
        "losses.dn_count_without_groups",
        LOSS,
        'num_dn = dn_meta["num_groups"] * dn_meta["pos_valid"].sum()',
        'num_dn = 1 * dn_meta["pos_valid"].sum()',
        LOSS_T,
    ),
    _m(
        "losses.matched_gt_without_offset",
        LOSS,
        "(torch.full_like(p, b), p, j + offset)",
        "(torch.full_like(p, b), p, j)",
        LOSS_T,
    ),
    _m("losses.dn_first_layer_as_last", LOSS, 'layers = [(dn[-1], "")]', 'layers = [(dn[0], "")]', LOSS_T),
    # ------------------------------------------------------------------------------------ denoising
    _m("denoising.sign_dropped", DN, "delta = sign * u  # (..., 2)", "delta = u  # (..., 2)", DN_T),
    _m(
        "denoising.center_full_width",
        DN,
        'new_c = c + delta[..., 0] * (w_scale if center_scale == "width" else c) / 2',
        'new_c = c + delta[..., 0] * (w_scale if center_scale == "width" else c)',
        DN_T,
    ),
    _m(
        "denoising.width_absolute",
        DN,
        "new_w = (w + delta[..., 1] * w_scale)",
        "new_w = (w + delta[..., 1])",
        DN_T,
    ),
    _m(
        "denoising.center_scale_ignored",
        DN,
        '(w_scale if center_scale == "width" else c) / 2',
        "w_scale / 2",
        DN_T,
    ),
    _m(
        "denoising.min_width_ignored",
        DN,
        "w_scale = w.clamp(min=scale_floor)",
        "w_scale = w",
        DN_T,
    ),
    _m(
        "denoising.center_noise_default_center",
        "model/config.py",
        'dn_center_noise: str = "width"',
        'dn_center_noise: str = "center"',
        DN_T,
    ),
    _m("denoising.band_from_zero", DN, "u = low + (high - low) * u", "u = low + high * u", DN_T),
    _m(
        "denoising.center_uses_width_noise",
        DN,
        'new_c = c + delta[..., 0] * (w_scale if center_scale == "width" else c) / 2',
        'new_c = c + delta[..., 1] * (w_scale if center_scale == "width" else c) / 2',
        DN_T,
    ),
    _m(
        "denoising.no_clamp_inside",
        DN,
        "new_c = torch.minimum(torch.maximum(new_c, new_w / 2), 1 - new_w / 2)",
        "new_c = new_c",
        DN_T,
    ),
    _m(
        "denoising.direct_sees_noise",
        DN,
        "mask[:, :num_queries, num_queries:] = True",
        "mask[:, :num_queries, num_queries:] = False",
        DN_T,
    ),
    _m(
        "denoising.groups_see_later_groups",
        DN,
        "mask[:, lo:hi, hi:] = True",
        "mask[:, lo:hi, hi:] = False",
        DN_T,
    ),
    _m(
        "denoising.padding_visible_to_noise",
        DN,
        "mask[:, :, num_queries:] |= ~slot_valid[:, None, :]",
        "mask[:, :num_queries, num_queries:] |= ~slot_valid[:, None, :]",
        DN_T,
    ),
    _m(
        "denoising.mask_slot_order",
        DN,
        "slot_valid = pos_valid.repeat(1, num_groups * (2 if has_negatives else 1))",
        "slot_valid = pos_valid.repeat_interleave(num_groups * (2 if has_negatives else 1), dim=1)",
        DN_T,
    ),
    _m(
        "denoising.negative_band_from_zero",
        DN,
        "return self.sigma_p, self.sigma_p + margin",
        "return 0.0, self.sigma_p + margin",
        DN_T,
    ),
    _m(
        "denoising.curriculum_to_zero",
        DN,
        "return full - p * (full - min_margin)",
        "return full - p * full",
        DN_T,
    ),
    _m(
        "denoising.negatives_positive_band",
        DN,
        "neg = self._noised(groups, low, high, generator)",
        "neg = self._noised(groups, 0.0, self.sigma_p, generator)",
        DN_T,
    ),
    _m(
        "denoising.polarity_order",
        DN,
        "anchors = torch.stack([pos, neg], dim=2)",
        "anchors = torch.stack([neg, pos], dim=2)",
        DN_T,
    ),
    # ------------------------------------------------------------------------------------ decoder
    _m(
        "decoder.dn_mask_repeat",
        DEC,
        "else ~self_attn_mask[:, None]",
        "else ~self_attn_mask.roll(1, dims=0)[:, None]",
        DEC_T,
    ),
    _m("decoder.eq1_without_ps", DEC, "qk = content + span_pos  # eq 1", "qk = content  # eq 1", DEC_T),
    _m(
        "decoder.eq1_values_with_ps",
        DEC,
        "multihead_attention(self.self_attn, qk, content,",
        "multihead_attention(self.self_attn, qk, qk,",
        DEC_T,
    ),
    _m(
        "decoder.pmv_zeroed",
        DEC,
        "        return sine_embedding(centres, dim, scale=scale)\n",
        "        return torch.zeros_like(sine_embedding(centres, dim, scale=scale))\n",
        DEC_T,
    ),
    _m(
        "decoder.eq4_no_ps",
        DEC,
        "ca = self.cross_attn(content, query_pos, memory,",
        "ca = self.cross_attn(content, torch.zeros_like(query_pos), memory,",
        DEC_T,
    ),
    _m("decoder.eq4_scale_dh", DEC, "/ math.sqrt(2 * self.head_dim)", "/ math.sqrt(self.head_dim)", DEC_T),
    _m(
        "decoder.eq6_additive",
        DEC,
        "logits = logits * modulation[:, None]",
        "logits = logits + modulation[:, None]",
        DEC_T,
    ),
    _m(
        "decoder.eq6_no_residual",
        DEC,
        "content = self.norm2(content + self.dropout2(ca))",
        "content = self.norm2(self.dropout2(ca))",
        DEC_T,
    ),
    _m(
        "decoder.eq2_scale_multiplied",
        DEC,
        "s_hi * frac) / math.sqrt(content.shape[-1])",
        "s_hi * frac) * math.sqrt(content.shape[-1])",
        DEC_T,
    ),
    _m(
        "decoder.eq2_sum_pool",
        DEC,
        "w_lo, w_hi = scores * (1 - frac) / self.num_points, scores * frac / self.num_points",
        "w_lo, w_hi = scores * (1 - frac), scores * frac",
        DEC_T,
    ),
    _m(
        "decoder.eq2_scores_swapped_interpolation",
        DEC,
        "scores = (s_lo * (1 - frac) + s_hi * frac)",
        "scores = (s_lo * frac + s_hi * (1 - frac))",
        DEC_T,
    ),
    _m(
        "decoder.eq2_scores_drop_w_v_bias",
        DEC,
        "+ (text @ self.video_proj.bias)[:, None]",
        "+ 0.0",
        DEC_T,
    ),
    _m(
        "decoder.eq3_gate_mean",
        DEC,
        "dot = (content * pooled).sum(-1, keepdim=True)  # (B, Q, 1)",
        "dot = (content * pooled).mean(-1, keepdim=True)  # (B, Q, 1)",
        DEC_T,
    ),
    _m(
        "decoder.eq3_gate_unscaled",
        DEC,
        "return torch.sigmoid(dot / self.gate_div if self.gate_div != 1.0 else dot)",
        "return torch.sigmoid(dot)",
        DEC_T,
    ),
    _m(
        "decoder.eq3_no_content",
        DEC,
        "self.fuse_proj((pooled + content) * gate) + content",
        "self.fuse_proj(pooled * gate) + content",
        DEC_T,
    ),
    _m(
        "decoder.eq3_no_residual",
        DEC,
        "self.fuse_proj((pooled + content) * gate) + content",
        "self.fuse_proj((pooled + content) * gate)",
        DEC_T,
    ),
    _m(
        "decoder.anchor_update_sign",
        DEC,
        "torch.sigmoid(inverse_sigmoid(spans) + self.span_head(content))",
        "torch.sigmoid(inverse_sigmoid(spans) - self.span_head(content))",
        DEC_T,
    ),
    _m(
        "decoder.anchor_not_detached",
        DEC,
        'spans = new_spans if self.anchor_grad == "all" else new_spans.detach()',
        "spans = new_spans",
        DEC_T,
    ),
    _m(
        "decoder.anchor_grad_all_detached",
        DEC,
        'spans = new_spans if self.anchor_grad == "all" else new_spans.detach()',
        "spans = new_spans.detach()",
        ("test_readings.py",),
    ),
    _m(
        "decoder.span_query_scaled_at_first_layer",
        DEC,
        "cond = None if i == 0 else self.query_scale(content)",
        "cond = self.query_scale(content)",
        ("test_readings.py",),
    ),
    _m(
        "decoder.span_query_width_unmodulated",
        DEC,
        "return pos * (torch.sigmoid(width_logit) / width)",
        "return pos * torch.sigmoid(width_logit)",
        ("test_readings.py",),
    ),
    _m(
        "decoder.span_query_not_passed",
        DEC,
        "query_pos = span_pos if cross_pos is None else cross_pos",
        "query_pos = span_pos",
        ("test_readings.py",),
    ),
    _m(
        "decoder.anchor_grad_none_kept",
        DEC,
        "spans = spans.detach()  # DINO",
        "spans = spans  # DINO",
        ("test_readings.py",),
    ),
    _m(
        "decoder.gaussian_alpha_fixed",
        DEC,
        "gaussian_mask(spans, video_mask, self.gaussian_alpha)",
        "gaussian_mask(spans, video_mask, 1.0)",
        DEC_T,
    ),
    # ------------------------------------------------------------------------------------ encoder
    _m(
        "encoder.fusion_no_qv_pos",
        ENC,
        "x = layer(x, text, text_mask, query_pos=vpos)",
        "x = layer(x, text, text_mask)",
        ENC_T,
    ),
    _m(
        "encoder.global_pos_on_values",
        ENC,
        "return self._attend(x, x + pos, x, mask, keys_are_queries=True)",
        "return self._attend(x, x + pos, x + pos, mask, keys_are_queries=True)",
        ENC_T,
    ),
    _m(
        "encoder.global_pos_on_queries_only",
        ENC,
        "return self._attend(x, x + pos, x, mask, keys_are_queries=True)",
        "return self._attend(x, x + pos, x, mask, keys_are_queries=False)",
        ENC_T,
    ),
    _m(
        "encoder.vtc_before_text_fused",
        ENC,
        "v_src, t_src = (f_v, f_t) if",
        "v_src, t_src = (f_v, fused_t) if",
        ENC_T,
    ),
    _m(
        "encoder.vtc_after_video_enhanced",
        ENC,
        "else (fused_v[:, 1:], fused_t)",
        "else (enhanced[:, 1:], fused_t)",
        ENC_T,
    ),
    _m(
        "encoder.ctm_before_sentence_fused",
        ENC,
        'ctm = {"clip_emb": f_v, "sent_emb": self.sentence_pool(f_t, text_mask)}',
        'ctm = {"clip_emb": f_v, "sent_emb": sentence}',
        ENC_T,
    ),
    _m(
        "encoder.ctm_after_clips_enhanced",
        ENC,
        'ctm = {"clip_emb": fused_v[:, 1:], "sent_emb": sentence}',
        'ctm = {"clip_emb": enhanced[:, 1:], "sent_emb": sentence}',
        ENC_T,
    ),
    _m(
        "encoder.fuse_text_reads_fused_video",
        ENC,
        "fused_t = self.fuse_text(f_t, video, mask_g)",
        "fused_t = self.fuse_text(f_t, fused_v, mask_g)",
        ENC_T,
    ),
    _m(
        "encoder.sim_off_by_one",
        ENC,
        "F.cosine_similarity(fused_v[:, 1:], sentence",
        "F.cosine_similarity(fused_v[:, :-1], sentence",
        ENC_T,
    ),
    _m(
        "encoder.hd_token_mean",
        ENC,
        "self.saliency_head(x[:, 1:], x[:, 0])",
        "self.saliency_head(x[:, 1:], x[:, 1:].mean(1))",
        ENC_T,
    ),
    _m(
        "encoder.pooling_unmasked",
        ENC,
        'logits = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))',
        "logits = self.score(x).squeeze(-1)",
        ENC_T,
    ),
    _m("encoder.local_reads_padding", ENC, "h = conv(h * keep)", "h = conv(h)", ENC_T),
    _m(
        "encoder.local_no_residual",
        ENC,
        "return self.norm(x + h.transpose(1, 2))",
        "return self.norm(h.transpose(1, 2))",
        ENC_T,
    ),
    _m(
        "encoder.masked_mean_plain",
        ENC,
        "return (x * w).sum(1) / w.sum(1).clamp(min=1.0)",
        "return x.mean(1)",
        ENC_T,
    ),
    _m(
        "encoder.negative_roll_direction",
        ENC,
        "torch.cat([f_t, f_t.roll(-1, dims=0)])  # (2B, Lt, d)\n"
        "            text_masks = torch.cat([text_mask, text_mask.roll(-1, dims=0)])",
        "torch.cat([f_t, f_t.roll(1, dims=0)])  # (2B, Lt, d)\n"
        "            text_masks = torch.cat([text_mask, text_mask.roll(1, dims=0)])",
        ENC_T,
    ),
    # ------------------------------------------------------------------------------------ query_init
    _m(
        "query_init.no_sigmoid",
        QI,
        "anchors = torch.sigmoid(logits)  # S_d (B, Nq, 2)",
        "anchors = logits  # S_d (B, Nq, 2)",
        QI_T,
    ),
    _m(
        "query_init.noise_content_zeros",
        QI,
        "nn.Parameter(torch.ones(dim))",
        "nn.Parameter(torch.zeros(dim))",
        QI_T,
    ),
    _m(
        "query_init.direct_content_ones",
        QI,
        "nn.Parameter(torch.zeros(num_queries, dim))",
        "nn.Parameter(torch.ones(num_queries, dim))",
        QI_T,
    ),
    _m(
        "query_init.no_init_spans",
        QI,
        "init_spans: Tensor | None = anchors",
        "init_spans: Tensor | None = None",
        QI_T,
    ),
    # ------------------------------------------------------------------------------------ eval/moment
    _m("moment.top5", MOMENT, "MAX_PRED_WINDOWS = 10", "MAX_PRED_WINDOWS = 5", EVAL_T),
    _m("moment.thresholds_to_0.9", MOMENT, "np.linspace(0.5, 0.95, 10)", "np.linspace(0.5, 0.9, 10)", EVAL_T),
    _m(
        "moment.iou_no_clip",
        MOMENT,
        "inter = np.clip(right - left, 0.0, None)",
        "inter = right - left",
        EVAL_T,
    ),
    _m(
        "moment.strict_threshold",
        MOMENT,
        "cand = (iou_r >= thr[None, :, None])",
        "cand = (iou_r > thr[None, :, None])",
        EVAL_T,
    ),
    _m(
        "moment.gt_matched_twice",
        MOMENT,
        "& ~matched & pred_valid[:, r, None, None]",
        "& pred_valid[:, r, None, None]",
        EVAL_T,
    ),
    _m(
        "moment.ascending_score",
        MOMENT,
        "np.where(pred_valid, -pred[..., 2], np.inf)",
        "np.where(pred_valid, pred[..., 2], np.inf)",
        EVAL_T,
    ),
    _m(
        "moment.first_argmax_gt",
        MOMENT,
        "best = g - 1 - np.argmax(np.where(cand, iou_r, -2.0)[..., ::-1], axis=-1)",
        "best = np.argmax(np.where(cand, iou_r, -2.0), axis=-1)",
        EVAL_T,
    ),
    _m(
        "moment.ap_not_interpolated",
        MOMENT,
        "mprec = np.maximum.accumulate(mprec[..., ::-1], axis=-1)[..., ::-1]",
        "mprec = mprec",
        EVAL_T,
    ),
    _m(
        "moment.r1_first_gt",
        MOMENT,
        "np.argmax(iou, axis=1)[:, None, None]",
        "np.zeros(len(iou), dtype=int)[:, None, None]",
        EVAL_T,
    ),
    _m(
        "moment.bucket_bounds",
        MOMENT,
        "(gt_len > bounds[0]) & (gt_len <= bounds[1])",
        "(gt_len >= bounds[0]) & (gt_len < bounds[1])",
        EVAL_T,
    ),
    _m("moment.r1_strict", MOMENT, "_pct(np.mean(iou1 >= t))", "_pct(np.mean(iou1 > t))", EVAL_T),
    # ------------------------------------------------------------------------------------ eval/highlight
    _m("highlight.hit1_from_cut", HL, "top = np.argmax(raw, axis=1)", "top = np.argmax(cut, axis=1)", EVAL_T),
    _m("highlight.fair_at_1", HL, 'LEVELS = {"Fair": 2,', 'LEVELS = {"Fair": 1,', EVAL_T),
    _m(
        "highlight.hit1_all_annotators",
        HL,
        "reshape(q, len(LEVELS), 3).any(axis=2)",
        "reshape(q, len(LEVELS), 3).all(axis=2)",
        EVAL_T,
    ),
    _m(
        "highlight.ties_not_grouped",
        HL,
        "group_end = (v & (nxt_differs | nxt_invalid))[..., None]",
        "group_end = v[..., None]",
        EVAL_T,
    ),
    _m(
        "highlight.ap_not_interpolated",
        HL,
        "interp = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]",
        "interp = precision",
        EVAL_T,
    ),
    _m(
        "highlight.pad_below_zero",
        HL,
        "np.where(np.isfinite(raw), raw, 0.0)",
        "np.where(np.isfinite(raw), raw, -1e9)",
        EVAL_T,
    ),
    _m(
        "highlight.strict_level",
        HL,
        "np.concatenate([gt >= m for m in",
        "np.concatenate([gt > m for m in",
        EVAL_T,
    ),
)


def check_mutations(root: Path = REPO) -> list[str]:
    """Problems with the list: snippets that do not occur exactly once, no-op or duplicate mutations,
    missing test files. Empty when the list is usable."""
    problems = []
    names = [m.name for m in MUTATIONS]
    problems += [f"duplicate name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    for m in MUTATIONS:
        path = root / "src" / "sadetr" / m.path
        if not path.is_file():
            problems.append(f"{m.name}: no file {m.path}")
            continue
        count = path.read_text().count(m.original)
        if count != 1:
            problems.append(f"{m.name}: the original snippet occurs {count} times in {m.path}")
        if m.original == m.replacement:
            problems.append(f"{m.name}: the replacement equals the original")
        problems += [f"{m.name}: no test file {t}" for t in m.tests if not (root / "tests" / t).is_file()]
    return problems


def make_scratch(base: Path, shared_data: bool) -> Path:
    """Copy src/, tests/ and pyproject.toml to `base/repo`; link `base/shared` when `shared_data`."""
    repo = base / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", repo / "src", ignore=ignore)
    shutil.copytree(REPO / "tests", repo / "tests", ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", repo / "pyproject.toml")
    shared = REPO.parent / "shared"
    if shared_data and shared.is_dir():
        (base / "shared").symlink_to(shared.resolve(), target_is_directory=True)
    return repo


PYTEST_ARGS = ["-x", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-m", "not slow"]


def scratch_env(repo: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": str(repo / "src"),
        "PYTHONDONTWRITEBYTECODE": "1",  # a stale .pyc of the same size and mtime second must never be used
        "OMP_NUM_THREADS": "1",
    }


def preload() -> None:
    """Import the heavy third-party modules once in this process (never `sadetr`, never the tests), so
    that each forked pytest run starts without paying for them."""
    os.environ.update(OMP_NUM_THREADS="1")
    sys.dont_write_bytecode = True
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import scipy.optimize  # noqa: F401
    import torch

    torch.set_num_threads(1)


def _fork_pytest(repo: Path, args: list[str], log: Path) -> int:
    """Fork; the child runs pytest in `repo` (output to `log`), importing `sadetr` and the tests from the
    scratch copy only, and exits with pytest's status. Returns the child's pid."""
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 3
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(repo)
            os.environ.update(scratch_env(repo))
            sys.path.insert(0, str(repo / "src"))
            import pytest

            code = int(pytest.main(args))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


class Run:
    """One pytest run on a scratch repo, in a forked child of this (preloaded) process, or with `fork`
    False in a fresh interpreter (same result, seconds slower)."""

    def __init__(self, repo: Path, tests: tuple[str, ...], fork: bool) -> None:
        self.log = repo.parent / "pytest.log"
        args = [*PYTEST_ARGS, *[f"tests/{t}" for t in tests]]
        self.proc: subprocess.Popen | None = None
        self.code: int | None = None  # exit status of a forked run, once reaped
        if fork:
            self.pid = _fork_pytest(repo, args, self.log)
        else:
            with open(self.log, "w") as out:
                env = {**os.environ, **scratch_env(repo)}
                cmd = [sys.executable, "-m", "pytest", *args]
                self.proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
            self.pid = self.proc.pid
        self.start = time.monotonic()

    def poll(self) -> int | None:
        """The exit status, or None while it runs."""
        if self.proc is not None:
            return self.proc.poll()
        if self.code is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            self.code = os.waitstatus_to_exitcode(status) if done else None
        return self.code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        elif self.code is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").strip().splitlines()[-3:])


def run_mutations(
    mutations: list[Mutation], repos: list[Path], fork: bool, timeout: float
) -> Iterator[tuple[Mutation, bool, float]]:
    """Each mutation applied alone to a free scratch repo (one run per repo at a time) -> yields
    (mutation, caught, seconds) as runs finish. A run past `timeout` is killed and counts as caught."""
    pending, free = list(mutations), list(repos)
    running: dict[Run, tuple[Mutation, Path, Path, str]] = {}
    try:
        while pending or running:
            while pending and free:
                m, repo = pending.pop(0), free.pop(0)
                target = repo / "src" / "sadetr" / m.path
                pristine = target.read_text()
                target.write_text(pristine.replace(m.original, m.replacement, 1))
                running[Run(repo, m.tests, fork)] = (m, repo, target, pristine)
            time.sleep(0.05)
            for run in list(running):
                code = run.poll()
                timed_out = code is None and time.monotonic() - run.start > timeout
                if timed_out:
                    run.kill()
                if code is None and not timed_out:
                    continue
                m, repo, target, pristine = running.pop(run)
                target.write_text(pristine)
                free.append(repo)
                yield m, timed_out or code != 0, time.monotonic() - run.start
    finally:
        for run in running:
            run.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", action="append", default=[], help="run only mutations whose name contains this")
    parser.add_argument(
        "--no-shared-data", action="store_true", help="run as a checkout without ../shared/data"
    )
    parser.add_argument("--list", action="store_true", help="print the mutation names and exit")
    parser.add_argument("--check", action="store_true", help="only check that every snippet occurs once")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds per pytest run (counts as caught)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="mutations run in parallel (scratch copies)")
    parser.add_argument("--no-fork", action="store_true", help="a fresh interpreter per run (slower)")
    parser.add_argument(
        "--min-score", type=float, default=0.0, help="exit 1 when the score (%%) is below this"
    )
    args = parser.parse_args(argv)

    problems = check_mutations()
    if problems:
        print("\n".join(problems))
        return 2
    selected = [m for m in MUTATIONS if not args.k or any(k in m.name for k in args.k)]
    if args.list:
        print("\n".join(f"{m.name}  ({m.path}; {', '.join(m.tests)})" for m in selected))
        return 0
    if args.check:
        print(f"{len(MUTATIONS)} mutations, every snippet occurs exactly once")
        return 0
    if not selected:
        print("no mutation matches")
        return 2

    # SIGTERM as Ctrl-C: the running pytest is killed and the scratch directory removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    shared_data = not args.no_shared_data and (REPO.parent / "shared" / "data").is_dir()
    print(f"{len(selected)} mutations, shared data: {'yes' if shared_data else 'no'}", flush=True)
    fork = not args.no_fork and hasattr(os, "fork")
    if fork:
        preload()
    start = time.monotonic()
    survivors = []
    with tempfile.TemporaryDirectory(prefix="sadetr_mutation_") as tmp:
        repos = [make_scratch(Path(tmp) / f"worker{i}", shared_data) for i in range(max(args.jobs, 1))]
        all_tests = tuple(sorted({t for m in selected for t in m.tests}))
        baseline = Run(repos[0], all_tests, fork)
        while baseline.poll() is None:
            time.sleep(0.1)
        if baseline.poll() != 0:
            print(f"the unmutated tests fail, nothing to measure:\n{baseline.tail()}")
            return 2
        for i, (m, caught, seconds) in enumerate(run_mutations(selected, repos, fork, args.timeout), 1):
            print(f"[{i:3d}/{len(selected)}] {'caught' if caught else 'SURVIVED'} {m.name} ({seconds:.0f} s)")
            sys.stdout.flush()
            if not caught:
                survivors.append(m)
    caught = len(selected) - len(survivors)
    score = 100.0 * caught / len(selected)
    print(
        f"\nmutation score: {caught}/{len(selected)} caught = {score:.1f} % "
        f"(shared data: {'yes' if shared_data else 'no'}, {time.monotonic() - start:.0f} s)"
    )
    if survivors:
        print("survivors:")
        for m in survivors:
            print(f"  {m.name}: {m.path}: {m.original.strip()!r} -> {m.replacement.strip()!r}")
    return 1 if score < args.min_score else 0


if __name__ == "__main__":
    sys.exit(main())
