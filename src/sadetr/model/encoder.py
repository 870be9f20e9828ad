"""Multi Modal Align Encoder of SA-DETR (paper 3.2, docs/readings.md "3.2").

Owns: the input projections, the fusion token g, the shared-parameter cross-attention fusion encoder,
the attention-pooled sentence token M_t, the clip-sentence cosines S, the global enhance block with the
highlight-detection (HD) head and its negative pass, and the local enhance block. It also exposes the
embeddings the criterion aligns (L_vtc, L_ctm) at the configured stage. The losses live in `losses.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sadetr.model.layers import FeedForward, input_projection, multihead_attention
from sadetr.model.span_ops import clip_centers, sine_embedding


class _PostNormAttentionLayer(nn.Module):
    """Attention then FFN, each with residual + LayerNorm (post-norm); subclasses choose q, k, v."""

    def __init__(self, dim: int, nheads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _attend(self, x: Tensor, q: Tensor, v: Tensor, key_mask: Tensor, keys_are_queries: bool) -> Tensor:
        """x (residual), q: [B, Lq, d]; v: [B, Lk, d]; keys q or v; key_mask: [B, Lk] bool (True = valid)."""
        attn = multihead_attention(
            self.attn, q, v, key_mask[:, None, None, :], keys_are_queries
        )  # (B, Lq, d)
        x = self.norm1(x + self.dropout1(attn))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class CrossAttentionLayer(_PostNormAttentionLayer):
    """One fusion layer (3.2): cross-attention then FFN.

    The positional embedding `query_pos` is added to the queries only ("we add positional embeddings
    to Q_v"); the keys/values are the other modality as is.
    """

    def forward(
        self, x: Tensor, memory: Tensor, memory_mask: Tensor, query_pos: Tensor | None = None
    ) -> Tensor:
        """x: [B, Lq, d]; memory: [B, Lk, d]; memory_mask: [B, Lk] bool (True = valid) -> [B, Lq, d]."""
        q = x if query_pos is None else x + query_pos
        return self._attend(x, q, memory, memory_mask, keys_are_queries=False)


class SelfAttentionLayer(_PostNormAttentionLayer):
    """Post-norm Transformer encoder layer with the positional embedding added to queries and keys."""

    def forward(self, x: Tensor, mask: Tensor, pos: Tensor) -> Tensor:
        """x, pos: [B, L, d]; mask: [B, L] bool (True = valid) -> [B, L, d]."""
        return self._attend(x, x + pos, x, mask, keys_are_queries=True)


class AttentionPooling(nn.Module):
    """Sentence token M_t (3.2): masked softmax of a learned score `<w, f_j>` over tokens, weighted sum."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: [B, L, d]; mask: [B, L] bool (True = valid) -> [B, d]."""
        logits = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, L)
        weights = logits.softmax(dim=-1)  # (B, L)
        return torch.einsum("bl,bld->bd", weights, x)


