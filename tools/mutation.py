"""Mutation harness for the core math: how many realistic small bugs does the test suite catch?

Each entry of `MUTATIONS` names one bug: a target (a function or class by its qualified name, e.g.
`SetCriterion.loss_dn`, or a module-level name such as `RANK_NORM`), a snippet of the target's source, its
replacement, and the test files that should notice. The harness finds the target anywhere under
`src/sadetr/` by parsing the code (so moving a function to another file or module changes nothing), and
the snippet inside that target's source only. It copies `src/`, `tests/` and `pyproject.toml` into a
scratch directory, applies one mutation at a time there (the checkout is never touched), runs `pytest -x
-q -p no:xdist -m "not slow"` on that mutation's test files with PYTHONPATH pointing at the copy's `src`,
and counts the mutation as caught when pytest fails (or runs past the timeout). It prints one line per
mutation, then the score, the survivors and the mutations it could not locate (a refactor rewrote their
snippet: they are reported, left out of the score, and are the list to update). Each pytest run is a
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
    python tools/mutation.py --list               # the names and where each target is now
    python tools/mutation.py --check              # only locate every target and snippet

`make mutation` runs both full passes and prints the scores. It is CPU-heavy (one pytest run per
mutation) and not part of CI; the test suite checks the locator itself (tests/test_mutation_harness.py),
not the list's snippets, so a refactor never fails CI because a snippet moved.
"""

from __future__ import annotations

import argparse
import ast
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
    """One named bug: replace the single occurrence of `original` in the source of `target` (a function
    or class qualified name, or a module-level name) anywhere under `src/sadetr/`."""

    name: str
    target: str
    original: str
    replacement: str
    tests: tuple[str, ...]  # test files (relative to tests/) that must catch it


@dataclass(frozen=True)
class Site:
    """Where a mutation applies: the file and the character offset of its snippet."""

    path: Path
    offset: int


def named_nodes(text: str) -> dict[str, list[tuple[int, int]]]:
    """Qualified name -> [(start, end) character offsets] of every def and class (nested names joined by
    dots) and of every module-level assignment (by its target name) in one module's source."""
    tree = ast.parse(text)
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    found: dict[str, list[tuple[int, int]]] = {}

    def add(name: str, node: ast.AST) -> None:  # whole lines, from the first decorator to the last line
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        last = node.end_lineno or node.lineno
        found.setdefault(name, []).append((starts[first - 1], starts[min(last, len(starts) - 1)]))

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}" if prefix else child.name
                add(name, child)
                walk(child, name)

    walk(tree, "")
    for stmt in tree.body:
        targets = (
            stmt.targets
            if isinstance(stmt, ast.Assign)
            else [stmt.target]
            if isinstance(stmt, ast.AnnAssign)
            else []
        )
        for t in targets:
            if isinstance(t, ast.Name):
                add(t.id, stmt)
    return found


def index_sources(root: Path) -> dict[str, list[tuple[Path, int, int]]]:
    """Every named node of every module under `root/src/sadetr`: name -> [(file, start, end)]."""
    index: dict[str, list[tuple[Path, int, int]]] = {}
    for path in sorted((root / "src" / "sadetr").rglob("*.py")):
        for name, spans in named_nodes(path.read_text()).items():
            index.setdefault(name, []).extend((path, a, b) for a, b in spans)
    return index


def locate(m: Mutation, index: dict[str, list[tuple[Path, int, int]]]) -> Site | str:
    """The site of `m`, or why it cannot be located (no such target, several, or the snippet does not
    occur exactly once in the target's source). A target `stem:name` is `name` in a module `stem.py`
    (for names that several modules define)."""
    stem, _, name = m.target.rpartition(":")
    places = [p for p in index.get(name, []) if not stem or p[0].stem == stem]
    if not places:
        return f"no function, class or module-level name {m.target!r}"
    if len(places) > 1:
        return f"{m.target!r} is defined {len(places)} times: " + ", ".join(str(p) for p, _, _ in places)
    path, start, end = places[0]
    body = path.read_text()[start:end]
    count = body.count(m.original)
    if count != 1:
        return f"the snippet occurs {count} times in {m.target} ({path.name})"
    return Site(path, start + body.index(m.original))


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
RECIPE_T = ("test_recipes.py", "test_legacy_configs.py")
LONG_T = ("test_long_video.py", "test_predictor.py")


def _m(name: str, target: str, original: str, replacement: str, tests: tuple[str, ...]) -> Mutation:
    return Mutation(name, target, original, replacement, tests)


