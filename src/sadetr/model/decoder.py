"""Span Aware Refine Decoder of SA-DETR (paper 3.4, eq 1-6, docs/readings.md "3.4").

Owns: the Span Based Enhance Block (eq 2-3), the span-aware cross-attention with concatenated content
and position and the Gaussian modulation (eq 4-6), the Span Aware Query Refiner layer (eq 1 + the
above + FFN), and the shared prediction head (anchor offsets and quality). Direct and noise query groups
run through the same layers as one sequence; the self-attention mask keeps them apart.

Readings (switches of `ModelConfig`, docs/readings.md; the paper's form is each one's default):
`self_attn_pos` (eq 1), `gate_scale` (eq 3), `position_mode` (eq 4's P_Mv), `mask_clip_time` (eq 5),
`gaussian_mode` and `cross_residual` (eq 6), `anchor_grad` (3.4's anchor update).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sadetr.model.layers import MLP, FeedForward, multihead_attention
from sadetr.model.span_ops import (
    clip_times,
    gaussian_mask,
    inverse_sigmoid,
    sine_embedding,
    span_sine_embedding,
    temporal_align_points,
)

SELF_ATTN_POSITIONS = ("after_proj", "before_proj")
GAUSSIAN_MODES = ("logits", "probs")
POSITION_MODES = ("raw", "projected")
CROSS_RESIDUALS = ("query", "input")
# Gradient paths of the anchors between layers (3.4): none (S_d detached) | first (DAB-DETR) | all.
ANCHOR_GRADS = ("none", "first", "all")


def gaussian_log_mask(
    spans_cxw: Tensor, video_mask: Tensor, alpha: float, min_width: float = 1e-4, clip_time: str = "end"
) -> Tensor:
    """log of eq 5's mask, `−alpha (t_i − c)² / w²`, computed in log space (no underflow to −inf):
    spans [B, Q, 2] cxw, video_mask [B, L] -> [B, Q, L] (padded clips are masked by the attention)."""
    t = clip_times(video_mask, clip_time)  # (B, L)
    c = spans_cxw[..., 0:1]  # (B, Q, 1)
    w = spans_cxw[..., 1:2].clamp(min=min_width)  # (B, Q, 1)
    return -alpha * (t[:, None, :] - c) ** 2 / w**2  # (B, Q, L)


def clip_position_embedding(video_mask: Tensor, dim: int, mode: str = "raw") -> Tensor:
    """P_Mv = PE(M_v) of eq 4 before any projection: [B, L] -> [B, L, dim].

    raw: `sine_embedding(t_i, d)` of the clip centres (the paper's PE). projected: each clip as the span
    (t_i, 1/L_v) through PE(S)'s own layout (`span_sine_embedding`), so that the clips' centre channels
    match the spans' centre channels; the cross-attention then projects it (`position_mode`).
    """
    centres = clip_times(video_mask, "center")  # (B, L)
    if mode == "raw":
        return sine_embedding(centres, dim)
    widths = 1.0 / video_mask.sum(dim=1, keepdim=True).clamp(min=1).to(centres.dtype)  # (B, 1)
    return span_sine_embedding(torch.stack([centres, widths.expand_as(centres)], dim=-1), dim)


class SpanBasedEnhanceBlock(nn.Module):
    """Eq 2-3: enhance each content embedding with the text-weighted clips sampled inside its span.

    gate_scale (`model.gate_scale`): eq 3's gate as written, `sigmoid(⟨Ĉ, M̂_s⟩)` (false), or divided by
    √d (true, the `tuned` recipe: the unscaled 256-d dot product saturates within 3 epochs).
    """

    def __init__(self, dim: int, num_points: int, gate_scale: bool = False) -> None:
        super().__init__()
        self.num_points = num_points  # N_s
        self.gate_div = math.sqrt(dim) if gate_scale else 1.0
        self.video_proj = nn.Linear(dim, dim)  # W_v
        self.text_proj = nn.Linear(dim, dim)  # W_t
        self.fuse_proj = nn.Linear(dim, dim)  # W_f

    def gate(self, content: Tensor, pooled: Tensor) -> Tensor:
        """Eq 3's ĝ = sigmoid(diag(Ĉ M̂_sᵀ)) (/√d with gate_scale): Ĉ, M̂_s [B, Q, d] -> [B, Q, 1]."""
        dot = (content * pooled).sum(-1, keepdim=True)  # (B, Q, 1)
        return torch.sigmoid(dot / self.gate_div if self.gate_div != 1.0 else dot)

    def forward(
        self, content: Tensor, spans: Tensor, memory: Tensor, video_mask: Tensor, sentence: Tensor
    ) -> Tensor:
        """Ĉ [B, Q, d], spans [B, Q, 2] cxw, M_v [B, L, d], M_t [B, d] -> C̄ [B, Q, d].

        Eq 2 without materialising M_s [B, Q, N_s, d]: a sampled point is `(1 - f) m_lo + f m_hi` (Temporal
        Align), so its score `⟨W_v M_s, W_t M_t⟩` interpolates the per-clip scores `⟨W_v m_l, W_t M_t⟩`
        [B, L], and M̂_s = mean_k s_k M_s,k is a weighted sum of clips, `P @ M_v` with P [B, Q, L].
        The same math as `span_enhance_reference` (tests/test_decoder_fast_path.py) in fewer FLOPs.
        """
        lo, hi, frac = temporal_align_points(spans, video_mask, self.num_points, memory.dtype)  # (B, Q, N_s)
        text = self.text_proj(sentence)  # W_t M_t (B, d)
        clip_scores = (
            torch.einsum("bld,bd->bl", memory, text @ self.video_proj.weight)
            + (text @ self.video_proj.bias)[:, None]
        )  # ⟨W_v m_l, W_t M_t⟩ (B, L)
        bsz, num_q, _ = lo.shape
        s_lo = clip_scores.gather(1, lo.view(bsz, -1)).view_as(frac)  # (B, Q, N_s)
        s_hi = clip_scores.gather(1, hi.view(bsz, -1)).view_as(frac)  # (B, Q, N_s)
        scores = (s_lo * (1 - frac) + s_hi * frac) / math.sqrt(content.shape[-1])  # s, eq 2, no softmax
        # P[b, q, l]: the weight of clip l in M̂_s = mean over the N_s points of s_k times their interpolation
        w_lo, w_hi = scores * (1 - frac) / self.num_points, scores * frac / self.num_points  # (B, Q, N_s)
        weights = w_lo.new_zeros(bsz, num_q, memory.shape[1])  # (B, Q, L)
        weights = weights.scatter_add(2, lo, w_lo).scatter_add(2, hi, w_hi)
        pooled = torch.bmm(weights.to(memory.dtype), memory)  # M̂_s (B, Q, d), eq 2
        gate = self.gate(content, pooled)  # ĝ (B, Q, 1), eq 3
        return self.fuse_proj((pooled + content) * gate) + content  # C̄, eq 3


class SpanAwareCrossAttention(nn.Module):
    """Eq 4-6: per-head logits of `[W_q C̄ ‖ P_S] · [W_k M_v ‖ P_Mv]` / sqrt(2 d_head), times the mask.

    gaussian_mode (`model.gaussian_mode`): `logits` multiplies the logits by the mask (eq 6 as written);
    `probs` adds log(mask) to the logits, i.e. `softmax(l + log m) = p ⊙ m / Σ p ⊙ m` (CNM, SMCA-DETR).
    position_proj: P_Mv goes through a learned linear projection `W_p P_Mv` (Conditional/DAB-DETR).
    """

    def __init__(
        self,
        dim: int,
        nheads: int,
        dropout: float,
        gaussian_mode: str = "logits",
        position_proj: bool = False,
    ) -> None:
        super().__init__()
        if dim % nheads:
            raise ValueError(f"hidden_dim {dim} is not divisible by nheads {nheads}")
        if gaussian_mode not in GAUSSIAN_MODES:
            raise ValueError(f"gaussian_mode must be one of {GAUSSIAN_MODES}, got {gaussian_mode!r}")
        self.gaussian_mode = gaussian_mode
        self.pos_proj = nn.Linear(dim, dim) if position_proj else None  # W_p
        self.nheads = nheads
        self.head_dim = dim // nheads
        self.q_proj = nn.Linear(dim, dim)  # W_q
        self.k_proj = nn.Linear(dim, dim)  # W_k
        self.v_proj = nn.Linear(dim, dim)  # W_v of the attention
        self.out_proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, N, d] -> [B, h, N, d_head]."""
        bsz, n, _ = x.shape
        return x.view(bsz, n, self.nheads, self.head_dim).transpose(1, 2)

    def attention_weights(
        self,
        query: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        video_mask: Tensor,
        modulation: Tensor | None,
    ) -> Tensor:
        """Eq 4 + eq 6 softmax on the projected query Q_C̄ = W_q C̄ [B, Q, d]: -> [B, h, Q, L]; padded clips
        get exactly 0. modulation [B, Q, L]: the mask (gaussian_mode logits) or its log (probs), or None."""
        if self.pos_proj is not None:
            memory_pos = self.pos_proj(memory_pos)  # W_p P_Mv (B, L, d)
        q = torch.cat([self._heads(query), self._heads(query_pos)], dim=-1)  # (B, h, Q, 2dh)
        k = torch.cat([self._heads(self.k_proj(memory)), self._heads(memory_pos)], dim=-1)  # (B, h, L, 2dh)
        # Eq 4 writes sqrt(2d); per head the concatenated vectors have 2 d_head dims (docs/readings.md).
        logits = q @ k.transpose(-1, -2) / math.sqrt(2 * self.head_dim)  # map, eq 4, (B, h, Q, L)
        if modulation is not None and self.gaussian_mode == "probs":
            # CNM's reading of eq 6 (when chosen): probabilities times mask, renormalised.
            logits = logits + modulation[:, None]  # (B, h, Q, L), modulation = log(mask)
        elif modulation is not None:
            # Eq 6 as written: the logits (not the probabilities) are multiplied by the Gaussian mask.
            logits = logits * modulation[:, None]  # (B, h, Q, L)
        logits = logits.masked_fill(~video_mask[:, None, None, :], float("-inf"))
        return logits.softmax(dim=-1)

    def forward(
        self,
        content: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        video_mask: Tensor,
        modulation: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """content C̄, query_pos P_S [B, Q, d]; memory M_v, memory_pos P_Mv [B, L, d] ->
        (softmax(map ⊙ mask) V_Mv [B, Q, d], Q_C̄ = W_q C̄ [B, Q, d] for eq 6's residual)."""
        query = self.q_proj(content)  # Q_C̄ (B, Q, d)
        attn = self.attention_weights(query, query_pos, memory, memory_pos, video_mask, modulation)
        v = self._heads(self.v_proj(memory))  # (B, h, L, dh)
        out = self.attn_drop(attn) @ v  # (B, h, Q, dh)
        bsz, _, num_q, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(bsz, num_q, -1)), query  # (B, Q, d) each