class SaliencyHead(nn.Module):
    """QD-DETR HD head (3.2): `s_i = <W1 m_i, W2 m_g> / sqrt(d)`, m_g the fusion-token row."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.clip_proj = nn.Linear(dim, dim)  # W1
        self.token_proj = nn.Linear(dim, dim)  # W2

    def forward(self, clips: Tensor, token: Tensor) -> Tensor:
        """clips: [B, L, d]; token: [B, d] -> [B, L]."""
        return torch.einsum("bld,bd->bl", self.clip_proj(clips), self.token_proj(token)) / math.sqrt(
            clips.shape[-1]
        )


class LocalEnhanceBlock(nn.Module):
    """Local enhance block (3.2): Conv1d k=1, 3, 1 (stride 1, same padding), ReLU between, residual + LN.

    A typo fixed (docs/readings.md "3.2"): "strides of 1, 3, and 1" are read as kernel sizes, since
    the output must still have L_v clip rows. Padded clips are zeroed before each conv so that the valid
    clips never read padding.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(dim, dim, k, stride=1, padding=k // 2) for k in (1, 3, 1)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: [B, L, d] clip rows; mask: [B, L] bool (True = valid) -> [B, L, d]."""
        keep = mask[:, None, :].to(x.dtype)  # (B, 1, L)
        h = x.transpose(1, 2)  # (B, d, L)
        for i, conv in enumerate(self.convs):
            h = conv(h * keep)  # (B, d, L)
            if i < len(self.convs) - 1:
                h = F.relu(h)
        return self.norm(x + h.transpose(1, 2))  # (B, L, d)


@dataclass
class EncoderOutput:
    """What the encoder hands to the query initializer, the decoder and the output dict."""

    memory: Tensor  # M_v [B, Lv, d] (fusion feature, clips)
    token: Tensor  # M_g [B, d] (fusion token)
    sentence: Tensor  # M_t [B, d]
    clip_text_sim: Tensor  # S [B, Lv], cosine(F̂_v without g, M_t)
    saliency_scores: Tensor  # [B, Lv]
    saliency_scores_neg: Tensor | None  # [B, Lv]
    vtc: dict[str, Tensor] | None
    ctm: dict[str, Tensor] | None


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid rows: x [B, L, d], mask [B, L] bool -> [B, d]."""
    w = mask.to(x.dtype)[..., None]  # (B, L, 1)
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


class MultiModalAlignEncoder(nn.Module):
    """Input projections, shared fusion encoder, sentence token, global/local enhance blocks (3.2)."""

    def __init__(
        self,
        video_dim: int,
        text_dim: int,
        hidden_dim: int = 256,
        nheads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        input_dropout: float = 0.5,
        n_input_proj: int = 2,
        n_fusion_layers: int = 2,
        n_global_layers: int = 2,
        use_local_enhance: bool = True,
        use_negative_pass: bool = True,
        use_vtc: bool = True,
        vtc_stage: str = "before",
        use_ctm: bool = True,
        ctm_stage: str = "after",
        vtc_init_tau: float = 0.07,
    ) -> None:
        super().__init__()
        for name, stage in (("vtc_stage", vtc_stage), ("ctm_stage", ctm_stage)):
            if stage not in ("before", "after"):
                raise ValueError(f"{name} must be 'before' or 'after', got {stage!r}")
        self.hidden_dim = hidden_dim
        self.video_proj = input_projection(video_dim, hidden_dim, n_input_proj, input_dropout)
        self.text_proj = input_projection(text_dim, hidden_dim, n_input_proj, input_dropout)
        self.fusion_token = nn.Parameter(torch.randn(hidden_dim) * 0.02)  # g
        self.fusion_token_pos = nn.Parameter(torch.randn(hidden_dim) * 0.02)  # learned position of g
        # One set of layer weights serves both directions (the "shared parameters" of 3.2).
        self.fusion_layers = nn.ModuleList(
            [CrossAttentionLayer(hidden_dim, nheads, ffn_dim, dropout) for _ in range(n_fusion_layers)]
        )
        self.sentence_pool = AttentionPooling(hidden_dim)
        self.global_layers = nn.ModuleList(
            [SelfAttentionLayer(hidden_dim, nheads, ffn_dim, dropout) for _ in range(n_global_layers)]
        )
        self.saliency_head = SaliencyHead(hidden_dim)
        self.local_enhance = LocalEnhanceBlock(hidden_dim) if use_local_enhance else None
        self.use_negative_pass = use_negative_pass
        self.use_vtc, self.vtc_stage = use_vtc, vtc_stage
        self.use_ctm, self.ctm_stage = use_ctm, ctm_stage
        # log(1/tau) of L_vtc, learnable, tau initialised to 0.07 (CLIP).
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / vtc_init_tau))) if use_vtc else None

    def video_positions(self, video_mask: Tensor) -> Tensor:
        """Sine embedding of clip centres, prefixed by g's learned position: [B, Lv] -> [B, Lv+1, d]."""
        pos = sine_embedding(clip_centers(video_mask), self.hidden_dim)  # (B, Lv, d)
        g_pos = self.fusion_token_pos.expand(pos.shape[0], 1, -1)  # (B, 1, d)
        return torch.cat([g_pos, pos.to(g_pos.dtype)], dim=1)  # (B, Lv+1, d)

    def fuse_video(self, video: Tensor, vpos: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        """Video-queries-text direction: [g; F_v] [B, Lv+1, d] -> F̂_v [B, Lv+1, d]."""
        x = video
        for layer in self.fusion_layers:
            x = layer(x, text, text_mask, query_pos=vpos)
        return x

    def fuse_text(self, text: Tensor, video: Tensor, video_mask_g: Tensor) -> Tensor:
        """Text-queries-video direction (same layers): F_t [B, Lt, d] -> F̂_t [B, Lt, d]."""
        x = text
        for layer in self.fusion_layers:
            x = layer(x, video, video_mask_g)
        return x

    def global_enhance(self, fused: Tensor, mask_g: Tensor, vpos: Tensor) -> tuple[Tensor, Tensor]:
        """Global enhance block + HD head: F̂_v [B, Lv+1, d] -> (M̂_v [B, Lv+1, d], scores [B, Lv])."""
        x = fused
        for layer in self.global_layers:
            x = layer(x, mask_g, vpos)
        return x, self.saliency_head(x[:, 1:], x[:, 0])

    def embed_video(self, video_feat: Tensor, video_mask: Tensor) -> Tensor:
        """L_vtc's video embedding before fusion (`vtc_stage=before`): the masked mean of the projected
        clips F_v. video_feat [B, Lv, Dv], video_mask [B, Lv] bool -> [B, d] (not normalised)."""
        return masked_mean(self.video_proj(video_feat), video_mask)

    def embed_text(self, text_feat: Tensor, text_mask: Tensor) -> Tensor:
        """L_vtc's query embedding before fusion: the masked mean of the projected tokens F_t.
        text_feat [B, Lt, Dt], text_mask [B, Lt] bool -> [B, d] (not normalised)."""
        return masked_mean(self.text_proj(text_feat), text_mask)

    def forward(
        self, video_feat: Tensor, video_mask: Tensor, text_feat: Tensor, text_mask: Tensor
    ) -> EncoderOutput:
        """video_feat [B, Lv, Dv], video_mask [B, Lv] bool, text_feat [B, Lt, Dt], text_mask [B, Lt] bool."""
        bsz = video_feat.shape[0]
        f_v = self.video_proj(video_feat)  # (B, Lv, d)
        f_t = self.text_proj(text_feat)  # (B, Lt, d)
        g = self.fusion_token.expand(bsz, 1, -1)  # (B, 1, d)
        video = torch.cat([g, f_v], dim=1)  # (B, Lv+1, d)
        mask_g = torch.cat([video_mask.new_ones(bsz, 1), video_mask], dim=1)  # (B, Lv+1)
        vpos = self.video_positions(video_mask)  # (B, Lv+1, d)

        fused_t = self.fuse_text(f_t, video, mask_g)  # F̂_t (B, Lt, d)
        sentence = self.sentence_pool(fused_t, text_mask)  # M_t (B, d)
        saliency_neg = None
        if self.use_negative_pass and self.training and bsz > 1:
            # Video b with the query of sample (b + 1) % B: roll(-1) puts row b+1 at row b. The negative
            # pass runs in the same batched call as the positive one: rows [B, 2B) are the negatives.
            texts = torch.cat([f_t, f_t.roll(-1, dims=0)])  # (2B, Lt, d)
            text_masks = torch.cat([text_mask, text_mask.roll(-1, dims=0)])  # (2B, Lt)
            fused_2 = self.fuse_video(video.repeat(2, 1, 1), vpos.repeat(2, 1, 1), texts, text_masks)
            enhanced_2, saliency_2 = self.global_enhance(fused_2, mask_g.repeat(2, 1), vpos.repeat(2, 1, 1))
            fused_v, enhanced = fused_2[:bsz], enhanced_2[:bsz]  # F̂_v, M̂_v (B, Lv+1, d)
            saliency, saliency_neg = saliency_2.split(bsz)  # (B, Lv) each
        else:
            fused_v = self.fuse_video(video, vpos, f_t, text_mask)  # F̂_v (B, Lv+1, d)
            enhanced, saliency = self.global_enhance(fused_v, mask_g, vpos)  # M̂_v (B, Lv+1, d), (B, Lv)
        clip_text_sim = F.cosine_similarity(fused_v[:, 1:], sentence[:, None, :], dim=-1)  # S (B, Lv)

        clips = enhanced[:, 1:]  # (B, Lv, d)
        memory = self.local_enhance(clips, video_mask) if self.local_enhance is not None else clips

        vtc = None
        if self.use_vtc:
            assert self.logit_scale is not None  # created when use_vtc
            v_src, t_src = (f_v, f_t) if self.vtc_stage == "before" else (fused_v[:, 1:], fused_t)
            vtc = {
                "video_emb": masked_mean(v_src, video_mask),  # (B, d)
                "text_emb": masked_mean(t_src, text_mask),  # (B, d)
                "logit_scale": self.logit_scale,
            }
        ctm = None
        if self.use_ctm:
            if self.ctm_stage == "after":
                ctm = {"clip_emb": fused_v[:, 1:], "sent_emb": sentence}
            else:
                ctm = {"clip_emb": f_v, "sent_emb": self.sentence_pool(f_t, text_mask)}
        return EncoderOutput(
            memory=memory,
            token=enhanced[:, 0],
            sentence=sentence,
            clip_text_sim=clip_text_sim,
            saliency_scores=saliency,
            saliency_scores_neg=saliency_neg,
            vtc=vtc,
            ctm=ctm,
        )
