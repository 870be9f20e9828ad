"""Reference test of the Multi Modal Align Encoder (paper 3.2, docs/readings.md "3.2"), written out here:

- fusion: both directions through the same layers; positions are added to Q_v only (the video queries,
  fusion token g included), never to the text queries, keys or values;
- global enhance block: positions on queries and keys, never on the values;
- M_t (attention pooling of F̂_t), S = cos(F̂_v clips, M_t), the HD scores `<W1 m_i, W2 m_g>/sqrt(d)`;
- the alignment embeddings: `vtc` video_emb/text_emb and `ctm` clip_emb/sent_emb at both stages;
- the negative pass (video b with the query of sample b + 1).

The reference reads only the module's parameters (`weights`); the input projections and the local
enhance block (hand-checked in test_encoder.py) are called as they are.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sadetr.model.encoder import MultiModalAlignEncoder
from test_decoder_reference import sine

DV, DT, D, H, FFN = 6, 5, 8, 2, 12
LV, LT = (6, 4), (4, 2)  # valid clips / tokens of the two samples (sample 1 is padded in both)


def weights(enc: MultiModalAlignEncoder) -> dict:
    """The encoder's parameters by role: each attention layer as (W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o,
    LN1, LN2, FFN linear 1, FFN linear 2)."""

    def layer(m):
        wq, wk, wv = m.attn.in_proj_weight.chunk(3)
        bq, bk, bv = m.attn.in_proj_bias.chunk(3)
        return {
            "qkv": (wq, bq, wk, bk, wv, bv),
            "out": m.attn.out_proj,
            "ln": [(m.norm1.weight, m.norm1.bias), (m.norm2.weight, m.norm2.bias)],
            "ffn": (m.ffn.net[0], m.ffn.net[3]),
        }

    return {
        "fusion": [layer(m) for m in enc.fusion_layers],
        "global": [layer(m) for m in enc.global_layers],
        "g": enc.fusion_token,
        "g_pos": enc.fusion_token_pos,
        "pool": enc.sentence_pool.score.weight[0],
        "W1": enc.saliency_head.clip_proj,
        "W2": enc.saliency_head.token_proj,
    }


def attention_layer(w: dict, x, q_in, k_in, v_in):
    """Post-norm layer on one sample: x, q_in [Lq, d]; k_in, v_in [Lk, d] (valid keys only)."""
    wq, bq, wk, bk, wv, bv = w["qkv"]
    q, k, v = q_in @ wq.T + bq, k_in @ wk.T + bk, v_in @ wv.T + bv
    dh = D // H
    heads = [
        (q[:, h * dh : (h + 1) * dh] @ k[:, h * dh : (h + 1) * dh].T / math.sqrt(dh)).softmax(-1)
        @ v[:, h * dh : (h + 1) * dh]
        for h in range(H)
    ]
    (g1, b1), (g2, b2) = w["ln"]
    x = F.layer_norm(x + w["out"](torch.cat(heads, -1)), (D,), g1, b1)
    lin1, lin2 = w["ffn"]
    return F.layer_norm(x + lin2(F.relu(lin1(x))), (D,), g2, b2)


def reference(enc, video, text, b: int, text_b: int | None = None) -> dict:
    """Encoder outputs of sample b (its valid clips / tokens only); `text_b` pairs it with another query."""
    text_b = b if text_b is None else text_b
    W = weights(enc)
    f_v = enc.video_proj(video[b : b + 1, : LV[b]])[0]  # (Lv, d)
    f_t = enc.text_proj(text[text_b : text_b + 1, : LT[text_b]])[0]  # (Lt, d)
    v = torch.cat([W["g"][None], f_v])  # [g; F_v]
    pos = torch.stack([W["g_pos"], *[sine((i + 0.5) / LV[b], D) for i in range(LV[b])]])
    fused_v = v
    for w in W["fusion"]:  # video queries (with positions) attend to the text
        fused_v = attention_layer(w, fused_v, fused_v + pos, f_t, f_t)
    fused_t = f_t
    for w in W["fusion"]:  # text queries (no positions) attend to [g; F_v] (no positions)
        fused_t = attention_layer(w, fused_t, fused_t, v, v)
    sentence = (fused_t @ W["pool"]).softmax(0) @ fused_t  # M_t
    enhanced = fused_v
    for w in W["global"]:  # positions on queries and keys only
        enhanced = attention_layer(w, enhanced, enhanced + pos, enhanced + pos, enhanced)
    saliency = W["W1"](enhanced[1:]) @ W["W2"](enhanced[0]) / math.sqrt(D)
    pool_f_t = (f_t @ W["pool"]).softmax(0) @ f_t  # M_t of the unfused tokens (ctm before fusion)
    return {
        "f_v": f_v,
        "f_t": f_t,
        "fused_v": fused_v[1:],
        "fused_t": fused_t,
        "sentence": sentence,
        "sim": F.cosine_similarity(fused_v[1:], sentence[None], dim=-1),
        "token": enhanced[0],
        "saliency": saliency,
        "memory": enc.local_enhance(enhanced[None, 1:], torch.ones(1, LV[b], dtype=torch.bool))[0],
        "pool_f_t": pool_f_t,
    }


def make_encoder(vtc_stage: str, ctm_stage: str) -> MultiModalAlignEncoder:
    torch.manual_seed(0)
    enc = MultiModalAlignEncoder(
        DV, DT, hidden_dim=D, nheads=H, ffn_dim=FFN, dropout=0.0, input_dropout=0.0,
        vtc_stage=vtc_stage, ctm_stage=ctm_stage,
    )  # fmt: skip
    with torch.no_grad():  # every bias, LayerNorm and token parameter random (no identity can hide a term)
        for name, p in enc.named_parameters():
            if p.dim() == 1 and name != "logit_scale":
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name and "weight" in name else 0.0))
    return enc


def inputs():
    g = torch.Generator().manual_seed(0)
    video, text = torch.randn(2, max(LV), DV, generator=g), torch.randn(2, max(LT), DT, generator=g)
    video[1, LV[1] :], text[1, LT[1] :] = 40.0, -40.0  # padding with large values
    vmask = torch.tensor([[i < n for i in range(max(LV))] for n in LV])
    tmask = torch.tensor([[i < n for i in range(max(LT))] for n in LT])
    return video, vmask, text, tmask


def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=what)


@pytest.mark.parametrize("vtc_stage", ["before", "after"])
@pytest.mark.parametrize("ctm_stage", ["before", "after"])
def test_encoder_matches_reference(vtc_stage: str, ctm_stage: str) -> None:
    enc = make_encoder(vtc_stage, ctm_stage).eval()
    video, vmask, text, tmask = inputs()
    with torch.no_grad():
        out = enc(video, vmask, text, tmask)
        for b in range(2):
            ref, n = reference(enc, video, text, b), LV[b]
            close(out.sentence[b], ref["sentence"], f"M_t b={b}")
            close(out.clip_text_sim[b, :n], ref["sim"], f"S b={b}")
            close(out.token[b], ref["token"], f"M_g b={b}")
            close(out.saliency_scores[b, :n], ref["saliency"], f"HD scores b={b}")
            close(out.memory[b, :n], ref["memory"], f"M_v b={b}")
            # L_vtc: masked means over the valid clips / tokens, of F_v/F_t (before) or F̂_v/F̂_t (after)
            v_src, t_src = (
                (ref["f_v"], ref["f_t"]) if vtc_stage == "before" else (ref["fused_v"], ref["fused_t"])
            )
            close(out.vtc["video_emb"][b], v_src.mean(0), f"vtc video_emb b={b}")
            close(out.vtc["text_emb"][b], t_src.mean(0), f"vtc text_emb b={b}")
            # L_ctm: clips and sentence token before fusion (F_v, pooled F_t) or after (F̂_v, M_t)
            clip_src, sent_src = (
                (ref["f_v"], ref["pool_f_t"]) if ctm_stage == "before" else (ref["fused_v"], ref["sentence"])
            )
            close(out.ctm["clip_emb"][b, :n], clip_src, f"ctm clip_emb b={b}")
            close(out.ctm["sent_emb"][b], sent_src, f"ctm sent_emb b={b}")


def test_stages_give_different_embeddings() -> None:
    # The four embeddings really differ between the stages on this input (the checks above are not vacuous).
    video, vmask, text, tmask = inputs()
    with torch.no_grad():
        before = make_encoder("before", "before").eval()(video, vmask, text, tmask)
        after = make_encoder("after", "after").eval()(video, vmask, text, tmask)
    for a, b in [
        (before.vtc["video_emb"], after.vtc["video_emb"]),
        (before.vtc["text_emb"], after.vtc["text_emb"]),
        (before.ctm["clip_emb"], after.ctm["clip_emb"]),
        (before.ctm["sent_emb"], after.ctm["sent_emb"]),
    ]:
        assert not torch.allclose(a, b, atol=1e-3)


def test_negative_pass_matches_reference() -> None:
    enc = make_encoder("before", "after").train()  # dropout 0: training mode computes the same function
    video, vmask, text, tmask = inputs()
    with torch.no_grad():
        out = enc(video, vmask, text, tmask)
        for b in range(2):
            ref = reference(enc, video, text, b, text_b=(b + 1) % 2)
            close(out.saliency_scores_neg[b, : LV[b]], ref["saliency"], f"negative HD scores b={b}")
