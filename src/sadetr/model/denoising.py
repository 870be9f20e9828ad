"""Noise Query group of the Dual Path Query Initializer (3.3): noised GT span anchors and the decoder
self-attention mask that keeps the noise groups from leaking into the direct group (DN-DETR / DINO).

Noise rule (docs/readings.md "3.3"; the paper's "σ_p = σ_n + δ" is a typo): for a GT (c, w),
`Δc = ±u_c·w/2`, `Δw = ±u_w·w` with independent random signs and magnitudes `u` uniform in `[0, σ_p]`
for positive anchors and in `[σ_p, σ_p + margin]` for negative ones (DINO's contrastive bands; the
margin is `σ_n − σ_p` for the fixed schedule, shrinking linearly to `min_margin` for the curriculum one).
The centre's scale is a reading (`model.dn_center_noise`): `width` (DN-DETR's `|Δc| ≤ σ·w/2`; the paper's
"|Δc| < σc/2" read as a typo, docs/readings.md) or `center` (as written: `Δc = ±u_c·c/2`).

Clamp (our choice; keeps both bounds `|Δc| ≤ σ·w/2` and `|Δw| ≤ σ·w`): the noised width is clamped to
`[min_width, 1]`, then the centre to `[w'/2, 1 − w'/2]` so that the span lies inside [0, 1]. Since
σ < 1, `w' ≥ (1 − σ)·w > 0` before the clamp; moving the centre back inside never moves it further from
the GT centre than `max(|Δc|, |Δw|/2)`.

Layout of the `N_dn` noise slots (CONTRACTS.md "Model"): with M = the largest GT count in the batch,
group g, polarity p (0 positive, 1 negative) and GT j sit at slot `g·2M + p·M + j`; without negatives
at `g·M + j`. Samples with fewer than M GT spans have padded slots (`pos_valid[b, j]` is False).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sadetr.core.errors import ConfigError
from sadetr.model.config import ModelConfig
from sadetr.model.span_ops import pad_spans

# Anchor given to padded slots: a valid span (so downstream span ops stay finite); never read as a key.
PAD_ANCHOR = (0.5, 0.5)


@dataclass
class DenoisingQueries:
    """Output of the denoiser.

    anchors:   [B, N_dn, 2] noised (center, width) in [0, 1], w > 0 (not inverse-sigmoid).
    attn_mask: [B, Nq + N_dn, Nq + N_dn] bool, True = blocked; direct queries first, then noise slots.
    meta:      {"num_groups": G, "max_gt": M, "pos_valid": BoolTensor [B, M], "has_negatives": bool}
               (the model passes it on as `out["dn_meta"]`).
    """

    anchors: Tensor
    attn_mask: Tensor
    meta: dict = field(default_factory=dict)


def negative_margin(
    sigma_p: float, sigma_n: float, schedule: str, min_margin: float, progress: float
) -> float:
    """Width of the negative noise band `[σ_p, σ_p + margin]` at training progress in [0, 1] (Table 8).

    fixed: `σ_n − σ_p` throughout; curriculum: linear from `σ_n − σ_p` (progress 0) to `min_margin` (1).

    >>> round(negative_margin(0.2, 0.6, "curriculum", 0.1, 0.5), 4)
    0.25
    """
    full = sigma_n - sigma_p
    if schedule == "fixed":
        return full
    if schedule == "curriculum":
        p = min(max(float(progress), 0.0), 1.0)
        return full - p * (full - min_margin)
    raise ValueError(f"unknown denoising schedule {schedule!r} (expected 'fixed' or 'curriculum')")


CENTER_NOISE_SCALES = ("width", "center")


def noise_spans(
    gt: Tensor,
    low: float,
    high: float,
    generator: torch.Generator | None = None,
    min_width: float = 1e-4,
    center_scale: str = "width",
) -> Tensor:
    """Noise GT spans (center, width) [..., 2] with relative magnitudes uniform in [low, high] (3.3).

    `Δc = ±u_c·w/2` (center_scale `width`) or `±u_c·c/2` (`center`, the paper's literal rule),
    `Δw = ±u_w·w`, u ~ U[low, high], independent signs; then the clamp of the module docstring.
    Returns [..., 2].
    """
    if center_scale not in CENTER_NOISE_SCALES:
        raise ValueError(f"center noise scale must be one of {CENTER_NOISE_SCALES}, got {center_scale!r}")
    c, w = gt.unbind(-1)  # (...), (...)
    draw_on = generator.device if generator is not None else gt.device  # a CPU generator may serve a GPU run
    u = torch.rand(gt.shape, generator=generator, device=draw_on, dtype=gt.dtype).to(gt.device)
    u = low + (high - low) * u  # (..., 2)
    sign = torch.randint(0, 2, gt.shape, generator=generator, device=draw_on).to(gt.device, gt.dtype) * 2 - 1
    delta = sign * u  # (..., 2) relative noise of (c, w)
    new_w = (w + delta[..., 1] * w).clamp(min=min_width, max=1.0)
    new_c = c + delta[..., 0] * (w if center_scale == "width" else c) / 2
    new_c = torch.minimum(torch.maximum(new_c, new_w / 2), 1 - new_w / 2)  # span inside [0, 1]
    return torch.stack([new_c, new_w], dim=-1)


def dn_attention_mask(
    num_queries: int, num_groups: int, max_gt: int, has_negatives: bool, pos_valid: Tensor
) -> Tensor:
    """Decoder self-attention mask for direct + noise queries: [B, Nq + N_dn, Nq + N_dn], True = blocked.

    pos_valid: [B, M] bool (GT j exists in sample b). Every row keeps the Nq direct columns open, so no
    row is fully masked (no NaN from the softmax).
    """
    bsz = pos_valid.shape[0]
    group_size = max_gt * (2 if has_negatives else 1)  # slots per noise group
    num_dn = num_groups * group_size
    total = num_queries + num_dn
    mask = torch.zeros(bsz, total, total, dtype=torch.bool, device=pos_valid.device)
    # Rule 1: direct queries never see noise queries (the direct path must behave as at inference).
    mask[:, :num_queries, num_queries:] = True
    # Rule 2: a noise group sees itself and the direct queries, never another noise group.
    for g in range(num_groups):
        lo = num_queries + g * group_size
        hi = lo + group_size
        mask[:, lo:hi, num_queries:lo] = True
        mask[:, lo:hi, hi:] = True
    # Rule 3: padded slots (samples with fewer GT than M) are blocked as keys for every query.
    slot_valid = pos_valid.repeat(1, num_groups * (2 if has_negatives else 1))  # (B, N_dn), slot order
    mask[:, :, num_queries:] |= ~slot_valid[:, None, :]
    return mask


class SpanDenoiser(nn.Module):
    """Builds the noise Query group's anchors and the attention mask from the GT spans (3.3).

    Holds no parameters (the noise content vector belongs to the model); `set_progress` feeds the
    curriculum schedule. Call it in training only; `forward` returns None when the batch has no GT.
    """

    def __init__(
        self,
        num_groups: int,
        sigma_p: float,
        sigma_n: float,
        negatives: bool = True,
        schedule: str = "fixed",
        min_margin: float = 0.1,
        center_scale: str = "width",
    ) -> None:
        super().__init__()
        if center_scale not in CENTER_NOISE_SCALES:
            raise ValueError(f"dn_center_noise must be one of {CENTER_NOISE_SCALES}, got {center_scale!r}")
        if num_groups < 1:
            raise ValueError(f"num_dn_groups must be >= 1, got {num_groups}")
        if not 0 < sigma_p <= sigma_n < 1:
            raise ValueError(f"need 0 < dn_sigma_p <= dn_sigma_n < 1, got {sigma_p}, {sigma_n}")
        if not 0 <= min_margin <= sigma_n - sigma_p + 1e-9:
            raise ValueError(f"dn_curriculum_min_margin must lie in [0, sigma_n - sigma_p], got {min_margin}")
        negative_margin(sigma_p, sigma_n, schedule, min_margin, 0.0)  # validates the schedule name
        self.num_groups = num_groups
        self.sigma_p = sigma_p
        self.sigma_n = sigma_n
        self.negatives = negatives
        self.schedule = schedule
        self.min_margin = min_margin
        self.center_scale = center_scale
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        """Training progress in [0, 1] (e.g. epoch / num_epochs); only the curriculum schedule uses it."""
        self.progress = min(max(float(progress), 0.0), 1.0)

    def negative_band(self) -> tuple[float, float]:
        """Current [low, high] relative noise magnitude of negative anchors."""
        margin = negative_margin(self.sigma_p, self.sigma_n, self.schedule, self.min_margin, self.progress)
        return self.sigma_p, self.sigma_p + margin

    def _noised(self, groups: Tensor, low: float, high: float, generator: torch.Generator | None) -> Tensor:
        """`noise_spans` with this denoiser's centre rule: [..., 2] -> [..., 2]."""
        return noise_spans(groups, low, high, generator, center_scale=self.center_scale)

    def forward(
        self, targets: list[Tensor], num_queries: int, generator: torch.Generator | None = None
    ) -> DenoisingQueries | None:
        """targets: list[B] of [N_i, 2] GT (center, width); num_queries: Nq of the direct group.

        Worked example, GT counts [2, 3], G = 2 groups, negatives on: M = 3, group size 2M = 6,
        N_dn = 12. Sample 0 has GT a0, a1; sample 1 has b0, b1, b2. Slots of sample 0:
          g=0: pos [a0 a1 pad] neg [a0 a1 pad] | g=1: pos [a0 a1 pad] neg [a0 a1 pad]
        i.e. slots 2, 5, 8, 11 are padding (pos_valid[0] = [T, T, F]); sample 1 has no padding.
        In the attention mask (Nq direct rows/cols first) slot s is row/column Nq + s.
        """
        if num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {num_queries}")
        bsz = len(targets)
        counts = [int(t.shape[0]) for t in targets]
        max_gt = max(counts, default=0)
        if max_gt == 0:
            return None
        gt, pos_valid = pad_spans(targets, fill=PAD_ANCHOR)  # (B, M, 2) padded with PAD_ANCHOR, (B, M)
        device, dtype = gt.device, gt.dtype

        groups = gt[:, None].expand(bsz, self.num_groups, max_gt, 2)  # (B, G, M, 2)
        pos = self._noised(groups, 0.0, self.sigma_p, generator)  # (B, G, M, 2)
        if self.negatives:
            low, high = self.negative_band()
            neg = self._noised(groups, low, high, generator)  # (B, G, M, 2)
            anchors = torch.stack([pos, neg], dim=2)  # (B, G, 2, M, 2): slot g*2M + p*M + j
        else:
            anchors = pos  # (B, G, M, 2): slot g*M + j
        anchors = anchors.reshape(bsz, -1, 2)  # (B, N_dn, 2)
        slot_valid = pos_valid.repeat(1, self.num_groups * (2 if self.negatives else 1))  # (B, N_dn)
        pad = torch.tensor(PAD_ANCHOR, dtype=dtype).to(device, non_blocking=True)  # no stream sync on CUDA
        anchors = torch.where(slot_valid[..., None], anchors, pad)  # padded slots get PAD_ANCHOR

        attn_mask = dn_attention_mask(num_queries, self.num_groups, max_gt, self.negatives, pos_valid)
        meta = {
            "num_groups": self.num_groups,
            "max_gt": max_gt,
            "pos_valid": pos_valid,
            "has_negatives": self.negatives,
        }
        return DenoisingQueries(anchors=anchors, attn_mask=attn_mask, meta=meta)


def build_denoiser(cfg: ModelConfig) -> SpanDenoiser | None:
    """The denoiser of `cfg` (use_dn, num_dn_groups, dn_sigma_p/n, dn_negatives, dn_schedule,
    dn_center_noise), or None."""
    if not cfg.use_dn:
        return None
    checks = (
        ("model.num_dn_groups", cfg.num_dn_groups >= 1, "must be >= 1"),
        ("model.dn_sigma_p", 0 < cfg.dn_sigma_p <= cfg.dn_sigma_n, "need 0 < dn_sigma_p <= dn_sigma_n"),
        ("model.dn_sigma_n", cfg.dn_sigma_n < 1, "must be < 1 (the noised width must stay > 0)"),
        ("model.dn_schedule", cfg.dn_schedule in ("fixed", "curriculum"), "must be one of fixed, curriculum"),
        ("model.dn_center_noise", cfg.dn_center_noise in CENTER_NOISE_SCALES, "must be one of width, center"),
        (
            "model.dn_curriculum_min_margin",
            0 <= cfg.dn_curriculum_min_margin <= cfg.dn_sigma_n - cfg.dn_sigma_p + 1e-9,
            "must lie in [0, dn_sigma_n - dn_sigma_p]",
        ),
    )
    for key, ok, message in checks:
        if not ok:
            value = getattr(cfg, key.split(".")[1])
            raise ConfigError(f"{message}, got {value!r}", key)
    return SpanDenoiser(
        num_groups=cfg.num_dn_groups,
        sigma_p=cfg.dn_sigma_p,
        sigma_n=cfg.dn_sigma_n,
        negatives=cfg.dn_negatives,
        schedule=cfg.dn_schedule,
        min_margin=cfg.dn_curriculum_min_margin,
        center_scale=cfg.dn_center_noise,
    )


def build_dn_queries(
    targets: list[Tensor],
    num_queries: int,
    num_groups: int,
    sigma_p: float,
    sigma_n: float,
    negatives: bool = True,
    generator: torch.Generator | None = None,
) -> DenoisingQueries | None:
    """Functional form of `SpanDenoiser(...)(targets, num_queries)` with the fixed schedule."""
    return SpanDenoiser(num_groups, sigma_p, sigma_n, negatives)(targets, num_queries, generator)
