"""Building blocks shared by SA-DETR and the baselines: the input projection stack, the DETR MLP, the
Transformer FFN, and multi-head attention on `nn.MultiheadAttention`'s weights without its overhead.
One definition each, so that every model's parameters have the same layout.
"""

from __future__ import annotations

import itertools
import math

import torch.nn.functional as F
from torch import Tensor, nn


class LinearLayer(nn.Module):
    """One input-projection block: LayerNorm, Dropout, Linear, optional ReLU (Moment-DETR/QD-DETR)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, relu: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(self.dropout(self.norm(x)))
        return F.relu(x) if self.relu else x


def input_projection(in_dim: int, hidden_dim: int, n_layers: int, dropout: float) -> nn.Sequential:
    """The paper's input "MLP" (3.2): `n_layers` stacked LinearLayers, no ReLU after the last one.

    As in Moment-DETR/QD-DETR, every block uses the same (input) dropout rate.
    """
    if n_layers < 1:
        raise ValueError(f"n_input_proj must be >= 1, got {n_layers}")
    dims = [in_dim] + [hidden_dim] * n_layers
    return nn.Sequential(
        *[LinearLayer(dims[i], dims[i + 1], dropout, relu=i < n_layers - 1) for i in range(n_layers)]
    )


class FeedForward(nn.Module):
    """Transformer FFN: Linear, ReLU, Dropout, Linear."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLP(nn.Module):
    """`num_layers` Linear layers with ReLU between (DETR's MLP); MLP_2 / MLP_3 of the paper."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x

    @property
    def output_layer(self) -> nn.Linear:
        """The last Linear layer (the span heads zero-initialise it)."""
        layer = self.layers[-1]
        assert isinstance(layer, nn.Linear)
        return layer


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> Tensor:
    """softmax(q kᵀ / √d_h, masked) v per head, dropout `dropout_p` on the weights.

    q: [B, h, Lq, d_h]; k, v: [B, h, Lk, d_h]; mask: bool, broadcastable to [B, h, Lq, Lk], True = attend,
    or None (every key) -> [B, h, Lq, d_h]; a query with no key to attend gets 0 (as
    `F.scaled_dot_product_attention`). A mask broadcast along its last dimension must be None instead:
    CUDA's memory-efficient SDPA kernel refuses a bias whose last dimension has stride 0.
    Without dropout: `F.scaled_dot_product_attention` (its fused CPU kernel). With dropout, SDPA runs
    this math written out on the CPU anyway, but through a `_safe_softmax` that scans the whole logit
    tensor twice more; here the same math, and the same dropout mask (`F.dropout` on the same weights
    tensor draws the same random numbers), with a plain softmax.
    """
    if dropout_p == 0.0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    logits = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)  # (B, h, Lq, Lk)
    if mask is None:
        return F.dropout(logits.softmax(dim=-1), dropout_p) @ v  # (B, h, Lq, d_h)
    # A query with no key attends to all keys instead (no NaN row), and its output is set to 0 after:
    # the small mask and the [.., Lq, d_h] output are touched, not the [.., Lq, Lk] weights.
    no_key = ~mask.any(dim=-1, keepdim=True)  # (B, 1 or h, 1 or Lq, 1)
    weights = logits.masked_fill(~(mask | no_key), float("-inf")).softmax(dim=-1)
    return (F.dropout(weights, dropout_p) @ v).masked_fill(no_key, 0.0)  # (B, h, Lq, d_h)


def multihead_attention(
    attn: nn.MultiheadAttention,
    q: Tensor,
    v: Tensor,
    mask: Tensor | None,
    keys_are_queries: bool,
    query_major: bool = False,
    pos_after_proj: Tensor | None = None,
) -> Tensor:
    """`attn`'s math (its own weights, so its state_dict) through `attention`, without its mask checks.

    q: [B, Lq, d]; v: [B, Lk, d]; the keys are q (self-attention, Lk = Lq) or v (cross-attention), so
    one in-projection GEMM serves both; mask: bool [B, 1, 1 or Lq, Lk] (True = attend), or None (every
    key) -> [B, Lq, d]. Attention dropout is `attn.dropout` in training.

    pos_after_proj [B, Lq, d] (self-attention only): added to the projected queries and keys,
    `(W_q q + b_q + pos)(W_k q + b_k + pos)ᵀ` (SA-DETR's eq 1), instead of being part of `q`.

    query_major: the result is laid out in memory as [Lq, B, d] (a transposed view), as
    `nn.MultiheadAttention(batch_first=True)` returns it. A dropout after it draws its mask in memory
    order, so the layout decides which random number lands on which element: the decoder keeps the
    layout that it had with `nn.MultiheadAttention` and so its random streams.
    """
    d, h = attn.embed_dim, attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias  # (3d, d), (3d,)
    bsz, lq, lk = q.shape[0], q.shape[1], v.shape[1]
    if keys_are_queries:
        q_, k_ = F.linear(q, w[: 2 * d], b[: 2 * d]).chunk(2, dim=-1)  # (B, Lq, d) each
        v_ = F.linear(v, w[2 * d :], b[2 * d :])  # (B, Lk, d)
        if pos_after_proj is not None:
            q_, k_ = q_ + pos_after_proj, k_ + pos_after_proj  # (B, Lq, d) each
    else:
        if pos_after_proj is not None:
            raise ValueError("pos_after_proj is for self-attention (keys_are_queries=True)")
        q_ = F.linear(q, w[:d], b[:d])  # (B, Lq, d)
        k_, v_ = F.linear(v, w[d:], b[d:]).chunk(2, dim=-1)  # (B, Lk, d) each
    heads = (q_.view(bsz, lq, h, d // h), k_.view(bsz, lk, h, d // h), v_.view(bsz, lk, h, d // h))
    qh, kh, vh = (x.transpose(1, 2) for x in heads)  # (B, h, L, d/h)
    out = attention(qh, kh, vh, mask, attn.dropout if attn.training else 0.0)  # (B, h, Lq, d/h)
    if query_major:
        return attn.out_proj(out.permute(2, 0, 1, 3).reshape(lq, bsz, d)).transpose(0, 1)  # (B, Lq, d)
    return attn.out_proj(out.transpose(1, 2).reshape(bsz, lq, d))  # (B, Lq, d)
