"""The encoder's fast path (SDPA attention, one in-projection GEMM, the negative pass batched with the
positive one) equals the straightforward path (`nn.MultiheadAttention` calls, sequential passes), outputs
and gradients, on a fixed batch"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sadetr.model.encoder import (
    CrossAttentionLayer,
    MultiModalAlignEncoder,
    SelfAttentionLayer,
    masked_mean,
)


def _attend_reference(
    layer: torch.nn.Module, x: Tensor, q: Tensor, k: Tensor, v: Tensor, mask: Tensor
) -> Tensor:
    attn, _ = layer.attn(q, k, v, key_padding_mask=~mask, need_weights=False)
    x = layer.norm1(x + layer.dropout1(attn))
    return layer.norm2(x + layer.dropout2(layer.ffn(x)))


def _cross_reference(
    layer: CrossAttentionLayer, x: Tensor, mem: Tensor, mask: Tensor, pos: Tensor | None
) -> Tensor:
    return _attend_reference(layer, x, x if pos is None else x + pos, mem, mem, mask)


def _self_reference(layer: SelfAttentionLayer, x: Tensor, mask: Tensor, pos: Tensor) -> Tensor:
    return _attend_reference(layer, x, x + pos, x + pos, x, mask)


def _encoder_reference(enc: MultiModalAlignEncoder, vf: Tensor, vm: Tensor, tf: Tensor, tm: Tensor) -> dict:
    """The encoder's math written plainly: each pass on its own, attention by nn.MultiheadAttention."""
    bsz = vf.shape[0]
    f_v, f_t = enc.video_proj(vf), enc.text_proj(tf)
    video = torch.cat([enc.fusion_token.expand(bsz, 1, -1), f_v], dim=1)
    mask_g = torch.cat([vm.new_ones(bsz, 1), vm], dim=1)
    vpos = enc.video_positions(vm)

    def fuse_video(text: Tensor, text_mask: Tensor) -> Tensor:
        x = video
        for layer in enc.fusion_layers:
            x = _cross_reference(layer, x, text, text_mask, vpos)
        return x

    def global_enhance(x: Tensor) -> tuple[Tensor, Tensor]:
        for layer in enc.global_layers:
            x = _self_reference(layer, x, mask_g, vpos)
        return x, enc.saliency_head(x[:, 1:], x[:, 0])

    fused_v = fuse_video(f_t, tm)
    fused_t = f_t
    for layer in enc.fusion_layers:
        fused_t = _cross_reference(layer, fused_t, video, mask_g, None)
    sentence = enc.sentence_pool(fused_t, tm)
    enhanced, saliency = global_enhance(fused_v)
    _, saliency_neg = global_enhance(fuse_video(f_t.roll(-1, dims=0), tm.roll(-1, dims=0)))
    return {
        "memory": enc.local_enhance(enhanced[:, 1:], vm),
        "token": enhanced[:, 0],
        "sentence": sentence,
        "clip_text_sim": F.cosine_similarity(fused_v[:, 1:], sentence[:, None, :], dim=-1),
        "saliency_scores": saliency,
        "saliency_scores_neg": saliency_neg,
        "video_emb": masked_mean(f_v, vm),
        "clip_emb": fused_v[:, 1:],
    }


def _fast(enc: MultiModalAlignEncoder, vf: Tensor, vm: Tensor, tf: Tensor, tm: Tensor) -> dict:
    out = enc(vf, vm, tf, tm)
    return {
        "memory": out.memory,
        "token": out.token,
        "sentence": out.sentence,
        "clip_text_sim": out.clip_text_sim,
        "saliency_scores": out.saliency_scores,
        "saliency_scores_neg": out.saliency_scores_neg,
        "video_emb": out.vtc["video_emb"],
        "clip_emb": out.ctm["clip_emb"],
    }


def _batch(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    vf, tf = torch.randn(4, 12, 40, generator=g), torch.randn(4, 7, 24, generator=g)
    vm = torch.ones(4, 12, dtype=torch.bool)
    vm[1, 9:] = False  # a padded video
    tm = torch.ones(4, 7, dtype=torch.bool)
    tm[2, 3:] = False  # a padded query
    return vf, vm, tf, tm


def test_fast_encoder_equals_reference_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    enc = (
        MultiModalAlignEncoder(
            40,
            24,
            hidden_dim=32,
            nheads=4,
            ffn_dim=64,
            dropout=0.0,
            input_dropout=0.0,
            vtc_stage="before",
            ctm_stage="after",
        )
        .double()
        .train()
    )
    vf, vm, tf, tm = (x.double() if x.is_floating_point() else x for x in _batch())
    weights = {k: torch.randn_like(v) for k, v in _fast(enc, vf, vm, tf, tm).items()}

    def grads(forward) -> tuple[dict, dict]:
        enc.zero_grad(set_to_none=True)
        out = forward(enc, vf, vm, tf, tm)
        sum(
            ((out[k] * w).masked_fill(~torch.isfinite(out[k]), 0)).sum() for k, w in weights.items()
        ).backward()
        return {k: v.detach() for k, v in out.items()}, {
            n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None
        }

    fast_out, fast_grad = grads(_fast)
    ref_out, ref_grad = grads(_encoder_reference)
    for k in ref_out:
        torch.testing.assert_close(fast_out[k], ref_out[k], rtol=1e-9, atol=1e-10, msg=k)
    assert fast_grad.keys() == ref_grad.keys()
    for n in ref_grad:
        torch.testing.assert_close(fast_grad[n], ref_grad[n], rtol=1e-8, atol=1e-10, msg=n)


def test_fast_encoder_equals_reference_in_eval_float32() -> None:
    torch.manual_seed(1)
    enc = MultiModalAlignEncoder(40, 24, hidden_dim=32, nheads=4, ffn_dim=64).eval()
    vf, vm, tf, tm = _batch(1)
    with torch.no_grad():
        fast, ref = _fast(enc, vf, vm, tf, tm), _encoder_reference(enc, vf, vm, tf, tm)
    assert fast["saliency_scores_neg"] is None  # no negative pass outside training
    for k in ("memory", "token", "sentence", "clip_text_sim", "saliency_scores"):
        torch.testing.assert_close(fast[k], ref[k], rtol=1e-5, atol=1e-5, msg=k)


def test_state_dict_keys_unchanged_by_the_fast_path() -> None:
    """The fast path reads nn.MultiheadAttention's own parameters: checkpoints keep their key names."""
    keys = MultiModalAlignEncoder(40, 24, hidden_dim=32, nheads=4, ffn_dim=64).state_dict().keys()
    assert "fusion_layers.0.attn.in_proj_weight" in keys and "global_layers.1.attn.out_proj.bias" in keys
    assert not any("dropout" in k for k in keys)
