"""The decoder's fast path equals the straightforward path, outputs and gradients, on a fixed batch.

Straightforward path = the math as first written: the Span Based Enhance Block materialises the sampled
clips M_s [B, Q, N_s, d] (Temporal Align) and projects every one of them with W_v.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sadetr.model.decoder import SpanBasedEnhanceBlock
from sadetr.model.span_ops import temporal_align


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
