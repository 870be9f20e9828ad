"""The decoder's fast path equals the straightforward path, outputs and gradients, on a fixed batch.

Straightforward path = the math as first written: the Span Based Enhance Block materialises the sampled
clips M_s [B, Q, N_s, d] (Temporal Align) and projects every one of them with W_v; the self-attention is
an `nn.MultiheadAttention` call with the denoising mask repeated per head; eq 5's mask keeps its
subnormal tail. With dropout, the same seed must give the same result (the same random numbers drawn).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sadetr.model.decoder import SpanAwareRefineDecoder, SpanBasedEnhanceBlock, clip_position_embedding
from sadetr.model.denoising import dn_attention_mask
from sadetr.model.span_ops import (
    GAUSSIAN_MASK_FLOOR,
    clip_times,
    gaussian_mask,
    inverse_sigmoid,
    span_sine_embedding,
    temporal_align,
)


def span_enhance_reference(
    block: SpanBasedEnhanceBlock,
    content: Tensor,
    spans: Tensor,
    memory: Tensor,
    mask: Tensor,
    sentence: Tensor,
) -> Tensor:
    """Eq 2-3 as written: M_s = TemporalAlign(M_v), s = ⟨W_v M_s, W_t M_t⟩ / √d, M̂_s = mean_k s_k M_s,k."""
    sampled = temporal_align(memory, spans, mask, block.num_points)  # (B, Q, N_s, d)
    scores = torch.einsum("bqkd,bd->bqk", block.video_proj(sampled), block.text_proj(sentence))
    scores = scores / math.sqrt(content.shape[-1])
    pooled = (sampled * scores[..., None]).mean(dim=2)  # (B, Q, d)
    gate = block.gate(content, pooled)
    return block.fuse_proj((pooled + content) * gate) + content


def _enhance_inputs(seed: int = 0) -> tuple[Tensor, ...]:
    """Two videos (one padded with large values), spans inside, across the end and beyond both ends."""
    g = torch.Generator().manual_seed(seed)
    bsz, num_q, length, dim = 2, 5, 9, 16
    content = torch.randn(bsz, num_q, dim, generator=g, dtype=torch.float64)
    memory = torch.randn(bsz, length, dim, generator=g, dtype=torch.float64)
    mask = torch.ones(bsz, length, dtype=torch.bool)
    mask[1, 6:] = False
    memory[1, 6:] = 50.0  # any read of the padding shows
    spans = torch.tensor(
        [
            [[0.5, 0.2], [0.1, 0.3], [0.9, 0.4], [0.33, 0.05], [0.5, 1.4]],
            [[0.4, 0.6], [0.95, 0.2], [0.02, 0.1], [0.61, 0.17], [0.7, 0.02]],
        ],
        dtype=torch.float64,
    )
    sentence = torch.randn(bsz, dim, generator=g, dtype=torch.float64)
    return content, spans, memory, mask, sentence


def _grads(block: SpanBasedEnhanceBlock, forward, inputs: tuple[Tensor, ...]) -> tuple[Tensor, dict]:
    content, spans, memory, mask, sentence = (x.detach().clone() for x in inputs)
    leaves = {"content": content, "spans": spans, "memory": memory, "sentence": sentence}
    for x in leaves.values():
        x.requires_grad_(True)
    block.zero_grad(set_to_none=True)
    out = forward(content, spans, memory, mask, sentence)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    (out * weight).sum().backward()
    grads = {k: v.grad for k, v in leaves.items()}
    grads.update({n: p.grad for n, p in block.named_parameters()})
    return out.detach(), grads


def test_span_enhance_fast_path_equals_reference_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    block = SpanBasedEnhanceBlock(16, num_points=4).double()
    inputs = _enhance_inputs()
    fast, fast_grad = _grads(block, block, inputs)
    ref, ref_grad = _grads(block, lambda *a: span_enhance_reference(block, *a), inputs)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    assert fast_grad.keys() == ref_grad.keys()
    for name in ref_grad:
        assert ref_grad[name] is not None and fast_grad[name] is not None, name
        torch.testing.assert_close(fast_grad[name], ref_grad[name], rtol=1e-9, atol=1e-10, msg=name)
    assert ref_grad["spans"].abs().sum() > 0  # the spans' gradient (through the interpolation) is compared
    assert ref_grad["memory"][1, 6:].abs().sum() == 0  # and neither path reads the padding


def test_span_enhance_fast_path_float32_with_gate_scale() -> None:
    torch.manual_seed(1)
    block = SpanBasedEnhanceBlock(16, num_points=10, gate_scale=True)
    content, spans, memory, mask, sentence = (
        x.float() if x.is_floating_point() else x for x in _enhance_inputs(1)
    )
    with torch.no_grad():
        fast = block(content, spans, memory, mask, sentence)
        ref = span_enhance_reference(block, content, spans, memory, mask, sentence)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- whole decoder, dropout


def refiner_reference(layer, content, spans, span_pos, memory, memory_pos, vmask, sentence, blocked):
    """One refiner layer as first written: nn.MultiheadAttention with the mask repeated per head (so eq 1
    in the `before_proj` form, the one nn.MultiheadAttention computes), the materialised Temporal Align,
    eq 5's mask straight from the formula (no floor), eq 6's residual of the layer's reading."""
    assert layer.self_attn_pos == "before_proj"
    qk = content + span_pos
    mask = None if blocked is None else blocked.repeat_interleave(layer.self_attn.num_heads, dim=0)
    sa, _ = layer.self_attn(qk, qk, content, attn_mask=mask, need_weights=False)
    content = layer.norm1(content + layer.dropout1(sa))
    content = span_enhance_reference(layer.span_enhance, content, spans, memory, vmask, sentence)
    t = clip_times(vmask, layer.mask_clip_time)  # (B, L)
    c, w = spans[..., 0:1], spans[..., 1:2].clamp(min=1e-4)
    gauss = torch.exp(-layer.gaussian_alpha * (t[:, None, :] - c) ** 2 / w**2) * vmask[:, None, :]
    ca, query = layer.cross_attn(content, span_pos, memory, memory_pos, vmask, gauss)
    content = layer.norm2((query if layer.cross_residual == "query" else content) + layer.dropout2(ca))
    return layer.norm3(content + layer.dropout3(layer.ffn(content)))


