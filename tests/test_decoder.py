"""Span Aware Refine Decoder: eq 2-3, eq 4-6 against explicit references, prediction head update."""

from __future__ import annotations

import math

import torch

from sadetr.model.decoder import SpanAwareCrossAttention, SpanAwareRefineDecoder, SpanBasedEnhanceBlock
from sadetr.model.span_ops import clip_centers, gaussian_mask, inverse_sigmoid, sine_embedding


def identity_(lin: torch.nn.Linear) -> None:
    with torch.no_grad():
        lin.weight.copy_(torch.eye(lin.weight.shape[0]))
        lin.bias.zero_()


def test_span_based_enhance_block_by_hand():
    block = SpanBasedEnhanceBlock(2, num_points=2, gate_scale=False)  # eq 3 as written
    for lin in (block.video_proj, block.text_proj, block.fuse_proj):
        identity_(lin)
    memory = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 2.0], [7.0, 7.0]]])  # M_v, 4 clips
    vmask = torch.ones(1, 4, dtype=torch.bool)
    spans = torch.tensor([[[0.5, 0.5]]])  # points at 0.375, 0.625 -> exactly clips 1 and 2
    sentence = torch.tensor([[1.0, 1.0]])  # M_t
    content = torch.tensor([[[0.5, -0.5]]])  # Ĉ
    # s = (M_s M_tᵀ)/sqrt(2) = (1, 2)/sqrt(2); M̂_s = mean((1,0)*1/√2, (0,2)*2/√2) = (1/(2√2), 2/√2)
    r2 = math.sqrt(2.0)
    pooled = torch.tensor([1 / (2 * r2), 2 / r2])
    gate = torch.sigmoid((content[0, 0] * pooled).sum())  # ĝ = sigmoid(<Ĉ, M̂_s>)
    expected = (pooled + content[0, 0]) * gate + content[0, 0]  # W_f = I
    out = block(content, spans, memory, vmask, sentence)
    assert torch.allclose(out[0, 0], expected, atol=1e-6)


def reference_attention(ca, content, qpos, memory, mpos, vmask, modulation):
    """Explicit per-head loop of eq 4 (concatenation) and eq 6 (mask before softmax, padding -> -inf)."""
    h, dh = ca.nheads, ca.head_dim
    q_c, k_c = ca.q_proj(content), ca.k_proj(memory)
    out = torch.zeros(content.shape[0], h, content.shape[1], memory.shape[1])
    for b in range(content.shape[0]):
        for head in range(h):
            sl = slice(head * dh, (head + 1) * dh)
            for i in range(content.shape[1]):
                q = torch.cat([q_c[b, i, sl], qpos[b, i, sl]])
                logits = []
                for j in range(memory.shape[1]):
                    k = torch.cat([k_c[b, j, sl], mpos[b, j, sl]])
                    val = (q @ k) / math.sqrt(2 * dh)
                    if modulation is not None:
                        val = val * modulation[b, i, j]
                    logits.append(val if vmask[b, j] else torch.tensor(float("-inf")))
                out[b, head, i] = torch.stack(logits).softmax(0)
    return out


def test_span_aware_cross_attention_matches_reference_and_masks_padding():
    torch.manual_seed(0)
    ca = SpanAwareCrossAttention(8, 2, dropout=0.0)
    content, qpos = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    memory = torch.randn(2, 5, 8)
    vmask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    mpos = sine_embedding(clip_centers(vmask), 8)
    spans = torch.tensor([[[0.3, 0.2], [0.5, 0.9], [0.8, 0.1]]]).repeat(2, 1, 1)
    modulation = gaussian_mask(spans, vmask, alpha=2.0)
    with torch.no_grad():
        query = ca.q_proj(content)  # Q_C̄
        attn = ca.attention_weights(query, qpos, memory, mpos, vmask, modulation)
        ref = reference_attention(ca, content, qpos, memory, mpos, vmask, modulation)
        plain = ca.attention_weights(query, qpos, memory, mpos, vmask, None)
        plain_ref = reference_attention(ca, content, qpos, memory, mpos, vmask, None)
    assert torch.allclose(attn, ref, atol=1e-6)
    assert torch.allclose(plain, plain_ref, atol=1e-6)
    assert not torch.allclose(attn, plain, atol=1e-3)  # the Gaussian modulation does something
    assert (attn[1, :, :, 3:] == 0).all()  # padded clips get exactly zero attention
    # Output = out_proj(attn @ W_v M_v) per head.
    v = ca.v_proj(memory).view(2, 5, 2, 4).transpose(1, 2)  # (B, h, L, dh)
    expected = ca.out_proj((attn @ v).transpose(1, 2).reshape(2, 3, 8))
    out, projected = ca(content, qpos, memory, mpos, vmask, modulation)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(projected, query)  # Q_C̄, for eq 6's residual


