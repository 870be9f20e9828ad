"""Span operations on normalised temporal spans: conversions, IoU/gIoU, sine embedding, Gaussian mask
(eq 5) and Temporal Align (G-TAD sampling used by the Span Based Enhance Block).

Conventions (docs/readings.md): spans are (center, width) in [0, 1], normalised by the time covered by the
sample's own `L_v` valid clips; clip `i` (0-based) covers `[i/L_v, (i+1)/L_v]` and has centre
`(i + 0.5)/L_v`. Padded clips never count: every function that looks at clips takes a `valid`
mask / length and uses the sample's own `L_v`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Eq 5's mask values below this are 0 (`gaussian_mask`): far under fp32/fp64 resolution relative to a logit.
GAUSSIAN_MASK_FLOOR = 1e-30


def span_cxw_to_xx(cxw: Tensor) -> Tensor:
    """(center, width) -> (start, end), any leading shape.

    >>> span_cxw_to_xx(torch.tensor([[0.5, 0.2]]))
    tensor([[0.4000, 0.6000]])
    """
    c, w = cxw.unbind(-1)
    return torch.stack([c - 0.5 * w, c + 0.5 * w], dim=-1)


def span_xx_to_cxw(xx: Tensor) -> Tensor:
    """(start, end) -> (center, width), any leading shape.

    >>> span_xx_to_cxw(torch.tensor([[0.4, 0.6]]))
    tensor([[0.5000, 0.2000]])
    """
    s, e = xx.unbind(-1)
    return torch.stack([0.5 * (s + e), e - s], dim=-1)


def temporal_iou(spans1: Tensor, spans2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU and union of (start, end) spans: [N, 2] x [M, 2] -> ([N, M], [N, M]).

    >>> iou, union = temporal_iou(torch.tensor([[0.0, 0.4]]), torch.tensor([[0.2, 0.6], [0.5, 0.7]]))
    >>> iou
    tensor([[0.3333, 0.0000]])
    """
    areas1 = spans1[:, 1] - spans1[:, 0]  # (N,)
    areas2 = spans2[:, 1] - spans2[:, 0]  # (M,)
    left = torch.max(spans1[:, None, 0], spans2[None, :, 0])  # (N, M)
    right = torch.min(spans1[:, None, 1], spans2[None, :, 1])  # (N, M)
    inter = (right - left).clamp(min=0)  # (N, M)
    union = areas1[:, None] + areas2[None, :] - inter  # (N, M)
    return inter / union.clamp(min=1e-12), union


def generalized_temporal_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Pairwise generalized IoU (Rezatofighi et al.) of (start, end) spans: [N, 2] x [M, 2] -> [N, M].

    >>> generalized_temporal_iou(torch.tensor([[0.0, 0.2]]), torch.tensor([[0.6, 1.0]]))
    tensor([[-0.4000]])
    """
    iou, union = temporal_iou(spans1, spans2)
    left = torch.min(spans1[:, None, 0], spans2[None, :, 0])  # (N, M)
    right = torch.max(spans1[:, None, 1], spans2[None, :, 1])  # (N, M)
    enclosing = (right - left).clamp(min=0)  # (N, M)
    return iou - (enclosing - union) / enclosing.clamp(min=1e-12)


def paired_temporal_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Element-wise IoU of two aligned sets of (start, end) spans: [..., 2] x [..., 2] -> [...]."""
    inter = (torch.min(spans1[..., 1], spans2[..., 1]) - torch.max(spans1[..., 0], spans2[..., 0])).clamp(
        min=0
    )
    union = (spans1[..., 1] - spans1[..., 0]) + (spans2[..., 1] - spans2[..., 0]) - inter
    return inter / union.clamp(min=1e-12)