MUTATIONS: tuple[Mutation, ...] = (
    # ------------------------------------------------------------------------------------ span_ops
    _m(
        "span_ops.cxw_to_xx_full_width",
        "span_cxw_to_xx",
        "[c - 0.5 * w, c + 0.5 * w]",
        "[c - w, c + w]",
        SPAN_T,
    ),
    _m(
        "span_ops.xx_to_cxw_half_width",
        "span_xx_to_cxw",
        "[0.5 * (s + e), e - s]",
        "[0.5 * (s + e), 0.5 * (e - s)]",
        SPAN_T,
    ),
    _m(
        "span_ops.iou_no_clamp",
        "span_ops:temporal_iou",
        "inter = (right - left).clamp(min=0)  # (N, M)",
        "inter = right - left",
        SPAN_T,
    ),
    _m(
        "span_ops.iou_union_plus_inter",
        "span_ops:temporal_iou",
        "union = areas1[:, None] + areas2[None, :] - inter",
        "union = areas1[:, None] + areas2[None, :] + inter",
        SPAN_T,
    ),
    _m(
        "span_ops.giou_divides_by_union",
        "generalized_temporal_iou",
        "return iou - (enclosing - union) / enclosing.clamp(min=1e-12)",
        "return iou - (enclosing - union) / union.clamp(min=1e-12)",
        SPAN_T,
    ),
    _m(
        "span_ops.giou_enclosing_left_max",
        "generalized_temporal_iou",
        "left = torch.min(spans1[:, None, 0], spans2[None, :, 0])",
        "left = torch.max(spans1[:, None, 0], spans2[None, :, 0])",
        SPAN_T,
    ),
    _m(
        "span_ops.paired_giou_sign",
        "paired_generalized_temporal_iou",
        "return inter / union.clamp(min=1e-12) - (enclosing - union)",
        "return inter / union.clamp(min=1e-12) + (enclosing - union)",
        SPAN_T,
    ),
    _m(
        "span_ops.paired_iou_wrong_union",
        "paired_temporal_iou",
        "    return inter / union.clamp(min=1e-12)\n",
        "    return inter / (union + inter).clamp(min=1e-12)\n",
        SPAN_T,
    ),
    _m(
        "span_ops.pad_spans_no_row_start",
        "pad_spans",
        "slots = [b * max_n + j for b, n in enumerate(counts) for j in range(n)]",
        "slots = [b + j for b, n in enumerate(counts) for j in range(n)]",
        SPAN_T,
    ),
    _m(
        "span_ops.inverse_sigmoid_sign",
        "span_ops:inverse_sigmoid",
        "torch.log(x / (1 - x))",
        "torch.log(x / (1 + x))",
        SPAN_T,
    ),
    _m(
        "span_ops.sine_freq_exponent",
        "sine_embedding",
        "temperature ** (2 * k / dim)",
        "temperature ** (k / dim)",
        SPAN_T,
    ),
    _m(
        "span_ops.sine_no_2pi",
        "sine_embedding",
        "scale: float | Tensor = 2 * math.pi\n) -> Tensor:",
        "scale: float | Tensor = math.pi\n) -> Tensor:",
        SPAN_T,
    ),
    _m(
        "span_ops.sine_cos_first",
        "sine_embedding",
        "[angles.sin(), angles.cos()]",
        "[angles.cos(), angles.sin()]",
        SPAN_T,
    ),
    _m(
        "span_ops.span_embedding_swaps_c_w",
        "span_sine_embedding",
        "sine_embedding(spans_cxw[..., 0], dim // 2, scale=scale),\n"
        "            sine_embedding(spans_cxw[..., 1], dim // 2, scale=scale),",
        "sine_embedding(spans_cxw[..., 1], dim // 2, scale=scale),\n"
        "            sine_embedding(spans_cxw[..., 0], dim // 2, scale=scale),",
        SPAN_T,
    ),
    _m(
        "span_ops.clip_center_off_by_half",
        "clip_centers",
        "return (idx[None, :] + 0.5) / lengths",
        "return idx[None, :] / lengths",
        SPAN_T,
    ),
    _m(
        "span_ops.clip_centers_count_padding",
        "clip_centers",
        "lengths = video_mask.sum(dim=1, keepdim=True)",
        "lengths = torch.ones_like(video_mask).sum(dim=1, keepdim=True)",
        SPAN_T,
    ),
    _m("span_ops.gaussian_w_not_squared", "gaussian_mask", "** 2 / w**2)", "** 2 / w)", SPAN_T),
    _m(
        "span_ops.gaussian_keeps_padding",
        "gaussian_mask",
        "return mask * video_mask[:, None, :].to(mask.dtype)",
        "return mask",
        SPAN_T,
    ),
    _m(
        "span_ops.align_points_off_by_half",
        "temporal_align_points",
        "(k + 0.5) * spans_cxw[..., 1:2] / num_points",
        "k * spans_cxw[..., 1:2] / num_points",
        SPAN_T,
    ),
    _m(
        "span_ops.align_index_no_half",
        "temporal_align_points",
        "pos = points * lengths[:, None, None] - 0.5",
        "pos = points * lengths[:, None, None]",
        SPAN_T,
    ),
    _m(
        "span_ops.align_swapped_weights",
        "temporal_align",
        "f_lo * (1 - frac) + f_hi * frac",
        "f_lo * frac + f_hi * (1 - frac)",
        SPAN_T,
    ),
    _m(
        "span_ops.align_reads_padding",
        "temporal_align_points",
        "pos = torch.minimum(pos.clamp(min=0), (lengths - 1)[:, None, None])",
        "pos = pos.clamp(min=0, max=video_mask.shape[1] - 1)",
        SPAN_T,
    ),
    # ------------------------------------------------------------------------------------ matcher
    _m(
        "matcher.l2_cost",
        "HungarianMatcher.forward",
        "torch.cdist(out, tgt, p=1)",
        "torch.cdist(out, tgt, p=2)",
        MATCH_T,
    ),
    _m(
        "matcher.giou_cost_sign",
        "HungarianMatcher.forward",
        "cost_giou = -generalized_temporal_iou(",
        "cost_giou = generalized_temporal_iou(",
        MATCH_T,
    ),
    _m(
        "matcher.weights_swapped",
        "HungarianMatcher.forward",
        "cost = self.cost_l1 * cost_l1 + self.cost_giou * cost_giou",
        "cost = self.cost_giou * cost_l1 + self.cost_l1 * cost_giou",
        MATCH_T,
    ),
    _m(
        "matcher.maximize",
        "HungarianMatcher.forward",
        "linear_sum_assignment(c[b].numpy())",
        "linear_sum_assignment(c[b].numpy(), maximize=True)",
        MATCH_T,
    ),
    _m(
        "matcher.first_sample_block",
        "HungarianMatcher.forward",
        "linear_sum_assignment(c[b].numpy())",
        "linear_sum_assignment(c[0].numpy())",
        MATCH_T,
    ),
    _m(
        "matcher.build_swaps_costs",
        "build_matcher",
        "HungarianMatcher(cost_l1=loss_cfg.l1, cost_giou=loss_cfg.giou)",
        "HungarianMatcher(cost_l1=loss_cfg.giou, cost_giou=loss_cfg.l1)",
        MATCH_T,
    ),
    # ------------------------------------------------------------------------------------ losses
    _m(
        "losses.l1_sum_over_cw",
        "span_losses",
        'reduction="none").mean(-1).sum() / num',
        'reduction="none").sum(-1).sum() / num',
        LOSS_T,
    ),
    _m(
        "losses.giou_mean_not_num",
        "span_losses",
        "loss_giou = (1 - giou).sum() / num",
        "loss_giou = (1 - giou).mean()",
        LOSS_T,
    ),
    _m(
        "losses.dn_uses_negatives",
        "dn_positive_spans",
        "[:, :, 0]  # (B, G, M, 2) positives",
        "[:, :, -1]  # (B, G, M, 2) positives",
        LOSS_T,
    ),
    _m(
        "losses.quality_mean_iou",
        "quality_targets",
        "return iou.max(dim=2).values  # (B, Q)",
        "return iou.mean(dim=2)  # (B, Q)",
        LOSS_T,
    ),
    _m(
        "losses.quality_no_matched_weight",
        "quality_loss",
        "weight[index[0], index[1]] = matched_weight",
        "weight[index[0], index[1]] = 1.0",
        LOSS_T,
    ),
    _m(
        "losses.quality_squared",
        "quality_loss",
        "errors = weight * (pred_quality - target).abs()  # (B, Q)",
        "errors = weight * (pred_quality - target) ** 2  # (B, Q)",
        LOSS_T,
    ),
    _m(
        "losses.eq8_bins_divide_by_filled",
        "iou_bin_balanced_mean",
        "return (sums / counts.clamp(min=1e-12)).sum() / len(bins)",
        "return (sums / counts.clamp(min=1e-12)).sum() / (counts > 0).sum()",
        ("test_readings.py",),
    ),
    _m(
        "losses.eq9_default_pairs",
        "LossConfig",
        'qmargin_reduction: str = "gt"  # eq 9',
        'qmargin_reduction: str = "pairs"  # eq 9',
        ("test_readings.py",),
    ),
    _m(
        "losses.qmargin_swapped",
        "quality_margin_loss",
        "(q[:, :, 1] - q[:, :, 0] + margin)",
        "(q[:, :, 0] - q[:, :, 1] + margin)",
        LOSS_T,
    ),
    _m(
        "losses.qmargin_no_hinge",
        "quality_margin_loss",
        "hinge = (q[:, :, 1] - q[:, :, 0] + margin).clamp(min=0)",
        "hinge = q[:, :, 1] - q[:, :, 0] + margin",
        LOSS_T,
    ),
    _m(
        "losses.vtc_same_video_not_masked",
        "vtc_loss",
        'logits = logits.masked_fill(same_video & ~eye, float("-inf"))',
        "logits = logits",
        LOSS_T,
    ),
    _m(
        "losses.vtc_scale_unclamped",
        "vtc_loss",
        "scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()",
        "scale = logit_scale.exp()",
        LOSS_T,
    ),
    _m(
        "losses.vtc_one_direction",
        "vtc_loss",
        "labels = torch.arange(len(v), device=logits.device)\n"
        "    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))",
        "labels = torch.arange(len(v), device=logits.device)\n    return F.cross_entropy(logits, labels)",
        LOSS_T,
    ),
    _m(
        "losses.ctm_local_no_tau",
        "ctm_local_loss",
        "F.binary_cross_entropy_with_logits(cos / tau,",
        "F.binary_cross_entropy_with_logits(cos,",
        LOSS_T,
    ),
    _m(
        "losses.ctm_local_counts_padding",
        "ctm_local_loss",
        "return (bce * mask).sum() / max(num, 1.0)",
        "return bce.sum() / max(num, 1.0)",
        LOSS_T,
    ),
    _m(
        "losses.ctm_anchor_argmin",
        "ctm_anchors",
        "return score.argmax(dim=1), candidates.any(dim=1)",
        "return score.argmin(dim=1), candidates.any(dim=1)",
        LOSS_T,
    ),
    _m(
        "losses.ctm_anchor_padding",
        "ctm_anchors",
        "candidates = relevant.bool() & video_mask.bool()",
        "candidates = relevant.bool()",
        LOSS_T,
    ),
    _m(
        "losses.ctm_inter_no_tau",
        "ctm_inter_loss",
        "logits = clips @ sents.t() / tau",
        "logits = clips @ sents.t()",
        LOSS_T,
    ),
    _m(
        "losses.ctm_inter_unnormalised_sent",
        "ctm_inter_loss",
        "sents = F.normalize(sent_emb[idx], dim=-1)",
        "sents = sent_emb[idx]",
        LOSS_T,
    ),
    _m(
        "losses.ctm_intra_keeps_no_anchor",
        "ctm_intra_loss",
        "log_prob = logits.log_softmax(dim=1)[rows, anchor]  # (B,)\n    return -(log_prob[has]).mean()",
        "log_prob = logits.log_softmax(dim=1)[rows, anchor]  # (B,)\n    return -log_prob.mean()",
        LOSS_T,
    ),
    _m(
        "config.ctm_univtg_weight_not_legacy",
        "LEGACY_DEFAULTS",
        '    "loss.ctm_univtg_weight": 1.0,\n',
        "",
        RECIPE_T,
    ),
    _m(
        "losses.ctm_univtg_weight_ignored",
        "build_sa_detr_criterion",
        "lam_univtg = lam_a * loss_cfg.ctm_univtg_weight",
        "lam_univtg = lam_a",
        ("test_readings.py",),
    ),
    _m(
        "losses.ctm_univtg_weight_on_local",
        "build_sa_detr_criterion",
        '{"loss_ctm_local": lam_a, "loss_ctm_intra": lam_univtg',
        '{"loss_ctm_local": lam_univtg, "loss_ctm_intra": lam_univtg',
        ("test_readings.py",),
    ),
    _m(
        "losses.sal_margin_swapped",
        "saliency_margin_loss",
        "(margin + s_neg - s_pos)",
        "(margin + s_pos - s_neg)",
        LOSS_T,
    ),
    _m(
        "losses.sal_margin_no_times_2",
        "saliency_margin_loss",
        ".clamp(min=0).sum() / s_pos.numel() * 2",
        ".clamp(min=0).sum() / s_pos.numel()",
        LOSS_T,
    ),
    _m("losses.rank_norm_1", "RANK_NORM", "RANK_NORM = 12.0", "RANK_NORM = 1.0", LOSS_T),
    _m(
        "losses.rank_levels_from_0",
        "RANK_LEVELS",
        "RANK_LEVELS = tuple(range(1, 12))",
        "RANK_LEVELS = tuple(range(0, 12))",
        LOSS_T,
    ),
    _m(
        "losses.rank_strict_level",
        "saliency_rank_loss",
        "(labels[None] >= levels[:, None, None])",
        "(labels[None] > levels[:, None, None])",
        LOSS_T,
    ),
    _m(
        "losses.rank_neg_pass_keeps_labels",
        "saliency_rank_loss",
        "labels = torch.cat([labels, torch.zeros_like(labels)], dim=1)",
        "labels = torch.cat([labels, labels], dim=1)",
        LOSS_T,
    ),
    _m(
        "losses.rank_tau_multiplied",
        "saliency_rank_loss",
        "log_prob = (scores / tau)",
        "log_prob = (scores * tau)",
        LOSS_T,
    ),
    _m(
        "losses.rank_sum_over_batch",
        "saliency_rank_loss",
        "return -mean_pos.mean(dim=1).sum() / RANK_NORM",
        "return -mean_pos.sum(dim=1).sum() / RANK_NORM",
        LOSS_T,
    ),
    _m(
        "losses.sal_neg_sign",
        "saliency_neg_loss",
        "(F.softplus(scores_neg) *",
        "(F.softplus(-scores_neg) *",
        LOSS_T,
    ),
    _m(
        "losses.sal_neg_mean_over_clips",
        "saliency_neg_loss",
        "video_mask.to(scores_neg.dtype)).sum(dim=1).mean()",
        "video_mask.to(scores_neg.dtype)).mean()",
        LOSS_T,
    ),
    _m(
        "losses.eq10_weights_swapped",
        "build_sa_detr_criterion",
        'moment = {"l1": lam_m * loss_cfg.l1, "giou": lam_m * loss_cfg.giou}',
        'moment = {"l1": lam_m * loss_cfg.giou, "giou": lam_m * loss_cfg.l1}',
        LOSS_T,
    ),
    _m(
        "losses.dn_count_without_groups",
        "SetCriterion.normalizers",
        'num_dn = dn_meta["num_groups"] * dn_meta["pos_valid"].sum()',
        'num_dn = 1 * dn_meta["pos_valid"].sum()',
        LOSS_T,
    ),
    _m(
        "losses.matched_gt_without_offset",
        "matched_index",
        "(torch.full_like(p, b), p, j + offset)",
        "(torch.full_like(p, b), p, j)",
        LOSS_T,
    ),
    _m(
        "losses.dn_first_layer_as_last",
        "SetCriterion._dn_layers",
        'layers = [(dn[-1], "")]',
        'layers = [(dn[0], "")]',
        LOSS_T,
    ),
    # ------------------------------------------------------------------------------------ denoising
    _m(
        "denoising.sign_dropped", "noise_spans", "delta = sign * u  # (..., 2)", "delta = u  # (..., 2)", DN_T
    ),
    _m(
        "denoising.center_noise_default_center",
        "ModelConfig",
        'dn_center_noise: str = "width"',
        'dn_center_noise: str = "center"',
        DN_T,
    ),
    _m("denoising.band_from_zero", "noise_spans", "u = low + (high - low) * u", "u = low + high * u", DN_T),
    _m(
        "denoising.no_clamp_inside",
        "noise_spans",
        "new_c = torch.minimum(torch.maximum(new_c, new_w / 2), 1 - new_w / 2)",
        "new_c = new_c",
        DN_T,
    ),
    _m(
        "denoising.direct_sees_noise",
        "dn_attention_mask",
        "mask[:, :num_queries, num_queries:] = True",
        "mask[:, :num_queries, num_queries:] = False",
        DN_T,
    ),
    _m(
        "denoising.groups_see_later_groups",
        "dn_attention_mask",
        "mask[:, lo:hi, hi:] = True",
        "mask[:, lo:hi, hi:] = False",
        DN_T,
    ),
    _m(
        "denoising.padding_visible_to_noise",
        "dn_attention_mask",
        "mask[:, :, num_queries:] |= ~slot_valid[:, None, :]",
        "mask[:, :num_queries, num_queries:] |= ~slot_valid[:, None, :]",
        DN_T,
    ),
    _m(
        "denoising.mask_slot_order",
        "dn_attention_mask",
        "slot_valid = pos_valid.repeat(1, num_groups * (2 if has_negatives else 1))",
        "slot_valid = pos_valid.repeat_interleave(num_groups * (2 if has_negatives else 1), dim=1)",
        DN_T,
    ),
    _m(
        "denoising.negative_band_from_zero",
        "SpanDenoiser.negative_band",
        "return self.sigma_p, self.sigma_p + margin",
        "return 0.0, self.sigma_p + margin",
        DN_T,
    ),
    _m(
        "denoising.curriculum_to_zero",
        "negative_margin",
        "return full - p * (full - min_margin)",
        "return full - p * full",
        DN_T,
    ),
    _m(
        "denoising.negatives_positive_band",
        "SpanDenoiser.forward",
        "neg = self._noised(groups, low, high, generator)",
        "neg = self._noised(groups, 0.0, self.sigma_p, generator)",
        DN_T,
    ),
    _m(
        "denoising.polarity_order",
        "SpanDenoiser.forward",
        "anchors = torch.stack([pos, neg], dim=2)",
        "anchors = torch.stack([neg, pos], dim=2)",
        DN_T,
    ),
    # ------------------------------------------------------------------------------------ decoder
    _m(
        "decoder.dn_mask_repeat",
        "SpanAwareQueryRefiner.forward",
        "else ~self_attn_mask[:, None]",
        "else ~self_attn_mask.roll(1, dims=0)[:, None]",
        DEC_T,
    ),
    _m(
        "decoder.eq1_values_with_ps",
        "SpanAwareQueryRefiner.forward",
        "multihead_attention(self.self_attn, qk, content,",
        "multihead_attention(self.self_attn, qk, qk,",
        DEC_T,
    ),
    _m(
        "decoder.eq4_scale_dh",
        "SpanAwareCrossAttention.attention_weights",
        "/ math.sqrt(2 * self.head_dim)",
        "/ math.sqrt(self.head_dim)",
        DEC_T,
    ),
    _m(
        "decoder.eq6_additive",
        "SpanAwareCrossAttention.attention_weights",
        "logits = logits * modulation[:, None]",
        "logits = logits + modulation[:, None]",
        DEC_T,
    ),
    _m(
        "decoder.eq2_scale_multiplied",
        "SpanBasedEnhanceBlock.forward",
        "s_hi * frac) / math.sqrt(content.shape[-1])",
        "s_hi * frac) * math.sqrt(content.shape[-1])",
        DEC_T,
    ),
    _m(
        "decoder.eq2_sum_pool",
        "SpanBasedEnhanceBlock.forward",
        "w_lo, w_hi = scores * (1 - frac) / self.num_points, scores * frac / self.num_points",
        "w_lo, w_hi = scores * (1 - frac), scores * frac",
        DEC_T,
    ),
    _m(
        "decoder.eq2_scores_swapped_interpolation",
        "SpanBasedEnhanceBlock.forward",
        "scores = (s_lo * (1 - frac) + s_hi * frac)",
        "scores = (s_lo * frac + s_hi * (1 - frac))",
        DEC_T,
    ),
    _m(
        "decoder.eq2_scores_drop_w_v_bias",
        "SpanBasedEnhanceBlock.forward",
        "+ (text @ self.video_proj.bias)[:, None]",
        "+ 0.0",
        DEC_T,
    ),
    _m(
        "decoder.eq3_gate_mean",
        "SpanBasedEnhanceBlock.gate",
        "dot = (content * pooled).sum(-1, keepdim=True)  # (B, Q, 1)",
        "dot = (content * pooled).mean(-1, keepdim=True)  # (B, Q, 1)",
        DEC_T,
    ),
    _m(
        "decoder.eq3_gate_unscaled",
        "SpanBasedEnhanceBlock.gate",
        "return torch.sigmoid(dot / self.gate_div if self.gate_div != 1.0 else dot)",
        "return torch.sigmoid(dot)",
        DEC_T,
    ),
    _m(
        "decoder.eq3_no_content",
        "SpanBasedEnhanceBlock.forward",
        "self.fuse_proj((pooled + content) * gate) + content",
        "self.fuse_proj(pooled * gate) + content",
        DEC_T,
    ),
    _m(
        "decoder.eq3_no_residual",
        "SpanBasedEnhanceBlock.forward",
        "self.fuse_proj((pooled + content) * gate) + content",
        "self.fuse_proj((pooled + content) * gate)",
        DEC_T,
    ),
    _m(
        "decoder.anchor_update_sign",
        "SpanAwareRefineDecoder.forward",
        "torch.sigmoid(inverse_sigmoid(spans) + self.span_head(content))",
        "torch.sigmoid(inverse_sigmoid(spans) - self.span_head(content))",
        DEC_T,
    ),
    _m(
        "decoder.anchor_not_detached",
        "SpanAwareRefineDecoder.forward",
        'spans = new_spans if self.anchor_grad == "all" else new_spans.detach()',
        "spans = new_spans",
        DEC_T,
    ),
    _m(
        "decoder.anchor_grad_all_detached",
        "SpanAwareRefineDecoder.forward",
        'spans = new_spans if self.anchor_grad == "all" else new_spans.detach()',
        "spans = new_spans.detach()",
        ("test_readings.py",),
    ),
    _m(
        "decoder.anchor_grad_none_kept",
        "SpanAwareRefineDecoder.forward",
        "spans = spans.detach()  # DINO",
        "spans = spans  # DINO",
        ("test_readings.py",),
    ),
    # ------------------------------------------------------------------------------------ encoder
    _m(
        "encoder.fusion_no_qv_pos",
        "MultiModalAlignEncoder.fuse_video",
        "x = layer(x, text, text_mask, query_pos=vpos)",
        "x = layer(x, text, text_mask)",
        ENC_T,
    ),
    _m(
        "encoder.global_pos_on_values",
        "SelfAttentionLayer.forward",
        "return self._attend(x, x + pos, x, mask, keys_are_queries=True)",
        "return self._attend(x, x + pos, x + pos, mask, keys_are_queries=True)",
        ENC_T,
    ),
    _m(
        "encoder.global_pos_on_queries_only",
        "SelfAttentionLayer.forward",
        "return self._attend(x, x + pos, x, mask, keys_are_queries=True)",
        "return self._attend(x, x + pos, x, mask, keys_are_queries=False)",
        ENC_T,
    ),
    _m(
        "encoder.vtc_before_text_fused",
        "MultiModalAlignEncoder.forward",
        "v_src, t_src = (f_v, f_t) if",
        "v_src, t_src = (f_v, fused_t) if",
        ENC_T,
    ),
    _m(
        "encoder.vtc_after_video_enhanced",
        "MultiModalAlignEncoder.forward",
        "else (fused_v[:, 1:], fused_t)",
        "else (enhanced[:, 1:], fused_t)",
        ENC_T,
    ),
    _m(
        "encoder.ctm_before_sentence_fused",
        "MultiModalAlignEncoder.forward",
        'ctm = {"clip_emb": f_v, "sent_emb": self.sentence_pool(f_t, text_mask)}',
        'ctm = {"clip_emb": f_v, "sent_emb": sentence}',
        ENC_T,
    ),
    _m(
        "encoder.ctm_after_clips_enhanced",
        "MultiModalAlignEncoder.forward",
        'ctm = {"clip_emb": fused_v[:, 1:], "sent_emb": sentence}',
        'ctm = {"clip_emb": enhanced[:, 1:], "sent_emb": sentence}',
        ENC_T,
    ),
    _m(
        "encoder.fuse_text_reads_fused_video",
        "MultiModalAlignEncoder.forward",
        "fused_t = self.fuse_text(f_t, video, mask_g)",
        "fused_t = self.fuse_text(f_t, fused_v, mask_g)",
        ENC_T,
    ),
    _m(
        "encoder.sim_off_by_one",
        "MultiModalAlignEncoder.forward",
        "F.cosine_similarity(fused_v[:, 1:], sentence",
        "F.cosine_similarity(fused_v[:, :-1], sentence",
        ENC_T,
    ),
    _m(
        "encoder.hd_token_mean",
        "MultiModalAlignEncoder.global_enhance",
        "self.saliency_head(x[:, 1:], x[:, 0])",
        "self.saliency_head(x[:, 1:], x[:, 1:].mean(1))",
        ENC_T,
    ),
    _m(
        "encoder.pooling_unmasked",
        "AttentionPooling.forward",
        'logits = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))',
        "logits = self.score(x).squeeze(-1)",
        ENC_T,
    ),
    _m(
        "encoder.local_reads_padding", "LocalEnhanceBlock.forward", "h = conv(h * keep)", "h = conv(h)", ENC_T
    ),
    _m(
        "encoder.local_no_residual",
        "LocalEnhanceBlock.forward",
        "return self.norm(x + h.transpose(1, 2))",
        "return self.norm(h.transpose(1, 2))",
        ENC_T,
    ),
    _m(
        "encoder.masked_mean_plain",
        "masked_mean",
        "return (x * w).sum(1) / w.sum(1).clamp(min=1.0)",
        "return x.mean(1)",
        ENC_T,
    ),
    _m(
        "encoder.negative_roll_direction",
        "MultiModalAlignEncoder.forward",
        "torch.cat([f_t, f_t.roll(-1, dims=0)])  # (2B, Lt, d)\n"
        "            text_masks = torch.cat([text_mask, text_mask.roll(-1, dims=0)])",
        "torch.cat([f_t, f_t.roll(1, dims=0)])  # (2B, Lt, d)\n"
        "            text_masks = torch.cat([text_mask, text_mask.roll(1, dims=0)])",
        ENC_T,
    ),
    # ------------------------------------------------------------------------------------ query_init
    _m(
        "query_init.noise_content_zeros",
        "DualPathQueryInitializer.__init__",
        "nn.Parameter(torch.ones(dim))",
        "nn.Parameter(torch.zeros(dim))",
        QI_T,
    ),
    _m(
        "query_init.direct_content_ones",
        "DualPathQueryInitializer.__init__",
        "nn.Parameter(torch.zeros(num_queries, dim))",
        "nn.Parameter(torch.ones(num_queries, dim))",
        QI_T,
    ),
    _m(
        "query_init.no_init_spans",
        "DualPathQueryInitializer.direct",
        "init_spans: Tensor | None = anchors",
        "init_spans: Tensor | None = None",
        QI_T,
    ),
    # ------------------------------------------------------------------------------------ eval/moment
    _m("moment.top5", "MAX_PRED_WINDOWS", "MAX_PRED_WINDOWS = 10", "MAX_PRED_WINDOWS = 5", EVAL_T),
    _m(
        "moment.thresholds_to_0.9",
        "MAP_THRESHOLDS",
        "np.linspace(0.5, 0.95, 10)",
        "np.linspace(0.5, 0.9, 10)",
        EVAL_T,
    ),
    _m(
        "moment.iou_no_clip",
        "cross_iou",
        "inter = np.clip(right - left, 0.0, None)",
        "inter = right - left",
        EVAL_T,
    ),
    _m(
        "moment.strict_threshold",
        "average_precision",
        "cand = (iou_r >= thr[None, :, None])",
        "cand = (iou_r > thr[None, :, None])",
        EVAL_T,
    ),
    _m(
        "moment.gt_matched_twice",
        "average_precision",
        "& ~matched & pred_valid[:, r, None, None]",
        "& pred_valid[:, r, None, None]",
        EVAL_T,
    ),
    _m(
        "moment.ascending_score",
        "average_precision",
        "np.where(pred_valid, -pred[..., 2], np.inf)",
        "np.where(pred_valid, pred[..., 2], np.inf)",
        EVAL_T,
    ),
    _m(
        "moment.first_argmax_gt",
        "average_precision",
        "best = g - 1 - np.argmax(np.where(cand, iou_r, -2.0)[..., ::-1], axis=-1)",
        "best = np.argmax(np.where(cand, iou_r, -2.0), axis=-1)",
        EVAL_T,
    ),
    _m(
        "moment.ap_not_interpolated",
        "interpolated_ap",
        "mprec = np.maximum.accumulate(mprec[..., ::-1], axis=-1)[..., ::-1]",
        "mprec = mprec",
        EVAL_T,
    ),
    _m(
        "moment.r1_first_gt",
        "top1_iou",
        "np.argmax(iou, axis=1)[:, None, None]",
        "np.zeros(len(iou), dtype=int)[:, None, None]",
        EVAL_T,
    ),
    _m(
        "moment.bucket_bounds",
        "moment_retrieval_metrics",
        "(gt_len > bounds[0]) & (gt_len <= bounds[1])",
        "(gt_len >= bounds[0]) & (gt_len < bounds[1])",
        EVAL_T,
    ),
    _m(
        "moment.r1_strict",
        "moment_retrieval_metrics",
        "_pct(np.mean(iou1 >= t))",
        "_pct(np.mean(iou1 > t))",
        EVAL_T,
    ),
    # ------------------------------------------------------------------------------------ eval/highlight
    _m(
        "highlight.hit1_from_cut",
        "highlight_metrics",
        "top = np.argmax(raw, axis=1)",
        "top = np.argmax(cut, axis=1)",
        EVAL_T,
    ),
    _m("highlight.fair_at_1", "highlight:LEVELS", 'LEVELS = {"Fair": 2,', 'LEVELS = {"Fair": 1,', EVAL_T),
    _m(
        "highlight.hit1_all_annotators",
        "highlight_metrics",
        "reshape(q, len(LEVELS), 3).any(axis=2)",
        "reshape(q, len(LEVELS), 3).all(axis=2)",
        EVAL_T,
    ),
    _m(
        "highlight.ties_not_grouped",
        "ranking_ap",
        "group_end = (v & (nxt_differs | nxt_invalid))[..., None]",
        "group_end = v[..., None]",
        EVAL_T,
    ),
    _m(
        "highlight.ap_not_interpolated",
        "ranking_ap",
        "interp = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]",
        "interp = precision",
        EVAL_T,
    ),
    _m(
        "highlight.pad_below_zero",
        "highlight_metrics",
        "np.where(np.isfinite(raw), raw, 0.0)",
        "np.where(np.isfinite(raw), raw, -1e9)",
        EVAL_T,
    ),
    _m(
        "highlight.strict_level",
        "highlight_metrics",
        "np.concatenate([gt >= m for m in",
        "np.concatenate([gt > m for m in",
        EVAL_T,
    ),
    # ------------------------------------------------------------------ the paper's forms (0.2)
    _m(
        "config.eq4_default_projected",
        "ModelConfig",
        'position_mode: str = "raw"',
        'position_mode: str = "projected"',
        RECIPE_T,
    ),
    _m(
        "config.eq8_default_bins",
        "LossConfig",
        'quality_balance: str = "none"',
        'quality_balance: str = "iou_bins"',
        RECIPE_T,
    ),
    _m(
        "config.ctm_univtg_weight_default_0.1",
        "LossConfig",
        "ctm_univtg_weight: float = 1.0",
        "ctm_univtg_weight: float = 0.1",
        RECIPE_T,
    ),
    _m(
        "config.eq1_default_before",
        "ModelConfig",
        'self_attn_pos: str = "after_proj"',
        'self_attn_pos: str = "before_proj"',
        RECIPE_T,
    ),
    _m(
        "config.noise_default_pairs",
        "LossConfig",
        'noise_reduction: str = "gt"',
        'noise_reduction: str = "pairs"',
        RECIPE_T,
    ),
    _m(
        "config.recipe_ignored",
        "with_recipe",
        "for key, value in get_recipe(name).overrides.items():",
        "for key, value in {}.items():",
        RECIPE_T,
    ),
    _m(
        "config.recipe_over_user_keys",
        "with_recipe",
        "return deep_merge(base, tree)",
        "return deep_merge(tree, base)",
        RECIPE_T,
    ),
    _m(
        "config.round_to_clip_not_legacy",
        "LEGACY_DEFAULTS",
        '    "model.round_to_clip": False,  # windows were not rounded to the clip grid\n',
        "",
        RECIPE_T,
    ),
    _m(
        "config.qd_t2v_not_legacy",
        "LEGACY_DEFAULTS",
        '    "model.qd_t2v_form": "normed",',
        '    "model.qd_t2v_form": "public",',
        RECIPE_T,
    ),
    _m(
        "config.removed_switch_accepted",
        "drop_removed_switches",
        "if part[key] != neutral:",
        "if False:",
        RECIPE_T,
    ),
    _m(
        "recipes.tuned_without_gate",
        "_TUNED",
        '"model.gate_scale": (True,',
        '"model.gate_scale": (False,',
        RECIPE_T,
    ),
    _m(
        "losses.ctm_intra_le",
        "ctm_intra_loss",
        "keep = (saliency < anchor_sal[:, None])",
        "keep = (saliency <= anchor_sal[:, None])",
        LOSS_T,
    ),
    _m(
        "losses.ctm_intra_padding_negatives",
        "ctm_intra_loss",
        "(saliency < anchor_sal[:, None]) & video_mask.bool()",
        "(saliency < anchor_sal[:, None])",
        LOSS_T,
    ),
    _m(
        "losses.noise_divisor_always_pairs",
        "noise_divisor",
        'num_pairs / groups if reduction == "gt" else num_pairs',
        "num_pairs",
        LOSS_T,
    ),
    _m(
        "losses.loss_dn_ignores_reduction",
        "SetCriterion.loss_dn",
        "groups, self.noise_reduction)",
        'groups, "pairs")',
        LOSS_T,
    ),
    _m(
        "denoising.center_full_width",
        "noise_spans",
        '(w if center_scale == "width" else c) / 2',
        '(w if center_scale == "width" else c)',
        DN_T,
    ),
    _m(
        "denoising.width_absolute",
        "noise_spans",
        "new_w = (w + delta[..., 1] * w)",
        "new_w = (w + delta[..., 1])",
        DN_T,
    ),
    _m(
        "denoising.center_scale_ignored",
        "noise_spans",
        '(w if center_scale == "width" else c) / 2',
        "w / 2",
        DN_T,
    ),
    _m(
        "denoising.center_uses_width_noise",
        "noise_spans",
        "new_c = c + delta[..., 0]",
        "new_c = c + delta[..., 1]",
        DN_T,
    ),
    _m("decoder.eq1_without_ps", "SpanAwareQueryRefiner.forward", ", pos_after_proj=span_pos", "", DEC_T),
    _m(
        "decoder.eq1_before_without_ps",
        "SpanAwareQueryRefiner.forward",
        "qk = content + span_pos  # (B, Q, d)",
        "qk = content  # (B, Q, d)",
        DEC_T,
    ),
    _m(
        "decoder.eq1_forms_swapped",
        "SpanAwareQueryRefiner.forward",
        'if self.self_attn_pos == "after_proj":',
        'if self.self_attn_pos != "after_proj":',
        DEC_T,
    ),
    _m(
        "decoder.pmv_zeroed",
        "decoder:clip_position_embedding",
        "return sine_embedding(centres, dim)",
        "return torch.zeros_like(sine_embedding(centres, dim))",
        DEC_T,
    ),
    _m(
        "decoder.eq4_no_ps",
        "SpanAwareQueryRefiner.forward",
        "self.cross_attn(content, span_pos, memory,",
        "self.cross_attn(content, torch.zeros_like(span_pos), memory,",
        DEC_T,
    ),
    _m(
        "decoder.eq6_no_residual",
        "SpanAwareQueryRefiner.forward",
        "self.norm2(residual + self.dropout2(ca))",
        "self.norm2(self.dropout2(ca))",
        DEC_T,
    ),
    _m(
        "decoder.eq6_residual_always_input",
        "SpanAwareQueryRefiner.forward",
        'residual = query if self.cross_residual == "query" else content',
        "residual = content",
        DEC_T,
    ),
    _m(
        "decoder.eq6_residual_unprojected",
        "SpanAwareCrossAttention.forward",
        "query = self.q_proj(content)  # Q_C̄ (B, Q, d)",
        "query = content  # Q_C̄ (B, Q, d)",
        DEC_T,
    ),
    _m(
        "decoder.gaussian_alpha_fixed",
        "SpanAwareQueryRefiner.forward",
        "make(spans, video_mask, self.gaussian_alpha,",
        "make(spans, video_mask, 1.0,",
        DEC_T,
    ),
    _m(
        "decoder.mask_clip_time_ignored",
        "SpanAwareQueryRefiner.forward",
        ", clip_time=self.mask_clip_time)",
        ")",
        DEC_T,
    ),
    _m("span_ops.clip_end_as_centre", "clip_times", 'if where == "center":', 'if where != "end":', SPAN_T),
    _m(
        "losses.dn_aux_uses_last_layer",
        "SetCriterion._dn_layers",
        'layers += [(d, f"_{i}")',
        'layers += [(dn[-1], f"_{i}")',
        LOSS_T,
    ),
    _m(
        "losses.aux_reuses_last_matching",
        "SetCriterion.forward",
        'matches = self.match(layer_out, batch["spans"])',
        'matches = self.match(out, batch["spans"])',
        LOSS_T,
    ),
    _m(
        "losses.similarity_unnormalised",
        "clip_sentence_cosine",
        "return F.cosine_similarity(clip_emb, sent_emb[:, None, :], dim=-1)",
        "return (clip_emb * sent_emb[:, None, :]).sum(-1)",
        LOSS_T,
    ),
    _m("long_video.no_offset", "Predictor.predict", "offset = start * self.clip_len", "offset = 0.0", LONG_T),
    _m(
        "long_video.offset_in_clips",
        "Predictor.predict",
        "offset = start * self.clip_len",
        "offset = start",
        LONG_T,
    ),
    _m(
        "long_video.rescore_ignored",
        "Predictor.predict",
        "moments = [[st, en, c * r] for",
        "moments = [[st, en, c] for",
        LONG_T,
    ),
    _m(
        "long_video.peak_absolute_clip",
        "Predictor.predict",
        "int(st / self.clip_len) - start",
        "int(st / self.clip_len)",
        LONG_T,
    ),
    _m("long_video.saliency_summed", "stitch_saliency", "return total / count", "return total", LONG_T),
    _m(
        "long_video.last_window_not_end_aligned",
        "window_starts",
        "starts.append(n_clips - window)",
        "pass",
        LONG_T,
    ),
    _m(
        "long_video.relevance_not_relative",
        "saliency_relevance",
        "np.exp(log_sig - log_sig.max())",
        "np.exp(log_sig)",
        LONG_T,
    ),
    _m(
        "query_init.no_sigmoid",
        "DualPathQueryInitializer.direct",
        "anchors = torch.sigmoid(logits)",
        "anchors = logits",
        QI_T,
    ),
)