class SpanAwareQueryRefiner(nn.Module):
    """One decoder layer: self-attention (eq 1), Span Based Enhance Block (eq 2-3), eq 4-6, FFN.

    self_attn_pos (eq 1): `after_proj` adds P_S to the projected query and key, `(W_q C + P_S)(W_k C + P_S)ᵀ`,
    as written; `before_proj` projects the sum, `W_q (C + P_S)` (DETR/DAB-DETR). cross_residual (eq 6):
    `query` adds Q_C̄ = W_q C̄, as written; `input` adds C̄ (DETR). mask_clip_time: eq 5's clip time.
    """

    def __init__(
        self,
        dim: int,
        nheads: int,
        ffn_dim: int,
        dropout: float,
        use_span_enhance: bool,
        use_gaussian_mask: bool,
        gaussian_alpha: float,
        num_align_points: int,
        gaussian_mode: str = "logits",
        position_proj: bool = False,
        gate_scale: bool = False,
        self_attn_pos: str = "after_proj",
        mask_clip_time: str = "end",
        cross_residual: str = "query",
    ) -> None:
        super().__init__()
        if self_attn_pos not in SELF_ATTN_POSITIONS:
            raise ValueError(f"self_attn_pos must be one of {SELF_ATTN_POSITIONS}, got {self_attn_pos!r}")
        if cross_residual not in CROSS_RESIDUALS:
            raise ValueError(f"cross_residual must be one of {CROSS_RESIDUALS}, got {cross_residual!r}")
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.span_enhance = (
            SpanBasedEnhanceBlock(dim, num_align_points, gate_scale) if use_span_enhance else None
        )
        self.cross_attn = SpanAwareCrossAttention(dim, nheads, dropout, gaussian_mode, position_proj)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.use_gaussian_mask = use_gaussian_mask
        self.gaussian_alpha = gaussian_alpha
        self.self_attn_pos = self_attn_pos
        self.mask_clip_time = mask_clip_time
        self.cross_residual = cross_residual

    def forward(
        self,
        content: Tensor,
        spans: Tensor,
        span_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        video_mask: Tensor,
        sentence: Tensor,
        self_attn_mask: Tensor | None = None,
    ) -> Tensor:
        """content C^i [B, Q, d]; spans S^i [B, Q, 2]; span_pos P_S [B, Q, d] -> C^{i+1} [B, Q, d].

        self_attn_mask: [B, Q, Q] bool, True = blocked (the denoiser's mask), or None.
        """
        # (B, 1, Q, Q), True = attend, the same for every head; None: every query sees every query
        attend = None if self_attn_mask is None else ~self_attn_mask[:, None]
        # (B, Q, d), laid out [Q, B, d] as nn.MultiheadAttention's output: dropout1 draws the same mask
        if self.self_attn_pos == "after_proj":  # eq 1: (W_q C + P_S)(W_k C + P_S)ᵀ, V = W_v C
            sa = multihead_attention(
                self.self_attn, content, content, attend, True, query_major=True, pos_after_proj=span_pos
            )
        else:  # W_q (C + P_S), W_k (C + P_S), V = W_v C
            qk = content + span_pos  # (B, Q, d)
            sa = multihead_attention(self.self_attn, qk, content, attend, True, query_major=True)
        content = self.norm1(content + self.dropout1(sa))  # Ĉ, eq 1
        if self.span_enhance is not None:
            content = self.span_enhance(content, spans, memory, video_mask, sentence)  # C̄, eq 2-3
        modulation = None
        if self.use_gaussian_mask:  # eq 5 (B, Q, L), or its log for gaussian_mode probs
            make = gaussian_log_mask if self.cross_attn.gaussian_mode == "probs" else gaussian_mask
            modulation = make(spans, video_mask, self.gaussian_alpha, clip_time=self.mask_clip_time)
        ca, query = self.cross_attn(content, span_pos, memory, memory_pos, video_mask, modulation)
        residual = query if self.cross_residual == "query" else content  # eq 6's "+ Q_C̄", or C̄
        content = self.norm2(residual + self.dropout2(ca))  # C̃, eq 6
        return self.norm3(content + self.dropout3(self.ffn(content)))  # C^{i+1} = FFN(C̃) + C̃