def paired_generalized_temporal_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Element-wise gIoU of two aligned sets of (start, end) spans: [..., 2] x [..., 2] -> [...]."""
    inter = (torch.min(spans1[..., 1], spans2[..., 1]) - torch.max(spans1[..., 0], spans2[..., 0])).clamp(
        min=0
    )
    union = (spans1[..., 1] - spans1[..., 0]) + (spans2[..., 1] - spans2[..., 0]) - inter
    enclosing = (torch.max(spans1[..., 1], spans2[..., 1]) - torch.min(spans1[..., 0], spans2[..., 0])).clamp(
        min=0
    )
    return inter / union.clamp(min=1e-12) - (enclosing - union) / enclosing.clamp(min=1e-12)


def pad_spans(spans: Sequence[Tensor], fill: tuple[float, float] = (0.0, 0.0)) -> tuple[Tensor, Tensor]:
    """A batch's spans in one tensor: list[B] of [N_i, 2] -> ([B, M, 2], [B, M] bool valid), M = max N_i.

    Padded rows hold `fill`. Built with one concatenation and one scatter, whatever B (no per-sample
    kernels: on a GPU each would be a launch); the index arithmetic runs on the host.

    >>> padded, valid = pad_spans([torch.tensor([[0.2, 0.1]]), torch.tensor([[0.5, 0.2], [0.7, 0.1]])])
    >>> padded[0].tolist(), valid.tolist()
    ([[0.20000000298023224, 0.10000000149011612], [0.0, 0.0]], [[True, False], [True, True]])
    """
    if not spans:
        raise ValueError("pad_spans needs at least one sample")
    counts = [int(t.shape[0]) for t in spans]  # host integers: the index arithmetic needs no kernels
    bsz, max_n = len(spans), max(counts)
    flat = torch.cat([t.reshape(-1, 2) for t in spans])  # (N, 2)
    device = flat.device
    dtype = flat.dtype if flat.is_floating_point() else torch.float32
    slots = [b * max_n + j for b, n in enumerate(counts) for j in range(n)]  # (N,) row of each span
    # host values go over with non_blocking: a blocking copy (torch.tensor(.., device=cuda)) syncs the stream
    padded = torch.tensor(fill, dtype=dtype).to(device, non_blocking=True).repeat(bsz * max_n, 1)  # (B*M, 2)
    padded = padded.index_copy(
        0, torch.tensor(slots, dtype=torch.int64).to(device, non_blocking=True), flat.to(dtype)
    )
    valid = torch.tensor([[j < n for j in range(max_n)] for n in counts], dtype=torch.bool).view(bsz, max_n)
    return padded.view(bsz, max_n, 2), valid.to(device, non_blocking=True)


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """logit(x) with x clamped to [eps, 1 - eps] (DAB-DETR's anchor update space)."""
    x = x.clamp(min=eps, max=1 - eps)
    return torch.log(x / (1 - x))


def sine_embedding(
    x: Tensor, dim: int, temperature: float = 10000.0, scale: float | Tensor = 2 * math.pi
) -> Tensor:
    """Sine positional embedding of scalars in [0, 1]: [...] -> [..., dim] (DAB-DETR/Conditional-DETR).

    Channel pairs (2k, 2k+1) hold (sin, cos) of `scale*x / temperature**(2k/dim)`. scale: 2π (one period
    of the fastest pair over [0, 1], DETR's normalised embedding) or a tensor broadcastable to x.
    """
    if dim % 2:
        raise ValueError(f"sine_embedding needs an even dim, got {dim}")
    k = torch.arange(dim // 2, dtype=torch.float32, device=x.device)  # (dim/2,)
    freqs = temperature ** (2 * k / dim)  # (dim/2,)
    angles = (x.float() * scale)[..., None] / freqs  # (..., dim/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (..., dim)


def span_sine_embedding(spans_cxw: Tensor, dim: int, scale: float | Tensor = 2 * math.pi) -> Tensor:
    """PE(S) of eq 1: sine embedding of c and of w, dim/2 channels each: [..., 2] -> [..., dim]."""
    return torch.cat(
        [
            sine_embedding(spans_cxw[..., 0], dim // 2, scale=scale),
            sine_embedding(spans_cxw[..., 1], dim // 2, scale=scale),
        ],
        dim=-1,
    )


def clip_centers(video_mask: Tensor) -> Tensor:
    """Normalised centre `(i + 0.5) / L_v` of each clip, using each sample's own length L_v.

    video_mask: [B, L] bool (True = valid clip) -> [B, L] float; padded positions hold values > 1.

    >>> clip_centers(torch.tensor([[True, True, False, False]]))
    tensor([[0.2500, 0.7500, 1.2500, 1.7500]])
    """
    lengths = video_mask.sum(dim=1, keepdim=True).clamp(min=1).to(torch.float32)  # (B, 1)
    idx = torch.arange(video_mask.shape[1], device=video_mask.device, dtype=torch.float32)  # (L,)
    return (idx[None, :] + 0.5) / lengths  # (B, L)


CLIP_TIMES = ("end", "center")


def clip_times(video_mask: Tensor, where: str = "center") -> Tensor:
    """Normalised time of each clip: its centre `(i + 0.5) / L_v` or its end `(i + 1) / L_v` (0-based i,
    i.e. eq 5's `i/L_v` for i = 1..L_v), using each sample's own L_v: [B, L] bool -> [B, L] float.

    >>> clip_times(torch.tensor([[True, True, False]]), "end")
    tensor([[0.5000, 1.0000, 1.5000]])
    """
    if where not in CLIP_TIMES:
        raise ValueError(f"clip time must be one of {CLIP_TIMES}, got {where!r}")
    centres = clip_centers(video_mask)  # (B, L)
    if where == "center":
        return centres
    return centres + 0.5 / video_mask.sum(dim=1, keepdim=True).clamp(min=1).to(centres.dtype)


def gaussian_mask(
    spans_cxw: Tensor, video_mask: Tensor, alpha: float, min_width: float = 1e-4, clip_time: str = "end"
) -> Tensor:
    """Eq 5: `mask[b, q, i] = exp(-alpha * (t_i - c)^2 / w^2)`, t_i the time of clip i (`clip_times`: eq 5's
    `i/L_v`, the clip's end, or its centre, `model.mask_clip_time`).

    spans_cxw: [B, Q, 2]; video_mask: [B, L] bool -> [B, Q, L]; padded clips get 0.

    Values below `GAUSSIAN_MASK_FLOOR` are set to 0. That changes no result: eq 6 multiplies logits by the
    mask, and a logit times 1e-30 moves the softmax input by < 1e-29, below float64's resolution of 1.
    It keeps the mask, the modulated logits and their gradients clear of subnormal floats (the tail of the
    Gaussian below 1.2e-38), which the CPU computes about 10x slower: with them one [256, 64, 40] x
    [256, 40, 75] backward matmul of the cross-attention took 20 ms instead of 2 ms.
    """
    t = clip_times(video_mask, clip_time)  # (B, L)
    c = spans_cxw[..., 0:1]  # (B, Q, 1)
    w = spans_cxw[..., 1:2].clamp(min=min_width)  # (B, Q, 1)
    mask = torch.exp(-alpha * (t[:, None, :] - c) ** 2 / w**2)  # (B, Q, L)
    mask = mask.masked_fill(mask < GAUSSIAN_MASK_FLOOR, 0.0)  # no subnormal floats downstream
    return mask * video_mask[:, None, :].to(mask.dtype)


def temporal_align_points(
    spans_cxw: Tensor, video_mask: Tensor, num_points: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Where Temporal Align reads: the two neighbouring clips of each point and the weight of the upper one.

    Points sit at `start + (k + 0.5) * w / N_s`, k = 0..N_s-1 (normalised time); a point at time p is
    read at fractional clip index `p * L_v - 0.5` (between neighbouring clip centres), clamped to the
    sample's valid clips [0, L_v - 1], so padding is never read. A point reads `(1 - frac) * f[lo] +
    frac * f[hi]`.

    Non-finite spans (a diverging run) are read at clip 0 instead of being cast to an out-of-range
    index: the NaN stays in the model's `pred_spans`, where the trainer's non-finite check names it.
    Sync-free on purpose (no `.item()` in the forward pass).

    spans_cxw: [B, Q, 2]; video_mask: [B, L] -> lo, hi [B, Q, N_s] long, frac [B, Q, N_s] of `dtype`.
    """
    lengths = video_mask.sum(dim=1).clamp(min=1).to(dtype)  # (B,)
    start = spans_cxw[..., 0] - 0.5 * spans_cxw[..., 1]  # (B, Q)
    k = torch.arange(num_points, device=spans_cxw.device, dtype=dtype)  # (N_s,)
    points = start[..., None] + (k + 0.5) * spans_cxw[..., 1:2] / num_points  # (B, Q, N_s)
    pos = points * lengths[:, None, None] - 0.5  # fractional clip index, (B, Q, N_s)
    pos = torch.nan_to_num(pos, nan=0.0)  # NaN would become index -2**63 below; +-inf are clamped
    pos = torch.minimum(pos.clamp(min=0), (lengths - 1)[:, None, None])  # (B, Q, N_s)
    lo = pos.floor()  # (B, Q, N_s)
    frac = pos - lo  # (B, Q, N_s)
    lo = lo.long()
    hi = torch.minimum(lo + 1, (lengths.long() - 1)[:, None, None])  # (B, Q, N_s)
    return lo, hi, frac


def temporal_align(features: Tensor, spans_cxw: Tensor, video_mask: Tensor, num_points: int) -> Tensor:
    """Temporal Align (G-TAD): sample `num_points` features inside each span by linear interpolation
    between neighbouring clips, at the points of `temporal_align_points`.

    features: [B, L, D]; spans_cxw: [B, Q, 2]; video_mask: [B, L] -> [B, Q, N_s, D]
    """
    bsz, _, dim = features.shape
    num_q = spans_cxw.shape[1]
    lo, hi, frac = temporal_align_points(spans_cxw, video_mask, num_points, features.dtype)
    frac = frac[..., None]  # (B, Q, N_s, 1)
    flat_lo = lo.reshape(bsz, -1, 1).expand(-1, -1, dim)  # (B, Q*N_s, D)
    flat_hi = hi.reshape(bsz, -1, 1).expand(-1, -1, dim)  # (B, Q*N_s, D)
    f_lo = features.gather(1, flat_lo).view(bsz, num_q, num_points, dim)  # (B, Q, N_s, D)
    f_hi = features.gather(1, flat_hi).view(bsz, num_q, num_points, dim)  # (B, Q, N_s, D)
    return f_lo * (1 - frac) + f_hi * frac