def decoder_reference(dec: SpanAwareRefineDecoder, content, spans, memory, vmask, sentence, blocked):
    memory_pos = clip_position_embedding(vmask, dec.dim, dec.position_mode).to(memory.dtype)
    outs = []
    for layer in dec.layers:
        span_pos = dec.span_pos_mlp(span_sine_embedding(spans, dec.dim).to(content.dtype))
        content = refiner_reference(
            layer, content, spans, span_pos, memory, memory_pos, vmask, sentence, blocked
        )
        new_spans = torch.sigmoid(inverse_sigmoid(spans) + dec.span_head(content))
        outs.append((new_spans, torch.sigmoid(dec.quality_head(content)).squeeze(-1)))
        spans = new_spans.detach()
    return outs


def _decoder_inputs(dtype: torch.dtype) -> tuple[Tensor, ...]:
    """3 samples, 75 clips (one padded), 4 direct + 2 groups x 2 polarities x 3 noise queries with
    different GT counts, narrow spans (so eq 5's tail reaches the subnormal range)."""
    g = torch.Generator().manual_seed(3)
    bsz, length, dim, num_q = 3, 75, 32, 4
    pos_valid = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    blocked = dn_attention_mask(num_q, 2, 3, True, pos_valid)  # (B, Q, Q)
    total = blocked.shape[1]
    centres = torch.rand(bsz, total, generator=g) * 0.8 + 0.1
    widths = torch.rand(bsz, total, generator=g) * 0.05 + 0.01
    spans = torch.stack([centres, widths], -1).to(dtype)
    vmask = torch.ones(bsz, length, dtype=torch.bool)
    vmask[2, 50:] = False
    memory = torch.randn(bsz, length, dim, generator=g, dtype=dtype)
    content = torch.randn(bsz, total, dim, generator=g, dtype=dtype)
    sentence = torch.randn(bsz, dim, generator=g, dtype=dtype)
    return content, spans, memory, vmask, sentence, blocked


