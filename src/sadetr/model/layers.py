"""Building blocks shared by SA-DETR and the baselines: the input projection stack, the DETR MLP, the
Transformer FFN. One definition each, so that every model's parameters have the same layout.
"""

from __future__ import annotations

import itertools

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
