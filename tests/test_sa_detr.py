"""The full SA-DETR model: output contract, denoising isolation, padding invariance, switches,
`build_model` and the inference postprocessing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sadetr.core.errors import ConfigError
from sadetr.model.build import build_model
from sadetr.model.config import LossConfig, ModelConfig
from sadetr.model.postprocess import to_submission

B, LV, LT, DV, DT = 3, 9, 5, 12, 7


def small_cfg(**kw) -> ModelConfig:
    base = dict(
        video_dim=DV, text_dim=DT, hidden_dim=16, nheads=2, ffn_dim=32, num_queries=4, num_align_points=3,
        dropout=0.0, input_dropout=0.0, num_dn_groups=2,
    )  # fmt: skip
    base.update(kw)
    return ModelConfig(**base)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(B, LV, DV, generator=g)
    text = torch.randn(B, LT, DT, generator=g)
    vmask = torch.ones(B, LV, dtype=torch.bool)
    vmask[1, 6:] = False
    tmask = torch.ones(B, LT, dtype=torch.bool)
    tmask[2, 3:] = False
    targets = [torch.tensor([[0.3, 0.2]]), torch.tensor([[0.5, 0.4], [0.1, 0.1]]), torch.tensor([[0.7, 0.2]])]
    return video, vmask, text, tmask, targets


def test_output_contract_in_training():
    torch.manual_seed(0)
    model = build_model(small_cfg(n_dec_layers=3)).train()
    video, vmask, text, tmask, targets = batch()
    out = model(video, vmask, text, tmask, targets)
    assert out["pred_spans"].shape == (B, 4, 2) and out["pred_quality"].shape == (B, 4)
    assert len(out["aux_outputs"]) == 2 and out["aux_outputs"][0]["pred_spans"].shape == (B, 4, 2)
    assert out["init_spans"].shape == (B, 4, 2)
    m = 2  # largest GT count
    n_dn = 2 * 2 * m  # groups x polarity x M
    assert len(out["dn_outputs"]) == 3
    assert out["dn_outputs"][-1]["pred_spans"].shape == (B, n_dn, 2)
    assert out["dn_outputs"][-1]["pred_quality"].shape == (B, n_dn)
    assert out["dn_meta"]["num_groups"] == 2 and out["dn_meta"]["max_gt"] == m
    assert out["saliency_scores"].shape == (B, LV) and out["saliency_scores_neg"].shape == (B, LV)
    assert out["vtc"]["video_emb"].shape == (B, 16) and out["ctm"]["clip_emb"].shape == (B, LV, 16)
    assert torch.equal(out["video_mask"], vmask)
    for s in [out["pred_spans"], out["dn_outputs"][0]["pred_spans"]]:
        assert ((s >= 0) & (s <= 1)).all()
    # Every parameter is reachable from the outputs (no unused parameter); logit_scale feeds L_vtc.
    total = out["pred_spans"].sum() + out["pred_quality"].sum() + out["init_spans"].sum()
    total = total + out["saliency_scores"].sum() + out["saliency_scores_neg"].sum()
    total = total + out["dn_outputs"][-1]["pred_spans"].sum() + out["vtc"]["logit_scale"]
    total = total + out["vtc"]["video_emb"].sum() + out["ctm"]["clip_emb"].sum()
    total.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_eval_has_no_noise_group_or_negative_pass():
    model = build_model(small_cfg()).eval()
    video, vmask, text, tmask, targets = batch()
    out = model(video, vmask, text, tmask, targets)
    assert out["dn_outputs"] is None and out["dn_meta"] is None and out["saliency_scores_neg"] is None


def test_noise_queries_never_change_direct_outputs():
    torch.manual_seed(0)
    model = build_model(small_cfg()).train()  # dropout 0: training is deterministic
    video, vmask, text, tmask, targets = batch()
    other = [t.flip(0) * 0.5 + 0.2 for t in targets]  # same GT counts, different noise anchors
    out1 = model(video, vmask, text, tmask, targets, dn_generator=torch.Generator().manual_seed(1))
    out2 = model(video, vmask, text, tmask, other, dn_generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.query_init.noise_content.mul_(-3.0)  # change the noise content too
    out3 = model(video, vmask, text, tmask, targets, dn_generator=torch.Generator().manual_seed(1))
    assert not torch.equal(out1["dn_outputs"][-1]["pred_spans"], out2["dn_outputs"][-1]["pred_spans"])
    assert not torch.equal(out1["dn_outputs"][-1]["pred_quality"], out3["dn_outputs"][-1]["pred_quality"])
    for o in (out2, out3):
        assert torch.equal(o["pred_spans"], out1["pred_spans"])
        assert torch.equal(o["pred_quality"], out1["pred_quality"])
        assert torch.equal(o["aux_outputs"][0]["pred_spans"], out1["aux_outputs"][0]["pred_spans"])
    no_dn = model(video, vmask, text, tmask, None)
    assert torch.allclose(no_dn["pred_spans"], out1["pred_spans"], atol=1e-6)


def test_padding_invariance():
    torch.manual_seed(0)
    model = build_model(small_cfg()).eval()
    video, vmask, text, tmask, _ = batch()
    single = model(video[1:2, :6], vmask[1:2, :6], text[1:2], tmask[1:2])  # sample 1 unpadded
    padded = model(video, vmask, text, tmask)  # sample 1 has 3 padded clips with random features
    for key in ("pred_spans", "pred_quality", "init_spans"):
        assert torch.allclose(padded[key][1], single[key][0], atol=1e-5), key
    assert torch.allclose(padded["saliency_scores"][1, :6], single["saliency_scores"][0], atol=1e-5)


def test_switches():
    video, vmask, text, tmask, targets = batch()
    out = build_model(small_cfg(anchor_init="learnable")).eval()(video, vmask, text, tmask)
    assert out["init_spans"] is None
    out = build_model(small_cfg(use_vtc=False, use_ctm=False)).eval()(video, vmask, text, tmask)
    assert out["vtc"] is None and out["ctm"] is None
    model = build_model(small_cfg(use_dn=False)).train()
    assert model.denoiser is None and model(video, vmask, text, tmask, targets)["dn_outputs"] is None
    out = build_model(small_cfg(use_negative_pass=False)).train()(video, vmask, text, tmask, targets)
    assert out["saliency_scores_neg"] is None
    model = build_model(small_cfg(dn_negatives=False)).train()
    out = model(video, vmask, text, tmask, targets)
    assert out["dn_outputs"][0]["pred_spans"].shape[1] == 2 * 2 and not out["dn_meta"]["has_negatives"]


def test_table4_a_is_a_dab_detr_like_baseline():
    """The `table4.a` preset: shared fusion encoder + local/global enhance, DAB-like decoder, nothing else."""
    from sadetr.config.presets import get_preset
    from sadetr.model.build import build_criterion

    preset = get_preset("table4.a")
    cfg = small_cfg(**{k.removeprefix("model."): v for k, v in preset.items() if k.startswith("model.")})
    model = build_model(cfg)
    assert model.denoiser is None and model.query_init.anchor_mlp is None
    assert model.query_init.anchor_embed is not None  # learnable anchors
    assert all(layer.span_enhance is None and not layer.use_gaussian_mask for layer in model.decoder.layers)
    enc = model.encoder
    assert enc.local_enhance is not None and len(enc.global_layers) == cfg.n_global_layers
    assert len(enc.fusion_layers) == cfg.n_fusion_layers and enc.logit_scale is None
    terms = set(build_criterion(cfg, LossConfig(aux_loss=False)).weight_dict)  # no FA, L_init, DN terms
    saliency = {"loss_sal_margin", "loss_sal_rank", "loss_sal_neg"}
    assert terms == {"loss_l1", "loss_giou", "loss_quality"} | saliency


def test_build_model_errors():
    with pytest.raises(ConfigError, match=r"model\.name.*sa_detr"):
        build_model(small_cfg(name="nope"))
    with pytest.raises(ConfigError, match=r"model\.vtc_stage"):
        build_model(small_cfg(vtc_stage="middle"))
    with pytest.raises(ConfigError, match=r"model\.hidden_dim"):
        build_model(small_cfg(hidden_dim=15, nheads=2))
    with pytest.raises(ConfigError, match=r"model\.dn_sigma"):
        build_model(small_cfg(dn_sigma_p=0.7, dn_sigma_n=0.6))
    for name in ("num_queries", "n_dec_layers", "n_input_proj", "num_align_points"):
        with pytest.raises(ConfigError, match=rf"model\.{name}: must be >= 1"):
            build_model(small_cfg(**{name: 0}))


def test_default_config_builds():
    model = build_model(ModelConfig())
    assert model.decoder.dim == 256 and len(model.decoder.layers) == 2
    assert dataclasses.asdict(ModelConfig())["name"] == "sa_detr"


def test_to_submission_by_hand():
    out = {
        "pred_spans": torch.tensor([[[0.5, 0.2], [0.1, 0.4], [0.9, 0.4]]]),  # cxw, normalised
        "pred_quality": torch.tensor([[0.2, 0.9, 0.5]]),
        "saliency_scores": torch.tensor([[1.0, 2.0, 3.0, 99.0]]),
        "video_mask": torch.tensor([[True, True, True, False]]),
    }
    meta = [{"qid": 7, "vid": "v", "query": "q", "duration": 5.5, "clip_sec": 2.0, "num_clips": 3}]
    (rec,) = to_submission(out, meta, round_to_clip=False)  # the clip-grid rounding: test_postprocess.py
    # 6 s covered by the clips; spans (xx): [0.4, 0.6] -> [2.4, 3.6]; [-0.1, 0.3] -> [0, 1.8];
    # [0.7, 1.1] -> [4.2, 6.6] clipped to the 5.5 s duration. Sorted by quality 0.9, 0.5, 0.2.
    expected = [[0.0, 1.8, 0.9], [4.2, 5.5, 0.5], [2.4, 3.6, 0.2]]
    assert rec["qid"] == 7 and rec["vid"] == "v" and rec["query"] == "q"
    assert len(rec["pred_relevant_windows"]) == 3
    for got, want in zip(rec["pred_relevant_windows"], expected):
        assert got == pytest.approx(want, abs=1e-4)
    assert rec["pred_saliency_scores"] == [1.0, 2.0, 3.0]