def check_mutations(root: Path = REPO) -> tuple[dict[str, Site], list[str]]:
    """(the site of every mutation that can be located, the problems of the others and of the list:
    unlocatable targets or snippets, no-op or duplicate mutations, missing test files)."""
    problems = []
    names = [m.name for m in MUTATIONS]
    problems += [f"duplicate name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    index = index_sources(root)
    sites: dict[str, Site] = {}
    for m in MUTATIONS:
        site = locate(m, index)
        if isinstance(site, str):
            problems.append(f"{m.name}: {site}")
        else:
            sites[m.name] = site
        if m.original == m.replacement:
            problems.append(f"{m.name}: the replacement equals the original")
        problems += [f"{m.name}: no test file {t}" for t in m.tests if not (root / "tests" / t).is_file()]
    return sites, problems


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
    mutations: list[Mutation], sites: dict[str, Site], repos: list[Path], fork: bool, timeout: float
) -> Iterator[tuple[Mutation, bool, float]]:
    """Each mutation applied alone, at its site, to a free scratch repo (one run per repo at a time) ->
    yields (mutation, caught, seconds) as runs finish. A run past `timeout` is killed and counts as caught."""
    pending, free = list(mutations), list(repos)
    running: dict[Run, tuple[Mutation, Path, Path, str]] = {}
    try:
        while pending or running:
            while pending and free:
                m, repo = pending.pop(0), free.pop(0)
                site = sites[m.name]
                target = repo / site.path.relative_to(REPO)
                pristine = target.read_text()
                at = site.offset
                assert pristine[at : at + len(m.original)] == m.original, m.name
                target.write_text(pristine[:at] + m.replacement + pristine[at + len(m.original) :])
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

    sites, problems = check_mutations()
    selected = [m for m in MUTATIONS if not args.k or any(k in m.name for k in args.k)]
    located = [m for m in selected if m.name in sites]
    if args.list:
        for m in selected:
            where = sites[m.name].path.relative_to(REPO) if m.name in sites else "NOT LOCATED"
            print(f"{m.name}  ({m.target} in {where}; {', '.join(m.tests)})")
        return 0
    if problems:
        print(f"{len(problems)} problems (these mutations are left out of the score):")
        print("\n".join(f"  {p}" for p in problems))
    if args.check:
        print(f"{len(MUTATIONS)} mutations, {len(sites)} located")
        return 2 if problems else 0
    if not located:
        print("no located mutation matches")
        return 2

    # SIGTERM as Ctrl-C: the running pytest is killed and the scratch directory removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    shared_data = not args.no_shared_data and (REPO.parent / "shared" / "data").is_dir()
    print(f"{len(located)} mutations, shared data: {'yes' if shared_data else 'no'}", flush=True)
    fork = not args.no_fork and hasattr(os, "fork")
    if fork:
        preload()
    start = time.monotonic()
    survivors = []
    with tempfile.TemporaryDirectory(prefix="sadetr_mutation_") as tmp:
        repos = [make_scratch(Path(tmp) / f"worker{i}", shared_data) for i in range(max(args.jobs, 1))]
        all_tests = tuple(sorted({t for m in located for t in m.tests}))
        baseline = Run(repos[0], all_tests, fork)
        while baseline.poll() is None:
            time.sleep(0.1)
        if baseline.poll() != 0:
            print(f"the unmutated tests fail, nothing to measure:\n{baseline.tail()}")
            return 2
        runs = run_mutations(located, sites, repos, fork, args.timeout)
        for i, (m, caught, seconds) in enumerate(runs, 1):
            print(f"[{i:3d}/{len(located)}] {'caught' if caught else 'SURVIVED'} {m.name} ({seconds:.0f} s)")
            sys.stdout.flush()
            if not caught:
                survivors.append(m)
    caught = len(located) - len(survivors)
    score = 100.0 * caught / len(located)
    print(
        f"\nmutation score: {caught}/{len(located)} caught = {score:.1f} % "
        f"(shared data: {'yes' if shared_data else 'no'}, {time.monotonic() - start:.0f} s; "
        f"{len(selected) - len(located)} not located)"
    )
    if survivors:
        print("survivors:")
        for m in survivors:
            print(f"  {m.name}: {m.target}: {m.original.strip()!r} -> {m.replacement.strip()!r}")
    return 1 if score < args.min_score else 0


if __name__ == "__main__":
    sys.exit(main())
