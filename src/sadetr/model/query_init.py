"""Dual Path Query Initializer of SA-DETR (paper 3.3, docs/readings.md "3.3").

Owns: the direct query group (instance-related anchors `S_d = sigmoid(MLP_3(M_g))`, or DAB-DETR learnable
anchors, and the zero-initialised content `C_d`) and the noise group's content vector (initialised to
ones). The noise anchors themselves and the attention mask come from `denoising.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sadetr.model.layers import MLP
from sadetr.model.span_ops import inverse_sigmoid


class DualPathQueryInitializer(nn.Module):
    """Direct group anchors and content; noise group content (3.3)."""

    def __init__(self, dim: int, num_queries: int, anchor_init: str = "instance") -> None:
        super().__init__()
        if anchor_init not in ("instance", "learnable"):
            raise ValueError(f"anchor_init must be 'instance' or 'learnable', got {anchor_init!r}")
        self.num_queries = num_queries
        self.anchor_init = anchor_init
        if anchor_init == "instance":
            self.anchor_mlp: MLP | None = MLP(dim, dim, num_queries * 2, 3)  # MLP_3 on the fusion token M_g
            self.anchor_embed = None
        else:
            self.anchor_mlp = None
            # DAB-DETR learnable anchors, stored in logit space; uniform in (0, 1) after the sigmoid.
            self.anchor_embed = nn.Embedding(num_queries, 2)
            with torch.no_grad():
                self.anchor_embed.weight.copy_(inverse_sigmoid(torch.rand(num_queries, 2)))
        self.direct_content = nn.Parameter(torch.zeros(num_queries, dim))  # C_d, all zeros
        self.noise_content = nn.Parameter(torch.ones(dim))  # noise group content, all ones

    def direct(self, token: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """M_g [B, d] -> (anchors [B, Nq, 2] cxw, content [B, Nq, d], init_spans [B, Nq, 2] or None)."""
        bsz = token.shape[0]
        if self.anchor_mlp is not None:
            logits = self.anchor_mlp(token).view(bsz, self.num_queries, 2)  # (B, Nq, 2)
            anchors = torch.sigmoid(logits)  # S_d = sigmoid(MLP_3(M_g)) (B, Nq, 2)
            init_spans: Tensor | None = anchors
        else:
            assert self.anchor_embed is not None  # anchor_init == "learnable"
            anchors = torch.sigmoid(self.anchor_embed.weight).expand(bsz, -1, -1)  # (B, Nq, 2)
            init_spans = None
        content = self.direct_content.expand(bsz, -1, -1)  # (B, Nq, d)
        return anchors, content, init_spans

    def noise(self, bsz: int, num_noise: int) -> Tensor:
        """Content of the noise group: the learned vector for every noise query -> [B, N_dn, d]."""
        return self.noise_content.expand(bsz, num_noise, -1)