def make_decoder(**kw) -> SpanAwareRefineDecoder:
    args = dict(dim=8, nheads=2, ffn_dim=16, dropout=0.0, num_layers=2, num_align_points=3)
    args.update(kw)
    return SpanAwareRefineDecoder(**args).eval()


def decoder_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    content = torch.randn(2, 4, 8, generator=g)
    spans = torch.rand(2, 4, 2, generator=g) * 0.8 + 0.1
    memory = torch.randn(2, 6, 8, generator=g)
    vmask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    sentence = torch.randn(2, 8, generator=g)
    return content, spans, memory, vmask, sentence


def test_gaussian_mask_switch_equals_alpha_zero():
    # alpha = 0 makes the mask 1 on valid clips, i.e. no modulation: must equal use_gaussian_mask=False.
    torch.manual_seed(0)
    on = make_decoder(use_gaussian_mask=True, gaussian_alpha=0.0)
    off = make_decoder(use_gaussian_mask=False)
    off.load_state_dict(on.state_dict())
    inputs = decoder_inputs()
    with torch.no_grad():
        a, b = on(*inputs)[-1], off(*inputs)[-1]
        on.layers[0].gaussian_alpha = on.layers[1].gaussian_alpha = 2.0
        c = on(*inputs)[-1]
    assert torch.allclose(a[1], b[1], atol=1e-6)  # quality of the last layer
    assert not torch.allclose(a[1], c[1], atol=1e-4)  # alpha = 2 modulates


def test_span_enhance_switch():
    torch.manual_seed(0)
    assert make_decoder(use_span_enhance=False).layers[0].span_enhance is None
    on = make_decoder(use_span_enhance=True)
    off = make_decoder(use_span_enhance=False)
    off.load_state_dict(on.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(on(*decoder_inputs())[-1][1], off(*decoder_inputs())[-1][1], atol=1e-4)


def test_prediction_head_updates_anchor_in_logit_space():
    torch.manual_seed(0)
    dec = make_decoder()
    content, spans, memory, vmask, sentence = decoder_inputs()
    with torch.no_grad():
        outs = dec(content, spans, memory, vmask, sentence)
        # The last layer of MLP_3 starts at zero (DAB-DETR): every layer returns its input anchor.
        assert torch.allclose(outs[0][0], spans, atol=1e-6)
        assert torch.allclose(outs[1][0], spans, atol=1e-6)
        dec.span_head.layers[-1].bias.copy_(torch.tensor([1.0, -0.5]))
        outs = dec(content, spans, memory, vmask, sentence)
    shift = torch.tensor([1.0, -0.5])
    assert torch.allclose(outs[0][0], torch.sigmoid(inverse_sigmoid(spans) + shift), atol=1e-6)
    assert torch.allclose(outs[1][0], torch.sigmoid(inverse_sigmoid(outs[0][0]) + shift), atol=1e-6)
    q = outs[1][1]
    assert q.shape == (2, 4) and ((q > 0) & (q < 1)).all()


def test_refined_anchor_is_detached_between_layers():
    torch.manual_seed(0)
    dec = make_decoder(num_layers=2)
    content, spans, memory, vmask, sentence = decoder_inputs()
    spans = spans.clone().requires_grad_(True)
    outs = dec(content, spans, memory, vmask, sentence)
    (g0,) = torch.autograd.grad(outs[0][0].sum(), spans, retain_graph=True)
    assert g0.abs().sum() > 0  # the initial anchor gets gradients through the first layer
    # Layer 2's anchor term inverse_sigmoid(S^1) is detached: with MLP_3's last layer at zero, its
    # output equals S^1 but carries no gradient path from S^1 back to the initial anchors.
    (g1,) = torch.autograd.grad(outs[1][0].sum(), spans, allow_unused=True)
    assert g1 is None or g1.abs().sum() == 0


def test_self_attention_mask_blocks_queries():
    torch.manual_seed(0)
    dec = make_decoder()
    content, spans, memory, vmask, sentence = decoder_inputs()
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2, 2:] = True  # queries 0-1 cannot see 2-3
    with torch.no_grad():
        ref = dec(content, spans, memory, vmask, sentence, mask)
        content2, spans2 = content.clone(), spans.clone()
        content2[:, 2:] += 3.0
        spans2[:, 2:] = 0.5
        out = dec(content2, spans2, memory, vmask, sentence, mask)
    for (s_ref, q_ref), (s, q) in zip(ref, out):
        assert torch.equal(s_ref[:, :2], s[:, :2]) and torch.equal(q_ref[:, :2], q[:, :2])


