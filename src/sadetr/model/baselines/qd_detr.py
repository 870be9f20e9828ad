"""QD-DETR baseline (Moon et al., 2023) inside the sadetr framework, with SA-DETR's Table 11 grafts.

Architecture of the public implementation (wjun0830/QD-DETR), rewritten: input MLPs as Moment-DETR;
a learnable global (saliency) token with a learned position; text-to-video cross-attention layers
(T2V encoder: clips query the words); a self-attention encoder over [token, clips]; query-dependent
saliency `s_i = <W1 m_i, W2 m_g> / sqrt(d)`; a negative pass (each video with the next sample's query);
a DAB-DETR decoder with learnable 2-d anchors (sine embedding -> `ref_point_head`, conditional
`query_scale`, width-modulated positional queries, per-head concatenated content/position
cross-attention, iterative anchor refinement by `bbox_embed`); class and span heads. Transformer FFNs use
PReLU. At the QVHighlights SF+C setting it has exactly 7,585,573 trainable parameters.

Exactness: with the default `t2v_form="public"` and the same weights, outputs equal the public code's
(the parameter names are mapped by `sadetr.inference.import_release`). `t2v_form="normed"` keeps the form this
framework used before (FFN on the normalised residual), with which the README's demo-scale numbers were
measured.

Table 11 switches (SA-DETR components grafted onto QD-DETR):
- `qd_dynamic_anchor`: instance-related anchors `S_d = sigmoid(MLP_3(m_g)).view(N_q, 2)` from the
  encoder's global token replace the learnable anchors (SA-DETR's `DualPathQueryInitializer`, direct
  group, reused); `init_spans` is returned so that L_init can supervise them (`use_init_loss`).
- `qd_gaussian_mask`: cross-attention logits multiplied by the Gaussian mask of each query's anchor
  before the softmax (eq 5-6, `span_ops.gaussian_mask`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sadetr.model.baselines.moment_detr import (
    BaselineInputs,
    EncoderLayer,
    _activation,
    _baseline_output,
    _xavier_init,
)
from sadetr.model.config import ModelConfig
from sadetr.model.layers import MLP
from sadetr.model.query_init import DualPathQueryInitializer
from sadetr.model.span_ops import gaussian_mask, span_sine_embedding

T2V_FORMS = ("public", "normed")


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """logit(x) as the public DAB/QD-DETR code computes it: numerator and denominator clamped separately.

    Differs from `span_ops.inverse_sigmoid` only for x > 1 - eps: log(x / eps) here, log((1-eps)/eps) there.
    """
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def multihead_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    nheads: int,
    key_pad: Tensor | None,
    dropout: nn.Dropout,
    logit_mask: Tensor | None = None,
) -> Tensor:
    """Scaled dot-product attention on already-projected inputs (DAB-DETR's MHA has no in-projection).

    q: [B, Nq, H, Dqk] per head; k: [B, L, H, Dqk]; v: [B, L, Dv]; key_pad: [B, L] True = padding;
    logit_mask: [B, Nq, L] multiplies the logits before the softmax (eq 6) -> [B, Nq, Dv].
    """
    bsz, num_q, _, head_dim = q.shape
    v_heads = v.view(bsz, v.shape[1], nheads, -1).transpose(1, 2)  # (B, H, L, Dv/H)
    logits = torch.einsum("bqhc,blhc->bhql", q, k) / math.sqrt(head_dim)  # (B, H, Nq, L)
    if logit_mask is not None:
        logits = logits * logit_mask[:, None]  # (B, H, Nq, L)
    if key_pad is not None:
        logits = logits.masked_fill(key_pad[:, None, None, :], float("-inf"))
    attn = dropout(logits.softmax(dim=-1))  # (B, H, Nq, L)
    out = attn @ v_heads  # (B, H, Nq, Dv/H)
    return out.transpose(1, 2).reshape(bsz, num_q, -1)  # (B, Nq, Dv)


class T2VEncoderLayer(nn.Module):
    """Text-to-video layer: clips (+ positions) query the words, then residual, FFN and LayerNorms.

    `form="public"` (wjun0830/QD-DETR): `x = v + attn; out = norm2(x + FFN(norm1(x)))`;
    `form="normed"` (this framework's earlier form): `y = norm1(v + attn); out = norm2(y + FFN(y))`.
    """

    def __init__(
        self, dim: int, nheads: int, ffn_dim: int, dropout: float, activation: str, form: str = "public"
    ) -> None:
        super().__init__()
        if form not in T2V_FORMS:
            raise ValueError(f"unknown T2V form {form!r} ({' | '.join(T2V_FORMS)})")
        self.form = form
        self.cross_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.activation = _activation(activation)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, vid: Tensor, pos_vid: Tensor, txt: Tensor, pos_txt: Tensor, txt_pad: Tensor) -> Tensor:
        """vid, pos_vid: [B, Lv, d]; txt, pos_txt: [B, Lt, d]; txt_pad: [B, Lt] -> [B, Lv, d]."""
        attn = self.cross_attn(
            vid + pos_vid, txt + pos_txt, txt, key_padding_mask=txt_pad, need_weights=False
        )[0]
        vid = vid + self.dropout1(attn)  # (B, Lv, d)
        normed = self.norm1(vid)
        if self.form == "normed":
            vid = normed
        ffn = self.linear2(self.dropout(self.activation(self.linear1(normed))))
        return self.norm2(vid + self.dropout2(ffn))


class DABDecoderLayer(nn.Module):
    """DAB-DETR decoder layer (Conditional-DETR attention with separate content/position projections)."""

    def __init__(
        self, dim: int, nheads: int, ffn_dim: int, dropout: float, activation: str, first: bool
    ) -> None:
        super().__init__()
        self.nheads = nheads
        self.sa_qcontent_proj = nn.Linear(dim, dim)
        self.sa_qpos_proj = nn.Linear(dim, dim)
        self.sa_kcontent_proj = nn.Linear(dim, dim)
        self.sa_kpos_proj = nn.Linear(dim, dim)
        self.sa_v_proj = nn.Linear(dim, dim)
        self.sa_out_proj = nn.Linear(dim, dim)
        self.ca_qcontent_proj = nn.Linear(dim, dim)
        # The anchor's positional query enters the cross-attention content only in the first layer.
        self.ca_qpos_proj = nn.Linear(dim, dim) if first else None
        self.ca_kcontent_proj = nn.Linear(dim, dim)
        self.ca_kpos_proj = nn.Linear(dim, dim)
        self.ca_v_proj = nn.Linear(dim, dim)
        self.ca_qpos_sine_proj = nn.Linear(dim, dim)
        self.ca_out_proj = nn.Linear(dim, dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.activation = _activation(activation)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.attn_dropout = nn.Dropout(dropout)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        nn.init.zeros_(self.sa_out_proj.bias)  # as DAB-DETR's attention module
        nn.init.zeros_(self.ca_out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.nheads, -1)  # (B, N, H, d/H)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        query_sine: Tensor,
        memory: Tensor,
        memory_pad: Tensor,
        pos: Tensor,
        logit_mask: Tensor | None,
    ) -> Tensor:
        """tgt, query_pos, query_sine: [B, Nq, d]; memory, pos: [B, L, d]; memory_pad: [B, L];
        logit_mask: [B, Nq, L] or None -> [B, Nq, d]."""
        q = self._heads(self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos))  # (B, Nq, H, d/H)
        k = self._heads(self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos))  # (B, Nq, H, d/H)
        sa = multihead_attention(q, k, self.sa_v_proj(tgt), self.nheads, None, self.attn_dropout)
        tgt = self.norm1(tgt + self.dropout1(self.sa_out_proj(sa)))

        q_content = self.ca_qcontent_proj(tgt)  # (B, Nq, d)
        k_content = self.ca_kcontent_proj(memory)  # (B, L, d)
        k_pos = self.ca_kpos_proj(pos)  # (B, L, d)
        if self.ca_qpos_proj is not None:
            q_content = q_content + self.ca_qpos_proj(query_pos)
            k_content = k_content + k_pos
        # Concatenate content and position per head (Conditional-DETR): head dim 2d/H.
        q = torch.cat([self._heads(q_content), self._heads(self.ca_qpos_sine_proj(query_sine))], -1)
        k = torch.cat([self._heads(k_content), self._heads(k_pos)], -1)  # (B, L, H, 2d/H)
        ca = multihead_attention(
            q, k, self.ca_v_proj(memory), self.nheads, memory_pad, self.attn_dropout, logit_mask
        )
        tgt = self.norm2(tgt + self.dropout2(self.ca_out_proj(ca)))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class DABDecoder(nn.Module):
    """Stack of DAB-DETR layers refining 2-d anchors (center, width) layer by layer."""

    def __init__(
        self,
        dim: int,
        nheads: int,
        ffn_dim: int,
        num_layers: int,
        dropout: float,
        activation: str,
        gaussian_alpha: float | None,
        mask_clip_time: str = "end",
    ) -> None:
        super().__init__()
        self.dim = dim
        self.gaussian_alpha = gaussian_alpha
        self.mask_clip_time = mask_clip_time
        self.layers = nn.ModuleList(
            DABDecoderLayer(dim, nheads, ffn_dim, dropout, activation, first=(i == 0))
            for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.query_scale = MLP(dim, dim, dim, 2)
        self.ref_point_head = MLP(dim, dim, dim, 2)
        self.bbox_embed = MLP(dim, dim, 2, 3)
        self.ref_anchor_head = MLP(dim, dim, 1, 2)
        nn.init.zeros_(self.bbox_embed.output_layer.bias)

    def forward(
        self,
        anchors: Tensor,
        content: Tensor,
        memory: Tensor,
        memory_pad: Tensor,
        pos: Tensor,
        video_mask: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """anchors: [B, Nq, 2] (c, w) in (0, 1); content: [B, Nq, d]; memory, pos: [B, L, d] ->
        (hs [n_layers, B, Nq, d] after the final LayerNorm, refs [n_layers, B, Nq, 2] = each layer's
        input anchor).
        """
        output = content
        ref = anchors
        hs, refs = [], [anchors]
        for i, layer in enumerate(self.layers):
            sine = span_sine_embedding(ref, self.dim)  # (B, Nq, d)
            query_pos = self.ref_point_head(sine)  # (B, Nq, d)
            if i > 0:
                sine = sine * self.query_scale(output)  # conditional scale of the positional query
            # Width-modulated positional attention: scale by predicted width over anchor width.
            sine = sine * (self.ref_anchor_head(output).sigmoid() / ref[..., 1:2])
            logit_mask = None
            if self.gaussian_alpha is not None:
                alpha, clip_time = self.gaussian_alpha, self.mask_clip_time
                logit_mask = gaussian_mask(ref, video_mask, alpha, clip_time=clip_time)  # (B, Nq, L), eq 5
            output = layer(output, query_pos, sine, memory, memory_pad, pos, logit_mask)
            new_ref = (self.bbox_embed(output) + inverse_sigmoid(ref)).sigmoid()  # (B, Nq, 2)
            if i < len(self.layers) - 1:
                refs.append(new_ref)
            ref = new_ref.detach()
            hs.append(self.norm(output))
        return torch.stack(hs), torch.stack(refs)


class QDDETR(nn.Module):
    """QD-DETR (+ optional Table 11 grafts). Output keys as `MomentDETR`, plus `saliency_scores_neg`
    (training, negative pass) and `init_spans` (dynamic anchors, else None)."""

    def __init__(
        self,
        video_dim: int,
        text_dim: int,
        hidden_dim: int = 256,
        nheads: int = 8,
        ffn_dim: int = 1024,
        n_t2v_layers: int = 2,
        n_enc_layers: int = 2,
        n_dec_layers: int = 2,
        num_queries: int = 10,
        dropout: float = 0.1,
        input_dropout: float = 0.5,
        n_input_proj: int = 2,
        max_text_len: int = 32,
        use_txt_pos: bool = False,
        activation: str = "prelu",
        use_negative_pass: bool = True,
        dynamic_anchor: bool = False,
        gaussian_alpha: float | None = None,
        t2v_form: str = "public",
        mask_clip_time: str = "end",
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_queries = num_queries
        self.use_negative_pass = use_negative_pass
        self.inputs = BaselineInputs(
            video_dim, text_dim, hidden_dim, n_input_proj, input_dropout, max_text_len, use_txt_pos
        )
        self.global_rep_token = nn.Parameter(torch.randn(hidden_dim))
        self.global_rep_pos = nn.Parameter(torch.randn(hidden_dim))
        self.t2v_encoder = nn.ModuleList(
            T2VEncoderLayer(hidden_dim, nheads, ffn_dim, dropout, activation, t2v_form)
            for _ in range(n_t2v_layers)
        )
        self.encoder = nn.ModuleList(
            EncoderLayer(hidden_dim, nheads, ffn_dim, dropout, activation) for _ in range(n_enc_layers)
        )
        self.decoder = DABDecoder(
            hidden_dim, nheads, ffn_dim, n_dec_layers, dropout, activation, gaussian_alpha, mask_clip_time
        )
        for part in (self.t2v_encoder, self.encoder, self.decoder):
            _xavier_init(part)
        if dynamic_anchor:
            # SA-DETR's direct query group: S_d = sigmoid(MLP_3(m_g)), content C_d learnable (zeros).
            self.query_init: DualPathQueryInitializer | None = DualPathQueryInitializer(
                hidden_dim, num_queries, "instance"
            )
            self.query_embed = None
        else:
            self.query_init = None
            self.query_embed = nn.Embedding(num_queries, 2)  # learnable anchors (logits), content zeros
        self.class_embed = nn.Linear(hidden_dim, 2)  # 0 foreground, 1 background
        self.span_embed = MLP(hidden_dim, hidden_dim, 2, 3)
        self.saliency_proj1 = nn.Linear(hidden_dim, hidden_dim)
        self.saliency_proj2 = nn.Linear(hidden_dim, hidden_dim)

    def encode(
        self, vid: Tensor, pos_vid: Tensor, vid_pad: Tensor, txt: Tensor, pos_txt: Tensor, txt_pad: Tensor
    ) -> tuple[Tensor, Tensor]:
        """T2V layers then the encoder over [token, clips] -> (m_g [B, d], clip memory [B, Lv, d])."""
        for layer in self.t2v_encoder:
            vid = layer(vid, pos_vid, txt, pos_txt, txt_pad)  # (B, Lv, d)
        bsz = vid.shape[0]
        token = self.global_rep_token[None, None].expand(bsz, 1, -1)  # (B, 1, d)
        token_pos = self.global_rep_pos[None, None].expand(bsz, 1, -1)  # (B, 1, d)
        src = torch.cat([token, vid], dim=1)  # (B, 1+Lv, d)
        pos = torch.cat([token_pos, pos_vid], dim=1)  # (B, 1+Lv, d)
        pad = torch.cat([vid_pad.new_zeros(bsz, 1), vid_pad], dim=1)  # (B, 1+Lv)
        for layer in self.encoder:
            src = layer(src, pad, pos)
        return src[:, 0], src[:, 1:]

    def saliency(self, clip_mem: Tensor, global_mem: Tensor) -> Tensor:
        """Query-dependent saliency `<W1 m_i, W2 m_g> / sqrt(d)`: [B, Lv, d], [B, d] -> [B, Lv]."""
        s = (self.saliency_proj1(clip_mem) * self.saliency_proj2(global_mem)[:, None]).sum(-1)
        return s / math.sqrt(self.hidden_dim)

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
        global_mem, clip_mem = self.encode(vid, pos_vid, ~video_mask, txt, pos_txt, ~text_mask)

        bsz = vid.shape[0]
        init_spans = None
        if self.query_init is not None:
            anchors, content, init_spans = self.query_init.direct(global_mem)  # (B, Nq, 2), (B, Nq, d)
        else:
            assert self.query_embed is not None  # dynamic_anchor is off
            anchors = self.query_embed.weight.sigmoid()[None].expand(bsz, -1, -1)  # (B, Nq, 2)
            content = clip_mem.new_zeros(bsz, self.num_queries, self.hidden_dim)  # (B, Nq, d)
        hs, refs = self.decoder(anchors, content, clip_mem, ~video_mask, pos_vid, video_mask)
        logits = self.class_embed(hs)  # (n_dec, B, Nq, 2)
        spans = (self.span_embed(hs) + inverse_sigmoid(refs)).sigmoid()  # (n_dec, B, Nq, 2)
        quality = logits.softmax(-1)[..., 0]  # (n_dec, B, Nq) foreground probability

        saliency_neg = None
        if self.use_negative_pass and self.training:
            # Negative pass: video b with the query of sample b+1 (the decoder is not needed).
            txt_neg = txt.roll(-1, dims=0)  # (B, Lt, d)
            pos_txt_neg = pos_txt.roll(-1, dims=0)
            global_neg, clip_neg = self.encode(
                vid, pos_vid, ~video_mask, txt_neg, pos_txt_neg, ~text_mask.roll(-1, 0)
            )
            saliency_neg = self.saliency(clip_neg, global_neg)  # (B, Lv)
        return _baseline_output(
            logits, spans, quality, self.saliency(clip_mem, global_mem), saliency_neg, video_mask, init_spans
        )


def build_qd_detr(cfg: ModelConfig) -> QDDETR:
    """QD-DETR from the config: `n_fusion_layers` T2V layers, `n_global_layers` encoder layers."""
    return QDDETR(
        video_dim=cfg.video_dim,
        text_dim=cfg.text_dim,
        hidden_dim=cfg.hidden_dim,
        nheads=cfg.nheads,
        ffn_dim=cfg.ffn_dim,
        n_t2v_layers=cfg.n_fusion_layers,
        n_enc_layers=cfg.n_global_layers,
        n_dec_layers=cfg.n_dec_layers,
        num_queries=cfg.num_queries,
        dropout=cfg.dropout,
        input_dropout=cfg.input_dropout,
        n_input_proj=cfg.n_input_proj,
        max_text_len=cfg.max_text_len,
        use_txt_pos=cfg.use_txt_pos,
        activation=cfg.qd_activation,
        use_negative_pass=cfg.use_negative_pass,
        dynamic_anchor=cfg.qd_dynamic_anchor,
        gaussian_alpha=cfg.gaussian_alpha if cfg.qd_gaussian_mask else None,
        t2v_form=cfg.qd_t2v_form,
        mask_clip_time=cfg.mask_clip_time,
    )