class SpanAwareRefineDecoder(nn.Module):
    """Stack of refiner layers with the shared prediction head (3.4, DAB-DETR anchor update)."""

    def __init__(
        self,
        dim: int = 256,
        nheads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        num_layers: int = 2,
        use_span_enhance: bool = True,
        use_gaussian_mask: bool = True,
        gaussian_alpha: float = 2.0,
        num_align_points: int = 10,
        gaussian_mode: str = "logits",
        position_mode: str = "raw",
        gate_scale: bool = False,
        anchor_grad: str = "first",
        self_attn_pos: str = "after_proj",
        mask_clip_time: str = "end",
        cross_residual: str = "query",
    ) -> None:
        super().__init__()
        if anchor_grad not in ANCHOR_GRADS:
            raise ValueError(f"anchor_grad must be one of {ANCHOR_GRADS}, got {anchor_grad!r}")
        if position_mode not in POSITION_MODES:
            raise ValueError(f"position_mode must be one of {POSITION_MODES}, got {position_mode!r}")
        self.dim = dim
        self.position_mode = position_mode
        self.anchor_grad = anchor_grad
        self.layers = nn.ModuleList(
            [
                SpanAwareQueryRefiner(
                    dim,
                    nheads,
                    ffn_dim,
                    dropout,
                    use_span_enhance,
                    use_gaussian_mask,
                    gaussian_alpha,
                    num_align_points,
                    gaussian_mode,
                    position_mode == "projected",
                    gate_scale,
                    self_attn_pos,
                    mask_clip_time,
                    cross_residual,
                )
                for _ in range(num_layers)
            ]
        )
        # MLP_2 of eq 1, shared by the layers as DAB-DETR's ref_point_head.
        self.span_pos_mlp = MLP(dim, dim, dim, 2)
        self.span_head = MLP(dim, dim, 2, 3)  # MLP_3: anchor offset in logit space
        self.quality_head = nn.Linear(dim, 1)  # quality q (BAM-DETR)
        nn.init.zeros_(self.span_head.output_layer.weight)
        nn.init.zeros_(self.span_head.output_layer.bias)

    def forward(
        self,
        content: Tensor,
        spans: Tensor,
        memory: Tensor,
        video_mask: Tensor,
        sentence: Tensor,
        self_attn_mask: Tensor | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """content [B, Q, d], initial anchors [B, Q, 2] cxw -> per layer (spans [B, Q, 2], quality [B, Q])."""
        memory_pos = clip_position_embedding(video_mask, self.dim, self.position_mode)  # P_Mv (B, L, d)
        memory_pos = memory_pos.to(memory.dtype)
        if self.anchor_grad == "none":
            spans = spans.detach()  # DINO's two-stage proposals: S_d learns from L_init alone
        outputs = []
        for layer in self.layers:
            span_pe = span_sine_embedding(spans, self.dim).to(content.dtype)  # PE(S) (B, Q, d)
            span_pos = self.span_pos_mlp(span_pe)  # P_S = MLP(PE(S)), eq 1
            content = layer(
                content, spans, span_pos, memory, memory_pos, video_mask, sentence, self_attn_mask
            )
            # S^{i+1} = S^i + Δ with the offset added in logit space (DAB-DETR; docs/readings.md "3.4").
            new_spans = torch.sigmoid(inverse_sigmoid(spans) + self.span_head(content))  # S^{i+1}
            quality = torch.sigmoid(self.quality_head(content)).squeeze(-1)  # Q_S = sigmoid(Linear(C)) (B, Q)
            outputs.append((new_spans, quality))
            # first (DAB-DETR): the anchor fed to the next layer is detached, the initial one is not, so that
            # learnable or instance anchors get gradients through the first layer; all: no stop-gradient.
            spans = new_spans if self.anchor_grad == "all" else new_spans.detach()
        return outputs
