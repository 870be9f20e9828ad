"""Reference test of the Span Aware Refine Decoder: eq 1-6 and the prediction head written out here,
loop by loop, from the paper (3.4) and docs/readings.md, and compared with the module on a batch whose
samples have different GT counts (so different denoising masks) and different video lengths, for the
readings of both recipes (`paper`: every equation as written; `tuned`).

The reference reads only the module's parameters (`weights` below is the one place that knows where
they live) and recomputes everything else: the sine embeddings P_S and P_Mv, the Temporal Align sampling,
the Gaussian mask, the masked self-attention per sample and head, the cross-attention per head.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sadetr.model.decoder import SpanAwareRefineDecoder
from sadetr.model.denoising import dn_attention_mask

D, H, FFN, NQ, NS, ALPHA = 8, 2, 12, 3, 3, 2.0
GROUPS = 2
# The decoder's readings in each recipe (sadetr.config.recipes).
READINGS = {
    "paper": dict(
        self_attn_pos="after_proj", gate_scale=False, position_mode="raw", mask_clip_time="end",
        cross_residual="query",
    ),
    "tuned": dict(
        self_attn_pos="before_proj", gate_scale=True, position_mode="projected", mask_clip_time="center",
        cross_residual="input",
    ),
}  # fmt: skip


# ------------------------------------------------------------------------------------------ reference


def weights(dec: SpanAwareRefineDecoder) -> dict:
    """The decoder's parameters by their role in the paper."""
    layers = []
    for layer in dec.layers:
        sa = layer.self_attn
        wq, wk, wv = sa.in_proj_weight.chunk(3)
        bq, bk, bv = sa.in_proj_bias.chunk(3)
        enh, ca = layer.span_enhance, layer.cross_attn
        layers.append(
            {
                "sa": (wq, bq, wk, bk, wv, bv, sa.out_proj.weight, sa.out_proj.bias),
                "norms": [(n.weight, n.bias) for n in (layer.norm1, layer.norm2, layer.norm3)],
                "W_v": enh.video_proj,
                "W_t": enh.text_proj,
                "W_f": enh.fuse_proj,
                "ca": (ca.q_proj, ca.k_proj, ca.v_proj, ca.out_proj),
                "W_p": ca.pos_proj,  # eq 4's projection of P_Mv (`position_mode: projected`), or None
                "ffn": (layer.ffn.net[0], layer.ffn.net[3]),
            }
        )
    return {
        "layers": layers,
        "mlp2": dec.span_pos_mlp.layers,
        "mlp3": dec.span_head.layers,
        "q": dec.quality_head,
    }