def _one_head_attention(w_q: float) -> torch.nn.MultiheadAttention:
    """d = 2, one head, W_q = w_q·I, W_k = W_v = I, no biases, out_proj = I."""
    attn = torch.nn.MultiheadAttention(2, 1, dropout=0.0, batch_first=True)
    with torch.no_grad():
        attn.in_proj_weight.copy_(torch.cat([w_q * torch.eye(2), torch.eye(2), torch.eye(2)]))
        attn.in_proj_bias.zero_()
        identity_(attn.out_proj)
    return attn


def test_eq1_positions_after_the_projections_by_hand():
    from sadetr.model.layers import multihead_attention

    attn = _one_head_attention(2.0)
    content = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # C
    pos = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # P_S
    # eq 1: Q + P = 2C + P = [[3, 1], [0, 2]], K + P = C + P = [[2, 1], [0, 1]]
    # logits = (Q + P)(K + P)ᵀ / √2 = [[7, 1], [2, 2]] / √2; V = C
    out = multihead_attention(attn, content, content, None, True, pos_after_proj=pos)
    a = 1 / (1 + math.exp(-6 / math.sqrt(2)))  # softmax([7, 1] / √2)[0]
    assert torch.allclose(out, torch.tensor([[[a, 1 - a], [0.5, 0.5]]]), atol=1e-6)
    # DETR's form W_q (C + P) instead: [[4, 2], [0, 2]] (K + P)ᵀ = [[10, 2], [2, 2]] / √2
    before = multihead_attention(attn, content + pos, content, None, True)
    b = 1 / (1 + math.exp(-8 / math.sqrt(2)))
    assert torch.allclose(before, torch.tensor([[[b, 1 - b], [0.5, 0.5]]]), atol=1e-6)


def _capture(module: torch.nn.Module, store: dict, key: str) -> None:
    """Keep the first positional input of `module` in store[key] at each call."""
    module.register_forward_hook(lambda m, args, out: store.__setitem__(key, args[0]))


def test_eq6_residual_adds_the_projected_query_as_written():
    from sadetr.model.decoder import SpanAwareQueryRefiner

    for residual in ("query", "input"):
        torch.manual_seed(0)
        layer = SpanAwareQueryRefiner(8, 2, 16, 0.0, True, True, 2.0, 3, cross_residual=residual).eval()
        seen: dict = {}
        _capture(layer.norm2, seen, "norm2_in")  # C̃ before its LayerNorm
        layer.cross_attn.register_forward_hook(
            lambda m, args, out, seen=seen: seen.update(content=args[0], ca=out[0], query=out[1])
        )
        content, spans, memory, vmask, sentence = decoder_inputs()
        with torch.no_grad():
            layer(content, spans, torch.randn(2, 4, 8), memory, torch.randn(2, 6, 8), vmask, sentence)
        expected = seen["query"] if residual == "query" else seen["content"]  # Q_C̄ = W_q C̄, or C̄
        assert torch.allclose(seen["norm2_in"], expected + seen["ca"], atol=1e-6)
        assert torch.allclose(seen["query"], layer.cross_attn.q_proj(seen["content"]), atol=1e-6)
        assert not torch.allclose(seen["query"], seen["content"], atol=1e-3)


def test_layer_uses_eq1_form_of_its_switch():
    from sadetr.model.decoder import SpanAwareQueryRefiner

    outs = {}
    for form in ("after_proj", "before_proj"):
        torch.manual_seed(0)
        layer = SpanAwareQueryRefiner(8, 2, 16, 0.0, False, False, 2.0, 3, self_attn_pos=form).eval()
        seen: dict = {}
        _capture(layer.norm1, seen, "norm1_in")  # C + self-attention output
        content, spans, memory, vmask, sentence = decoder_inputs()
        pos = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            layer(content, spans, pos, memory, torch.randn(2, 6, 8), vmask, sentence)
        sa = seen["norm1_in"] - content
        # explicit eq 1 per head: softmax((W_q C + b_q + P)(W_k C + b_k + P)ᵀ / √d_h)(W_v C + b_v), out_proj
        w, b = layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias
        src = content if form == "after_proj" else content + pos
        q, k = src @ w[:8].T + b[:8], src @ w[8:16].T + b[8:16]
        if form == "after_proj":
            q, k = q + pos, k + pos
        v = content @ w[16:].T + b[16:]
        heads = []
        for h in range(2):
            sl = slice(4 * h, 4 * h + 4)
            heads.append(((q[..., sl] @ k[..., sl].transpose(1, 2)) / 2.0).softmax(-1) @ v[..., sl])
        expected = layer.self_attn.out_proj(torch.cat(heads, dim=-1))
        assert torch.allclose(sa, expected, atol=1e-5)
        outs[form] = sa
    assert not torch.allclose(outs["after_proj"], outs["before_proj"], atol=1e-3)
