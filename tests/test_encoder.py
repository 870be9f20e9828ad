"""Multi Modal Align Encoder: hand-computable checks of its blocks, the negative pass and padding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sadetr.model.encoder import (
    AttentionPooling,
    LocalEnhanceBlock,
    MultiModalAlignEncoder,
    SaliencyHead,
    input_projection,
    masked_mean,
)


def small_encoder(**kw) -> MultiModalAlignEncoder:
    args = dict(video_dim=6, text_dim=5, hidden_dim=8, nheads=2, ffn_dim=16, dropout=0.0, input_dropout=0.0)
    args.update(kw)
    return MultiModalAlignEncoder(**args)


def test_input_projection_matches_moment_detr_layout():
    torch.manual_seed(0)
    proj = input_projection(5, 4, 2, dropout=0.5).eval()
    x = torch.randn(3, 5)
    l1, l2 = proj[0], proj[1]
    h = F.relu(l1.linear(F.layer_norm(x, (5,), l1.norm.weight, l1.norm.bias)))  # ReLU after block 1
    expected = l2.linear(F.layer_norm(h, (4,), l2.norm.weight, l2.norm.bias))  # no ReLU after the last
    assert torch.allclose(proj(x), expected, atol=1e-6)
    assert (proj(x) < 0).any()  # the last block has no ReLU
    assert [m.dropout.p for m in proj] == [0.5, 0.5]


def test_attention_pooling_by_hand():
    pool = AttentionPooling(2)
    with torch.no_grad():
        pool.score.weight.copy_(torch.tensor([[1.0, 0.0]]))  # score = first channel
    x = torch.tensor([[[0.0, 1.0], [math.log(3.0), 5.0], [100.0, 7.0]]])  # third token is padding
    mask = torch.tensor([[True, True, False]])
    # softmax over scores (0, log 3) -> weights (1/4, 3/4)
    expected = 0.25 * x[0, 0] + 0.75 * x[0, 1]
    assert torch.allclose(pool(x, mask)[0], expected, atol=1e-6)


def test_saliency_head_is_scaled_dot_product_with_identity_weights():
    head = SaliencyHead(4)
    with torch.no_grad():
        for lin in (head.clip_proj, head.token_proj):
            lin.weight.copy_(torch.eye(4))
            lin.bias.zero_()
    clips = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]]])
    token = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    # <m_i, m_g> / sqrt(4): (2) / 2 = 1, (2 + 2 + 0 - 4) / 2 = 0
    assert torch.allclose(head(clips, token), torch.tensor([[1.0, 0.0]]))


def test_local_enhance_block_by_hand():
    block = LocalEnhanceBlock(3)
    with torch.no_grad():
        for conv in block.convs:
            conv.bias.zero_()
            conv.weight.zero_()
        block.convs[0].weight[:, :, 0].copy_(torch.eye(3))  # k=1 identity
        for c in range(3):
            block.convs[1].weight[c, c, :] = 1.0  # k=3: per-channel sum of the clip and its neighbours
        block.convs[2].weight[:, :, 0].copy_(2 * torch.eye(3))  # k=1: times 2
    x = torch.tensor([[[1.0, 2.0, 0.0], [3.0, 4.0, 1.0], [5.0, 6.0, -2.0], [100.0, 100.0, 100.0]]])
    mask = torch.tensor([[True, True, True, False]])  # last clip is padding: must be zeroed before each conv
    # conv1 + ReLU: [[1,2,0],[3,4,1],[5,6,0],[0,0,0]] (padding zeroed, -2 clipped)
    # conv2 (zero 'same' padding) + ReLU: [[4,6,1],[9,12,1],[8,10,1],[5,6,0]]
    # conv3 on the masked input (row 3 zeroed), times 2: [[8,12,2],[18,24,2],[16,20,2],[0,0,0]]
    residual = torch.tensor([[9.0, 14.0, 2.0], [21.0, 28.0, 3.0], [21.0, 26.0, 0.0], [100.0, 100.0, 100.0]])
    expected = F.layer_norm(residual, (3,))
    out = block(x, mask)[0]
    assert torch.allclose(out[:3], expected[:3], atol=1e-5)


def test_negative_pass_pairs_video_with_next_query():
    torch.manual_seed(0)
    enc = small_encoder()
    video, text = torch.randn(3, 7, 6), torch.randn(3, 4, 5)
    vmask = torch.ones(3, 7, dtype=torch.bool)
    tmask = torch.tensor([[True] * 4, [True, True, False, False], [True, True, True, False]])
    enc.train()  # dropout is 0, so train and eval compute the same function
    neg = enc(video, vmask, text, tmask).saliency_scores_neg
    enc.eval()
    assert enc(video, vmask, text, tmask).saliency_scores_neg is None  # only in training
    ref = enc(video, vmask, text.roll(-1, 0), tmask.roll(-1, 0)).saliency_scores  # text of (b + 1) % B
    assert torch.allclose(neg, ref, atol=1e-5)
    enc.train()
    assert enc(video[:1], vmask[:1], text[:1], tmask[:1]).saliency_scores_neg is None  # B = 1


def test_fusion_layers_are_shared_by_both_directions():
    enc = small_encoder(n_fusion_layers=2)
    assert len(enc.fusion_layers) == 2
    video, text = torch.randn(2, 5, 6), torch.randn(2, 3, 5)
    vmask, tmask = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)
    enc.eval()
    before = enc(video, vmask, text, tmask)
    with torch.no_grad():
        enc.fusion_layers[1].norm2.bias.add_(1.0)  # perturb the shared weights
    after = enc(video, vmask, text, tmask)
    assert not torch.allclose(before.clip_text_sim, after.clip_text_sim)  # F̂_v changed
    assert not torch.allclose(before.sentence, after.sentence)  # F̂_t (hence M_t) changed too


@pytest.mark.parametrize("vtc_stage", ["before", "after"])
def test_alignment_embeddings_follow_stage(vtc_stage):
    torch.manual_seed(1)
    enc = small_encoder(vtc_stage=vtc_stage, ctm_stage="after").eval()
    video, text = torch.randn(2, 5, 6), torch.randn(2, 3, 5)
    vmask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    tmask = torch.ones(2, 3, dtype=torch.bool)
    out = enc(video, vmask, text, tmask)
    if vtc_stage == "before":
        expected = masked_mean(enc.video_proj(video), vmask)
        assert torch.allclose(out.vtc["video_emb"], expected, atol=1e-6)
    assert torch.allclose(out.vtc["logit_scale"], torch.tensor(math.log(1 / 0.07)))
    # L_ctm after fusion: the criterion's cosines of (clip_emb, sent_emb) are the paper's S.
    cos = F.cosine_similarity(out.ctm["clip_emb"], out.ctm["sent_emb"][:, None], dim=-1)
    assert torch.allclose(cos, out.clip_text_sim, atol=1e-6)
    off = small_encoder(use_vtc=False, use_ctm=False).eval()(video, vmask, text, tmask)
    assert off.vtc is None and off.ctm is None


def test_encoder_padding_invariance():
    torch.manual_seed(2)
    enc = small_encoder().eval()
    video, text = torch.randn(1, 5, 6), torch.randn(1, 3, 5)
    vmask, tmask = torch.ones(1, 5, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool)
    ref = enc(video, vmask, text, tmask)
    pv = torch.cat([video, 50 * torch.randn(1, 4, 6)], 1)
    pt = torch.cat([text, 50 * torch.randn(1, 2, 5)], 1)
    pvm = torch.cat([vmask, torch.zeros(1, 4, dtype=torch.bool)], 1)
    ptm = torch.cat([tmask, torch.zeros(1, 2, dtype=torch.bool)], 1)
    out = enc(pv, pvm, pt, ptm)
    assert torch.allclose(out.memory[:, :5], ref.memory, atol=1e-5)
    assert torch.allclose(out.token, ref.token, atol=1e-5)
    assert torch.allclose(out.sentence, ref.sentence, atol=1e-5)
    assert torch.allclose(out.saliency_scores[:, :5], ref.saliency_scores, atol=1e-5)


def test_local_enhance_switch():
    torch.manual_seed(3)
    video, text = torch.randn(2, 5, 6), torch.randn(2, 3, 5)
    vmask, tmask = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)
    enc = small_encoder(use_local_enhance=False).eval()
    assert enc.local_enhance is None
    out = enc(video, vmask, text, tmask)
    fused = enc.fuse_video(
        torch.cat([enc.fusion_token.expand(2, 1, -1), enc.video_proj(video)], 1),
        enc.video_positions(vmask),
        enc.text_proj(text),
        tmask,
    )
    enhanced, _ = enc.global_enhance(fused, torch.ones(2, 6, dtype=torch.bool), enc.video_positions(vmask))
    assert torch.allclose(out.memory, enhanced[:, 1:], atol=1e-6)  # M_v = M̂_v clips without the block