def sine(x: float, dim: int) -> torch.Tensor:
    """Sine embedding of one scalar: channels (2k, 2k+1) = sin, cos of 2·pi·x / 10000^(2k/dim)."""
    out = torch.zeros(dim)
    for k in range(dim // 2):
        angle = 2 * math.pi * x / 10000 ** (2 * k / dim)
        out[2 * k], out[2 * k + 1] = math.sin(angle), math.cos(angle)
    return out


def mlp(layers, x: torch.Tensor) -> torch.Tensor:
    for i, lin in enumerate(layers):
        x = lin(x)
        x = F.relu(x) if i < len(layers) - 1 else x
    return x


def align(memory: torch.Tensor, n_valid: int, c: float, w: float) -> torch.Tensor:
    """Temporal Align of one span: N_s points at start + (k + 0.5)·w/N_s, linear between clip centres."""
    rows = []
    for k in range(NS):
        p = (c - w / 2) + (k + 0.5) * w / NS
        pos = min(max(p * n_valid - 0.5, 0.0), n_valid - 1.0)  # clip i has its centre at (i + 0.5)/L_v
        lo = math.floor(pos)
        hi = min(lo + 1, n_valid - 1)
        rows.append(memory[lo] * (1 - (pos - lo)) + memory[hi] * (pos - lo))
    return torch.stack(rows)  # (N_s, d)


def reference_layer(wl: dict, C, S, P_S, M_v, P_Mv, n_valid, M_t, blocked, r: dict):
    """One refiner layer for one sample. C, P_S [Q, d]; S [Q, 2]; M_v, P_Mv [L, d]; blocked [Q, Q];
    r: the readings (`READINGS`)."""
    Q, dh = C.shape[0], D // H
    # eq 1: Ĉ = LN(C + softmax((W_q C + P_S)(W_k C + P_S)ᵀ / √d_h) W_v C) as written (after_proj), or with
    # W(C + P_S) (before_proj); the denoising mask blocks (row, column) pairs
    wq, bq, wk, bk, wv, bv, wo, bo = wl["sa"]
    if r["self_attn_pos"] == "after_proj":
        q, k = C @ wq.T + bq + P_S, C @ wk.T + bk + P_S
    else:
        x = C + P_S
        q, k = x @ wq.T + bq, x @ wk.T + bk
    v = C @ wv.T + bv
    heads = []
    for h in range(H):
        sl = slice(h * dh, (h + 1) * dh)
        logits = q[:, sl] @ k[:, sl].T / math.sqrt(dh)
        heads.append(logits.masked_fill(blocked, float("-inf")).softmax(-1) @ v[:, sl])
    (g1, b1), (g2, b2), (g3, b3) = wl["norms"]
    C_hat = F.layer_norm(C + torch.cat(heads, -1) @ wo.T + bo, (D,), g1, b1)
    # eq 2-3: span based enhance, M_t-weighted sampled clips, no softmax; gate ĝ = sigmoid(<Ĉ, M̂_s>), as
    # written, or divided by √d (`model.gate_scale`)
    C_bar = torch.zeros_like(C_hat)
    for i in range(Q):
        M_s = align(M_v, n_valid, float(S[i, 0]), float(S[i, 1]))  # (N_s, d)
        s = wl["W_v"](M_s) @ wl["W_t"](M_t) / math.sqrt(D)  # (N_s,)
        pooled = (s[:, None] * M_s).mean(0)
        gate = torch.sigmoid(C_hat[i] @ pooled / (math.sqrt(D) if r["gate_scale"] else 1.0))
        C_bar[i] = wl["W_f"]((pooled + C_hat[i]) * gate) + C_hat[i]
    # eq 5: Gaussian mask around each span at t_j = (j + 1)/L_v (as written) or the clip centres; eq 4 + 6:
    # concatenated content and position per head, scaled by sqrt(2 d_head), logits times the mask, padded
    # clips excluded
    W_q, W_k, W_vv, W_o = wl["ca"]
    qc, kc, vc = W_q(C_bar), W_k(M_v), W_vv(M_v)
    if wl["W_p"] is not None:  # projected: this layer's W_p · PE(t_j, 1/L_v)
        P_Mv = wl["W_p"](P_Mv)
    out = []
    for i in range(Q):
        c, w = float(S[i, 0]), max(float(S[i, 1]), 1e-4)
        shift = 1.0 if r["mask_clip_time"] == "end" else 0.5
        gauss = [math.exp(-ALPHA * ((j + shift) / n_valid - c) ** 2 / w**2) for j in range(n_valid)]
        per_head = []
        for h in range(H):
            sl = slice(h * dh, (h + 1) * dh)
            qi = torch.cat([qc[i, sl], P_S[i, sl]])
            logits = torch.stack(
                [
                    qi @ torch.cat([kc[j, sl], P_Mv[j, sl]]) / math.sqrt(2 * dh) * gauss[j]
                    for j in range(n_valid)
                ]
            )
            per_head.append(logits.softmax(0) @ vc[:n_valid, sl])
        out.append(W_o(torch.cat(per_head)))
    residual = qc if r["cross_residual"] == "query" else C_bar  # eq 6: + Q_C̄ as written, or + C̄
    C_tilde = F.layer_norm(residual + torch.stack(out), (D,), g2, b2)
    lin1, lin2 = wl["ffn"]
    return F.layer_norm(C_tilde + lin2(F.relu(lin1(C_tilde))), (D,), g3, b3)


def reference_decoder(dec, content, spans, memory, n_valid, sentence, blocked, r: dict):
    """The whole decoder for one sample: per layer P_S = MLP_2(PE(S)), the layer, the head
    S' = sigmoid(logit(S) + MLP_3(C)) (logit clamped at 1e-3), q = sigmoid(linear(C)).
    P_Mv: raw, sine(t_j) over d channels; projected, each clip as the span (t_j, 1/L_v) in PE(S)'s layout
    (its projection W_p is per layer, in `reference_layer`)."""
    W = weights(dec)
    t = [(j + 0.5) / n_valid for j in range(memory.shape[0])]
    if dec.position_mode == "raw":
        P_Mv = torch.stack([sine(tj, D) for tj in t])
    else:
        P_Mv = torch.stack([torch.cat([sine(tj, D // 2), sine(1 / n_valid, D // 2)]) for tj in t])
    C, S, outs = content, spans, []
    for wl in W["layers"]:
        pe = torch.stack([torch.cat([sine(float(c), D // 2), sine(float(w), D // 2)]) for c, w in S])
        P_S = mlp(W["mlp2"], pe)
        C = reference_layer(wl, C, S, P_S, memory, P_Mv, n_valid, sentence, blocked, r)
        x = S.clamp(1e-3, 1 - 1e-3)
        S = torch.sigmoid(torch.log(x / (1 - x)) + mlp(W["mlp3"], C))
        outs.append((S, torch.sigmoid(W["q"](C)).squeeze(-1)))
    return outs


# ------------------------------------------------------------------------------------------ inputs


def make_decoder(seed: int = 0, recipe: str = "paper") -> SpanAwareRefineDecoder:
    """A small decoder with every parameter random (LayerNorms and MLP_3's zero-initialised last layer
    included), so that no term of the reference can hide behind an identity or a zero."""
    torch.manual_seed(seed)
    dec = SpanAwareRefineDecoder(
        dim=D,
        nheads=H,
        ffn_dim=FFN,
        dropout=0.0,
        num_layers=2,
        gaussian_alpha=ALPHA,
        num_align_points=NS,
        **READINGS[recipe],
    ).eval()
    with torch.no_grad():
        for name, p in dec.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if "norm" in name and "weight" in name else 0.0))
        dec.span_head.layers[-1].weight.normal_(0.0, 0.3)
    return dec


GT_COUNTS = (1, 3)  # different GT counts: sample 0 has padded noise slots, its mask differs from sample 1's
LENGTHS = (7, 5)  # different video lengths: sample 1 has 2 padded clips


def noise_anchors(gen: torch.Generator) -> list[torch.Tensor]:
    """Per sample, noised spans for (group, polarity, GT j): [G, 2, N_b, 2] (center, width)."""
    out = []
    for n in GT_COUNTS:
        c = torch.rand(GROUPS, 2, n, generator=gen) * 0.6 + 0.2
        w = torch.rand(GROUPS, 2, n, generator=gen) * 0.3 + 0.1
        out.append(torch.stack([c, w], -1))
    return out


def layout(per_sample: list[torch.Tensor], counts: list[int]):
    """Anchors [B, Nq + N_dn, 2] in the denoiser's slot layout g·2M + p·M + j (M = max count), padded
    slots at (0.5, 0.5), and the denoiser's attention mask for these counts."""
    m = max(counts)
    pos_valid = torch.tensor([[j < n for j in range(m)] for n in counts])
    slots = torch.full((len(counts), GROUPS, 2, m, 2), 0.5)
    for b, a in enumerate(per_sample):
        slots[b, :, :, : counts[b]] = a
    return slots.reshape(len(counts), -1, 2), dn_attention_mask(NQ, GROUPS, m, True, pos_valid)


def batch_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lmax = max(LENGTHS)
    memory = torch.randn(2, lmax, D, generator=gen)
    memory[1, LENGTHS[1] :] = 50.0  # padding with large values: any read of it shows
    vmask = torch.tensor([[j < n for j in range(lmax)] for n in LENGTHS])
    sentence = torch.randn(2, D, generator=gen)
    direct = torch.stack(
        [torch.rand(NQ, generator=gen) * 0.6 + 0.2, torch.rand(NQ, generator=gen) * 0.4 + 0.1], -1
    )
    direct = direct[None].repeat(2, 1, 1)
    direct[1] = direct[1].flip(0)  # the samples' direct anchors differ too
    noise = noise_anchors(gen)
    dn_anchors, mask = layout(noise, list(GT_COUNTS))
    spans = torch.cat([direct, dn_anchors], 1)  # (B, Nq + N_dn, 2)
    n_dn = dn_anchors.shape[1]
    content = torch.cat(
        [torch.randn(2, NQ, D, generator=gen), torch.randn(D, generator=gen).expand(2, n_dn, D)], 1
    )
    return content, spans, memory, vmask, sentence, mask, noise, direct


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("recipe", sorted(READINGS))
def test_decoder_matches_reference_with_different_denoising_masks(recipe: str) -> None:
    dec = make_decoder(recipe=recipe)
    content, spans, memory, vmask, sentence, mask, _, _ = batch_inputs()
    assert not torch.equal(mask[0], mask[1])  # the two samples really have different masks
    with torch.no_grad():
        outs = dec(content, spans, memory, vmask, sentence, mask)
        for b in range(2):
            ref = reference_decoder(
                dec, content[b], spans[b], memory[b], LENGTHS[b], sentence[b], mask[b], READINGS[recipe]
            )
            for layer, ((s, q), (s_ref, q_ref)) in enumerate(zip(outs, ref)):
                torch.testing.assert_close(
                    s[b], s_ref, atol=2e-5, rtol=1e-4, msg=f"spans b={b} layer={layer}"
                )
                torch.testing.assert_close(
                    q[b], q_ref, atol=2e-5, rtol=1e-4, msg=f"quality b={b} layer={layer}"
                )


def test_decoder_reference_without_mask_and_the_mask_matters() -> None:
    # Without the denoising mask every query sees every other: the same reference with nothing blocked,
    # and the outputs differ from the masked ones (the mask is not a no-op on this input).
    dec = make_decoder(1)
    content, spans, memory, vmask, sentence, mask, _, _ = batch_inputs(1)
    open_ = torch.zeros_like(mask[0])
    with torch.no_grad():
        free = dec(content, spans, memory, vmask, sentence)
        masked = dec(content, spans, memory, vmask, sentence, mask)
        ref = reference_decoder(
            dec, content[1], spans[1], memory[1], LENGTHS[1], sentence[1], open_, READINGS["paper"]
        )
    torch.testing.assert_close(free[-1][0][1], ref[-1][0], atol=2e-5, rtol=1e-4)
    assert not torch.allclose(free[-1][1][:, :NQ], masked[-1][1][:, :NQ], atol=1e-4)


@pytest.mark.parametrize("b", [0, 1])
def test_each_sample_alone_with_its_own_noise_group_gives_the_same_output(b: int) -> None:
    # Sample b run alone (its own GT count M_b, no padded noise slots, no padded clips): the direct
    # queries and every real noise query must come out as in the batch.
    dec = make_decoder(2)
    content, spans, memory, vmask, sentence, mask, noise, direct = batch_inputs(2)
    n = GT_COUNTS[b]
    alone_dn, alone_mask = layout([noise[b]], [n])
    alone_spans = torch.cat([direct[b : b + 1], alone_dn], 1)
    n_alone = alone_spans.shape[1]
    alone_content = content[b : b + 1, :n_alone]  # direct content, then the shared noise content
    lv = LENGTHS[b]
    with torch.no_grad():
        batched = dec(content, spans, memory, vmask, sentence, mask)
        alone = dec(
            alone_content,
            alone_spans,
            memory[b : b + 1, :lv],
            vmask[b : b + 1, :lv],
            sentence[b : b + 1],
            alone_mask,
        )
    m = max(GT_COUNTS)
    # batch slot of (g, p, j) is Nq + g·2M + p·M + j; alone it is Nq + g·2n + p·n + j
    idx = list(range(NQ)) + [
        NQ + g * 2 * m + p * m + j for g in range(GROUPS) for p in range(2) for j in range(n)
    ]
    for (s, q), (s1, q1) in zip(batched, alone):
        torch.testing.assert_close(s[b, idx], s1[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(q[b, idx], q1[0], atol=1e-5, rtol=1e-4)
