"""Moment-DETR baseline (Lei et al., 2021) inside the sadetr framework.

Architecture of the public implementation (jayleicn/moment_detr), rewritten: two input MLPs, a DETR
transformer (post-norm encoder over the concatenated video+text tokens, decoder with learnable query
embeddings and zero content), a 2-way foreground/background head, a 3-layer span MLP and a linear
saliency head on the video memory. At the QVHighlights SF+C setting (2818-d video, 512-d text,
d=256, 8 heads, FFN 1024, 2+2 layers, 10 queries) it has exactly 4,823,305 trainable parameters.

Also owns the building blocks shared with `sadetr.model.baselines.qd_detr` (which extends this code base, as
QD-DETR's public code extends Moment-DETR's): `BaselineInputs`, `TrainablePositionalEncoding`,
`clip_position_embedding` and the post-norm `EncoderLayer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sadetr.model.config import ModelConfig
from sadetr.model.layers import MLP, input_projection
from sadetr.model.span_ops import sine_embedding


class TrainablePositionalEncoding(nn.Module):
    """Learned text positions: `Dropout(LayerNorm(x + E[pos]))`; built (and counted) even when unused."""

    def __init__(self, max_len: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.position_embeddings = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        positions = torch.arange(x.shape[1], device=x.device)  # (L,)
        return self.dropout(self.norm(x + self.position_embeddings(positions)[None]))  # (B, L, d)


def clip_position_embedding(video_mask: Tensor, dim: int) -> Tensor:
    """Normalised sine position of each clip, `PE((i + 1) / L_v)` (DETR's 1-D `PositionEmbeddingSine`).

    video_mask: [B, L] bool -> [B, L, dim]; padded clips get arbitrary (masked) values.
    """
    cum = video_mask.float().cumsum(dim=1)  # (B, L): 1..L_v on valid clips
    lengths = cum[:, -1:].clamp(min=1.0)  # (B, 1)
    return sine_embedding(cum / lengths, dim)  # (B, L, dim)


class BaselineInputs(nn.Module):
    """Input side shared by Moment-DETR and QD-DETR: the two input MLPs, sine clip positions and the
    learned text positions (built, and counted, even when `use_txt_pos` is off, as the public code)."""

    def __init__(
        self,
        video_dim: int,
        text_dim: int,
        hidden_dim: int,
        n_input_proj: int,
        input_dropout: float,
        max_text_len: int,
        use_txt_pos: bool,
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.use_txt_pos = use_txt_pos
        self.input_vid_proj = input_projection(video_dim, hidden_dim, n_input_proj, input_dropout)
        self.input_txt_proj = input_projection(text_dim, hidden_dim, n_input_proj, input_dropout)
        self.txt_position_embed = TrainablePositionalEncoding(max_text_len, hidden_dim, input_dropout)

    def forward(
        self, video_feat: Tensor, video_mask: Tensor, text_feat: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> projected video [B, Lv, d], text [B, Lt, d], their positions [B, Lv, d], [B, Lt, d]."""
        vid = self.input_vid_proj(video_feat)  # (B, Lv, d)
        txt = self.input_txt_proj(text_feat)  # (B, Lt, d)
        pos_vid = clip_position_embedding(video_mask, self.hidden_dim)  # (B, Lv, d)
        pos_txt = self.txt_position_embed(txt) if self.use_txt_pos else torch.zeros_like(txt)  # (B, Lt, d)
        return vid, txt, pos_vid, pos_txt


def _activation(name: str) -> nn.Module:
    """FFN activation: Moment-DETR uses ReLU; QD-DETR's transformer uses PReLU (one parameter per layer)."""
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU()
    raise ValueError(f"unknown activation {name!r} (relu | prelu)")


class EncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer; positions added to queries and keys, not values (DETR)."""

    def __init__(self, dim: int, nheads: int, ffn_dim: int, dropout: float, activation: str = "relu") -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.activation = _activation(activation)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor, pad_mask: Tensor, pos: Tensor) -> Tensor:
        """src, pos: [B, L, d]; pad_mask: [B, L] True = padding -> [B, L, d]."""
        q = k = src + pos
        attn = self.self_attn(q, k, src, key_padding_mask=pad_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attention, cross-attention to the memory, FFN."""

    def __init__(self, dim: int, nheads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self, tgt: Tensor, query_pos: Tensor, memory: Tensor, memory_pad: Tensor, pos: Tensor
    ) -> Tensor:
        """tgt, query_pos: [B, Nq, d]; memory, pos: [B, L, d]; memory_pad: [B, L] -> [B, Nq, d]."""
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attn = self.cross_attn(
            tgt + query_pos, memory + pos, memory, key_padding_mask=memory_pad, need_weights=False
        )[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


def _xavier_init(module: nn.Module) -> None:
    """Xavier-uniform init of every matrix of `module` (the public transformers' `_reset_parameters`)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class MomentDETR(nn.Module):
    """Moment-DETR: joint video+text encoder, DETR decoder, class/span/saliency heads.

    Forward follows the sadetr model contract (docs/CONTRACTS.md). Extra keys: `pred_logits`
    [B, Nq, 2] (index 0 foreground, 1 background, as the public code) and `pred_quality` = the
    foreground probability, by which `to_submission` ranks the spans.
    """

    def __init__(
        self,
        video_dim: int,
        text_dim: int,
        hidden_dim: int = 256,
        nheads: int = 8,
        ffn_dim: int = 1024,
        n_enc_layers: int = 2,
        n_dec_layers: int = 2,
        num_queries: int = 10,
        dropout: float = 0.1,
        input_dropout: float = 0.5,
        n_input_proj: int = 2,
        max_text_len: int = 32,
        use_txt_pos: bool = False,
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.inputs = BaselineInputs(
            video_dim, text_dim, hidden_dim, n_input_proj, input_dropout, max_text_len, use_txt_pos
        )
        self.encoder = nn.ModuleList(
            EncoderLayer(hidden_dim, nheads, ffn_dim, dropout) for _ in range(n_enc_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(hidden_dim, nheads, ffn_dim, dropout) for _ in range(n_dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        _xavier_init(self.encoder)
        _xavier_init(self.decoder)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, 2)  # 0 foreground, 1 background
        self.span_embed = MLP(hidden_dim, hidden_dim, 2, 3)
        self.saliency_proj = nn.Linear(hidden_dim, 1)

    def forward(
        self,
        video_feat: Tensor,
        video_mask: Tensor,
        text_feat: Tensor,
        text_mask: Tensor,
        targets: list[Tensor] | None = None,
    ) -> dict:
        """video_feat [B, Lv, Dv], video_mask [B, Lv], text_feat [B, Lt, Dt], text_mask [B, Lt] -> dict."""
        video_mask = video_mask.bool()
        text_mask = text_mask.bool()
        vid, txt, pos_vid, pos_txt = self.inputs(video_feat, video_mask, text_feat)
        src = torch.cat([vid, txt], dim=1)  # (B, Lv+Lt, d)
        pos = torch.cat([pos_vid, pos_txt], dim=1)  # (B, Lv+Lt, d)
        pad = ~torch.cat([video_mask, text_mask], dim=1)  # (B, Lv+Lt)
        memory = src
        for layer in self.encoder:
            memory = layer(memory, pad, pos)  # (B, Lv+Lt, d)

        bsz = src.shape[0]
        query_pos = self.query_embed.weight[None].expand(bsz, -1, -1)  # (B, Nq, d)
        tgt = torch.zeros_like(query_pos)  # (B, Nq, d)
        hs = []
        for layer in self.decoder:
            tgt = layer(tgt, query_pos, memory, pad, pos)
            hs.append(self.decoder_norm(tgt))
        hs_t = torch.stack(hs)  # (n_dec, B, Nq, d)

        logits = self.class_embed(hs_t)  # (n_dec, B, Nq, 2)
        spans = self.span_embed(hs_t).sigmoid()  # (n_dec, B, Nq, 2)
        quality = logits.softmax(-1)[..., 0]  # (n_dec, B, Nq) foreground probability
        vid_mem = memory[:, : vid.shape[1]]  # (B, Lv, d)
        saliency = self.saliency_proj(vid_mem).squeeze(-1)  # (B, Lv)
        return _baseline_output(logits, spans, quality, saliency, None, video_mask)


def _baseline_output(
    logits: Tensor,
    spans: Tensor,
    quality: Tensor,
    saliency: Tensor,
    saliency_neg: Tensor | None,
    video_mask: Tensor,
    init_spans: Tensor | None = None,
) -> dict:
    """Assemble the contract's output dict from per-layer stacks [n_dec, B, Nq, ...] (last = final)."""
    return {
        "pred_logits": logits[-1],
        "pred_spans": spans[-1],
        "pred_quality": quality[-1],
        "aux_outputs": [
            {"pred_logits": a, "pred_spans": b, "pred_quality": c}
            for a, b, c in zip(logits[:-1], spans[:-1], quality[:-1])
        ],
        "init_spans": init_spans,
        "dn_outputs": None,
        "dn_meta": None,
        "saliency_scores": saliency,
        "saliency_scores_neg": saliency_neg,
        "video_mask": video_mask,
        "vtc": None,
        "ctm": None,
    }


def build_moment_detr(cfg: ModelConfig) -> MomentDETR:
    """Moment-DETR from the config: `n_global_layers` encoder layers, `n_dec_layers` decoder layers."""
    return MomentDETR(
        video_dim=cfg.video_dim,
        text_dim=cfg.text_dim,
        hidden_dim=cfg.hidden_dim,
        nheads=cfg.nheads,
        ffn_dim=cfg.ffn_dim,
        n_enc_layers=cfg.n_global_layers,
        n_dec_layers=cfg.n_dec_layers,
        num_queries=cfg.num_queries,
        dropout=cfg.dropout,
        input_dropout=cfg.input_dropout,
        n_input_proj=cfg.n_input_proj,
        max_text_len=cfg.max_text_len,
        use_txt_pos=cfg.use_txt_pos,
    )