def _decoder_run(dec, forward, inputs, seed: int) -> tuple[list, dict]:
    content, spans, memory, vmask, sentence, blocked = (x.detach().clone() for x in inputs)
    leaves = {"content": content, "spans": spans, "memory": memory, "sentence": sentence}
    for x in leaves.values():
        x.requires_grad_(True)
    dec.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the dropout masks
    outs = forward(content, spans, memory, vmask, sentence, blocked)
    g = torch.Generator().manual_seed(11)
    loss = sum((s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum() + q.sum() for s, q in outs)
    loss.backward()
    grads = {k: v.grad for k, v in leaves.items()}
    grads.update({n: p.grad for n, p in dec.named_parameters() if p.grad is not None})
    return [(s.detach(), q.detach()) for s, q in outs], grads


def _decoder(dropout: float, dtype: torch.dtype) -> SpanAwareRefineDecoder:
    torch.manual_seed(5)
    # eq 1 in the form nn.MultiheadAttention computes (the reference's), every other reading the paper's
    dec = SpanAwareRefineDecoder(
        32, 4, 64, dropout=dropout, num_layers=2, num_align_points=10, self_attn_pos="before_proj"
    ).to(dtype)
    for p in dec.parameters():  # every parameter random (MLP_3's last layer starts at zero)
        torch.nn.init.normal_(p, std=0.2)
    return dec.train()


def _assert_same(fast, ref, rtol: float, atol: float) -> None:
    (fast_out, fast_grad), (ref_out, ref_grad) = fast, ref
    for layer, ((s, q), (s_ref, q_ref)) in enumerate(zip(fast_out, ref_out, strict=True)):
        torch.testing.assert_close(s, s_ref, rtol=rtol, atol=atol, msg=f"spans, layer {layer}")
        torch.testing.assert_close(q, q_ref, rtol=rtol, atol=atol, msg=f"quality, layer {layer}")
    assert fast_grad.keys() == ref_grad.keys()
    for name in ref_grad:
        torch.testing.assert_close(fast_grad[name], ref_grad[name], rtol=rtol, atol=atol, msg=name)


def test_decoder_fast_path_equals_reference_float64() -> None:
    dec = _decoder(0.0, torch.float64)
    inputs = _decoder_inputs(torch.float64)
    fast = _decoder_run(dec, dec, inputs, 0)
    ref = _decoder_run(dec, lambda *a: decoder_reference(dec, *a), inputs, 0)
    _assert_same(fast, ref, rtol=1e-9, atol=1e-10)
    assert ref[1]["spans"].abs().sum() > 0  # the initial anchors' gradient is compared too


def test_decoder_fast_path_draws_the_same_dropout_masks() -> None:
    """Training with dropout: the same seed gives the same outputs and gradients, so the fast path draws
    the same random numbers in the same order as nn.MultiheadAttention and nn.Dropout did."""
    dec = _decoder(0.3, torch.float32)
    inputs = _decoder_inputs(torch.float32)
    fast = _decoder_run(dec, dec, inputs, 0)
    ref = _decoder_run(dec, lambda *a: decoder_reference(dec, *a), inputs, 0)
    _assert_same(fast, ref, rtol=1e-4, atol=1e-5)
    other_seed = _decoder_run(dec, dec, inputs, 1)
    assert not torch.allclose(other_seed[0][-1][0], fast[0][-1][0])  # dropout is active


def test_gaussian_mask_floor_leaves_no_subnormals_and_changes_nothing_above_it() -> None:
    _, spans, _, vmask, _, _ = _decoder_inputs(torch.float32)
    mask = gaussian_mask(spans, vmask, 2.0)
    t = clip_times(vmask, "end")
    c, w = spans[..., 0:1], spans[..., 1:2]
    plain = torch.exp(-2.0 * (t[:, None, :] - c) ** 2 / w**2) * vmask[:, None, :]
    tiny = torch.finfo(torch.float32).tiny
    assert ((plain > 0) & (plain < tiny)).any()  # the formula alone gives subnormals on this input
    assert not ((mask > 0) & (mask < tiny)).any()
    torch.testing.assert_close(mask, plain, rtol=0, atol=GAUSSIAN_MASK_FLOOR)
    assert torch.equal(mask[plain >= GAUSSIAN_MASK_FLOOR], plain[plain >= GAUSSIAN_MASK_FLOOR])
