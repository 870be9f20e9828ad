"""Dual Path Query Initializer: instance anchors from M_g, learnable anchors, content initialisation."""

from __future__ import annotations

import pytest
import torch

from sadetr.model.query_init import DualPathQueryInitializer


def test_instance_anchors_are_sigmoid_of_mlp_of_token():
    torch.manual_seed(0)
    qi = DualPathQueryInitializer(4, num_queries=3, anchor_init="instance")
    token = torch.randn(2, 4)
    anchors, content, init_spans = qi.direct(token)
    raw = qi.anchor_mlp(token)  # (B, 2 Nq)
    # query i gets (raw[2i], raw[2i+1]) through the sigmoid
    assert torch.allclose(anchors[:, 1], torch.sigmoid(raw[:, 2:4]))
    assert init_spans is anchors
    assert anchors.shape == (2, 3, 2) and content.shape == (2, 3, 4)
    assert not torch.allclose(anchors[0], anchors[1])  # instance related: depends on M_g
    assert torch.equal(content, torch.zeros(2, 3, 4))  # C_d initialised to zeros


def test_learnable_anchors_ignore_token_and_give_no_init_spans():
    torch.manual_seed(0)
    qi = DualPathQueryInitializer(4, num_queries=5, anchor_init="learnable")
    anchors, _, init_spans = qi.direct(torch.randn(2, 4))
    assert init_spans is None
    assert torch.equal(anchors[0], anchors[1])
    assert torch.allclose(anchors[0], torch.sigmoid(qi.anchor_embed.weight))
    assert ((anchors > 0) & (anchors < 1)).all()
    loss = anchors.sum()
    loss.backward()
    assert qi.anchor_embed.weight.grad is not None  # DAB-DETR anchors are learned


def test_noise_content_is_ones_and_shared():
    qi = DualPathQueryInitializer(4, num_queries=2)
    noise = qi.noise(3, 7)
    assert noise.shape == (3, 7, 4) and torch.equal(noise, torch.ones(3, 7, 4))


def test_unknown_anchor_init():
    with pytest.raises(ValueError, match="anchor_init"):
        DualPathQueryInitializer(4, 2, anchor_init="random")
