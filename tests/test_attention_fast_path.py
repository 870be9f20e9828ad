"""`layers.attention` / `layers.multihead_attention` equal `F.scaled_dot_product_attention` and
`nn.MultiheadAttention`: outputs and gradients, with and without dropout (the same seed must draw the
same dropout masks), with key-padding and per-query masks, and a query that sees no key."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from sadetr.model.layers import attention, multihead_attention


def _qkv(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(3, 4, n, 8, generator=g) for n in (6, 9, 9))
    mask = torch.rand(3, 1, 6, 9, generator=g) > 0.3  # (B, 1, Lq, Lk) per query
    mask[0, 0, 2] = False  # a query that sees no key
    return q, k, v, mask


def _run(fn, tensors: tuple[Tensor, ...], seed: int) -> tuple[Tensor, list[Tensor]]:
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    torch.manual_seed(seed)
    out = fn(*leaves)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("key_padding", [False, True])
def test_attention_equals_sdpa(dropout: float, key_padding: bool) -> None:
    q, k, v, mask = _qkv(0)
    if key_padding:
        mask = mask[:, :, :1]  # (B, 1, 1, Lk)
    ours = _run(lambda a, b, c: attention(a, b, c, mask, dropout), (q, k, v), 4)
    sdpa = _run(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, mask, dropout), (q, k, v), 4)
    torch.testing.assert_close(ours[0], sdpa[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(ours[1], sdpa[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if not key_padding:
        assert torch.equal(ours[0][0, :, 2], torch.zeros_like(ours[0][0, :, 2]))  # no key: 0, not NaN


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_attention_without_mask_equals_an_all_true_mask(dropout: float) -> None:
    """mask=None (the decoder's self-attention without denoising queries) is the all-true mask: the same
    output, gradients and dropout draws. (A broadcast all-true mask has stride 0 in its last dimension,
    which CUDA's memory-efficient SDPA kernel refuses: fp32 inference on a GPU crashed with it.)"""
    q, k, v, _ = _qkv(1)
    everything = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    none = _run(lambda a, b, c: attention(a, b, c, None, dropout), (q, k, v), 5)
    full = _run(lambda a, b, c: attention(a, b, c, everything, dropout), (q, k, v), 5)
    torch.testing.assert_close(none[0], full[0], rtol=1e-6, atol=1e-7)
    for a, b in zip(none[1], full[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("keys_are_queries", [True, False])
def test_multihead_attention_equals_nn_multihead_attention_with_dropout(keys_are_queries: bool) -> None:
    """In training, with a dropout after it (as the layers have): the same seed, the same result, for the
    decoder's layout (query-major, as nn.MultiheadAttention returns) and a per-query mask."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, dropout=0.3, batch_first=True).train()
    g = torch.Generator().manual_seed(1)
    x, mem = torch.randn(3, 6, 32, generator=g), torch.randn(3, 6, 32, generator=g)
    blocked = torch.rand(3, 6, 6, generator=g) < 0.3
    blocked[:, :, 0] = False

    def reference(x: Tensor, mem: Tensor) -> Tensor:
        k = x if keys_are_queries else mem
        out, _ = mha(x, k, mem, attn_mask=blocked.repeat_interleave(4, dim=0), need_weights=False)
        return F.dropout(out, 0.5)

    def fast(x: Tensor, mem: Tensor) -> Tensor:
        out = multihead_attention(mha, x, mem, ~blocked[:, None], keys_are_queries, query_major=True)
        return F.dropout(out, 0.5)

    ours, ref = _run(fast, (x, mem), 2), _run(reference, (x, mem), 2)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(ours[1], ref[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_run(fast, (x, mem), 3)[0], ours[0])  # the dropout is active
