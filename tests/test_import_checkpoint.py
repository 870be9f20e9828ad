"""`sadetr import-checkpoint`: released Moment-DETR / QD-DETR checkpoints become sadetr checkpoints.

The public checkpoints cannot be downloaded here, so each test builds one: a state dict with the public
parameter names and shapes (tables below, written from the public module definitions, checked against
the public parameter counts), random values, saved in the public container (`{"model", "optimizer",
"lr_scheduler", "epoch", "opt"}` with an argparse Namespace, or lighthouse's EasyDict, as `opt`).
"""

from __future__ import annotations

import argparse
import math
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sadetr.core.errors import CheckpointError
from sadetr.engine.checkpoint import load_trained_model
from sadetr.inference.import_release import import_release

SMALL = {"d": 32, "ffn": 64, "nq": 5, "max_q": 8}
HEADS = 4

# ------------------------------------------------------------------------------ public parameter tables


def _linear(s: dict, name: str, out_dim: int, in_dim: int) -> None:
    s[f"{name}.weight"], s[f"{name}.bias"] = (out_dim, in_dim), (out_dim,)


def _norm(s: dict, name: str, dim: int) -> None:
    s[f"{name}.weight"], s[f"{name}.bias"] = (dim,), (dim,)


def _torch_mha(s: dict, name: str, d: int) -> None:
    s[f"{name}.in_proj_weight"], s[f"{name}.in_proj_bias"] = (3 * d, d), (3 * d,)
    _linear(s, f"{name}.out_proj", d, d)


def _inputs(s: dict, d: int, vdim: int, tdim: int, n_proj: int, max_q: int) -> None:
    """Input MLPs: LinearLayer = (`LayerNorm`, `net` = [Dropout, Linear]); learned text positions."""
    for proj, din in (("input_vid_proj", vdim), ("input_txt_proj", tdim)):
        for i in range(n_proj):
            _norm(s, f"{proj}.{i}.LayerNorm", din if i == 0 else d)
            _linear(s, f"{proj}.{i}.net.1", d, din if i == 0 else d)
    s["txt_position_embed.position_embeddings.weight"] = (max_q, d)
    _norm(s, "txt_position_embed.LayerNorm", d)


def _mlp(s: dict, name: str, d: int, out_dim: int, n: int) -> None:
    for i in range(n):
        _linear(s, f"{name}.layers.{i}", out_dim if i == n - 1 else d, d)


def public_moment_detr(
    d=256, ffn=1024, nq=10, vdim=2818, tdim=512, n_enc=2, n_dec=2, n_proj=2, max_q=32
) -> dict[str, tuple]:
    """jayleicn/moment_detr (and lighthouse's copy): DETR transformer with torch MultiheadAttention."""
    s: dict[str, tuple] = {}
    _inputs(s, d, vdim, tdim, n_proj, max_q)
    for i in range(n_enc):
        p = f"transformer.encoder.layers.{i}"
        _torch_mha(s, f"{p}.self_attn", d)
        _linear(s, f"{p}.linear1", ffn, d), _linear(s, f"{p}.linear2", d, ffn)
        _norm(s, f"{p}.norm1", d), _norm(s, f"{p}.norm2", d)
    for i in range(n_dec):
        p = f"transformer.decoder.layers.{i}"
        _torch_mha(s, f"{p}.self_attn", d), _torch_mha(s, f"{p}.multihead_attn", d)
        _linear(s, f"{p}.linear1", ffn, d), _linear(s, f"{p}.linear2", d, ffn)
        for k in (1, 2, 3):
            _norm(s, f"{p}.norm{k}", d)
    _norm(s, "transformer.decoder.norm", d)
    s["query_embed.weight"] = (nq, d)
    _linear(s, "class_embed", 2, d)
    _mlp(s, "span_embed", d, 2, 3)
    _linear(s, "saliency_proj", 1, d)
    return s


def public_qd_detr(
    d=256, ffn=1024, nq=10, vdim=2818, tdim=512, n_enc=2, n_dec=2, n_proj=2, max_q=32
) -> dict[str, tuple]:
    """wjun0830/QD-DETR (and lighthouse's copy): T2V + encoder (PReLU FFNs), DAB decoder whose attention
    modules (Conditional-DETR MultiheadAttention) only hold an out_proj."""
    s: dict[str, tuple] = {"global_rep_token": (d,), "global_rep_pos": (d,)}
    _inputs(s, d, vdim, tdim, n_proj, max_q)
    for stack in ("t2v_encoder", "encoder"):
        for i in range(n_enc):
            p = f"transformer.{stack}.layers.{i}"
            _torch_mha(s, f"{p}.self_attn", d)
            _linear(s, f"{p}.linear1", ffn, d), _linear(s, f"{p}.linear2", d, ffn)
            _norm(s, f"{p}.norm1", d), _norm(s, f"{p}.norm2", d)
            s[f"{p}.activation.weight"] = (1,)
    for i in range(n_dec):
        p = f"transformer.decoder.layers.{i}"
        for name in ("sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj", "sa_v_proj"):
            _linear(s, f"{p}.{name}", d, d)
        _linear(s, f"{p}.self_attn.out_proj", d, d)
        names = ["ca_qcontent_proj", "ca_kcontent_proj", "ca_kpos_proj", "ca_v_proj", "ca_qpos_sine_proj"]
        for name in names + (["ca_qpos_proj"] if i == 0 else []):  # keep_query_pos=False
            _linear(s, f"{p}.{name}", d, d)
        _linear(s, f"{p}.cross_attn.out_proj", d, d)
        _linear(s, f"{p}.linear1", ffn, d), _linear(s, f"{p}.linear2", d, ffn)
        for k in (1, 2, 3):
            _norm(s, f"{p}.norm{k}", d)
        s[f"{p}.activation.weight"] = (1,)
    _norm(s, "transformer.decoder.norm", d)
    _mlp(s, "transformer.decoder.query_scale", d, d, 2)
    _mlp(s, "transformer.decoder.ref_point_head", d, d, 2)
    _mlp(s, "transformer.decoder.bbox_embed", d, 2, 3)
    _mlp(s, "transformer.decoder.ref_anchor_head", d, 1, 2)
    s["query_embed.weight"] = (nq, 2)
    _linear(s, "class_embed", 2, d)
    _mlp(s, "span_embed", d, 2, 3)
    _linear(s, "saliency_proj1", d, d), _linear(s, "saliency_proj2", d, d)
    return s


PUBLIC = {"moment_detr": public_moment_detr, "qd_detr": public_qd_detr}


def test_public_tables_have_the_public_parameter_counts() -> None:
    """The tables above reproduce the public implementations' parameter counts at the QVH SF+C setting."""
    for model, expected in (("moment_detr", 4_823_305), ("qd_detr", 7_585_573)):
        assert sum(math.prod(shape) for shape in PUBLIC[model]().values()) == expected


# ------------------------------------------------------------------------------ public containers


class EasyDict(dict):
    """Stand-in for `easydict.EasyDict` (lighthouse's `opt`): a dict whose attributes are its items."""

    def __init__(self, d: dict | None = None) -> None:
        super().__init__()
        for key, value in (d or {}).items():
            setattr(self, key, value)

    def __setattr__(self, key: str, value: object) -> None:
        super().__setattr__(key, value)
        super().__setitem__(key, value)


EasyDict.__module__ = "easydict"


def random_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) * 0.2 for k, shape in shapes.items()}


def official_opt(v_feat_dirs: list[str], vdim: int, **extra) -> argparse.Namespace:
    """The fields of the public `opt` Namespace that matter (v_feat_dim already includes the TEF's 2)."""
    opt = argparse.Namespace(
        dset_name="hl",
        ctx_mode="video_tef",
        v_feat_dirs=v_feat_dirs,
        t_feat_dir="features/clip_text_features/",
        v_feat_dim=vdim,
        t_feat_dim=512,
        max_q_l=SMALL["max_q"],
        max_v_l=75,
        clip_length=2,
        hidden_dim=SMALL["d"],
        nheads=HEADS,
        dim_feedforward=SMALL["ffn"],
        enc_layers=2,
        dec_layers=2,
        num_queries=SMALL["nq"],
        input_dropout=0.5,
        dropout=0.1,
        use_txt_pos=False,
        n_input_proj=2,
        no_norm_vfeat=False,
        no_norm_tfeat=False,
        contrastive_align_loss=False,
        device=torch.device("cpu"),
    )
    for key, value in extra.items():
        setattr(opt, key, value)
    return opt


def save_public(path: Path, state: dict, opt: object, monkeypatch: pytest.MonkeyPatch | None = None) -> Path:
    """torch.save the public container; an EasyDict `opt` is pickled as `easydict.EasyDict`."""
    if isinstance(opt, EasyDict):
        assert monkeypatch is not None
        module = types.ModuleType("easydict")
        module.EasyDict = EasyDict
        monkeypatch.setitem(sys.modules, "easydict", module)
    ckpt = {
        "model": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": list(range(len(state)))}]},
        "lr_scheduler": {"step_size": 400, "gamma": 0.1, "last_epoch": 3},
        "epoch": 3,
        "opt": opt,
    }
    torch.save(ckpt, path)
    if isinstance(opt, EasyDict):
        monkeypatch.delitem(sys.modules, "easydict")  # the importer must not need the package
    return path


def make_release(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch, clip_only: bool = False, seed: int = 0
) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random-weight released checkpoint of `fmt` (SF+C, or CLIP only), at the small test size."""
    model = fmt.removeprefix("lighthouse_")
    vdim = 514 if clip_only else 2818
    state = random_state(PUBLIC[model](vdim=vdim, **SMALL), seed)
    if fmt.startswith("lighthouse"):
        dirs = ["features/QVHighlight/clip"] + ([] if clip_only else ["features/QVHighlight/slowfast"])
        opt = EasyDict(
            dict(vars(official_opt(dirs, vdim)), model_name=model, dset_name="qvhighlight", device="cpu")
        )
    else:
        dirs = (["features/slowfast_features"] if not clip_only else []) + ["features/clip_features"]
        opt = official_opt(dirs, vdim)
    return save_public(tmp_path / f"{fmt}.ckpt", state, opt, monkeypatch), state


# ------------------------------------------------------------------------------ conversion

FORMATS = ["moment_detr", "qd_detr", "lighthouse_moment_detr", "lighthouse_qd_detr"]

# Hand-written pairs, one per kind of renaming in docs/baselines.md.
SPOT_CHECKS = {
    "moment_detr": {
        "input_vid_proj.0.LayerNorm.weight": "inputs.input_vid_proj.0.norm.weight",
        "input_txt_proj.1.net.1.bias": "inputs.input_txt_proj.1.linear.bias",
        "txt_position_embed.LayerNorm.bias": "inputs.txt_position_embed.norm.bias",
        "transformer.encoder.layers.1.self_attn.in_proj_weight": "encoder.1.self_attn.in_proj_weight",
        "transformer.decoder.layers.1.multihead_attn.in_proj_weight": "decoder.1.cross_attn.in_proj_weight",
        "transformer.decoder.layers.0.norm3.weight": "decoder.0.norm3.weight",
        "transformer.decoder.norm.bias": "decoder_norm.bias",
        "span_embed.layers.2.weight": "span_embed.layers.2.weight",
    },
    "qd_detr": {
        "global_rep_pos": "global_rep_pos",
        "transformer.t2v_encoder.layers.0.self_attn.in_proj_bias": "t2v_encoder.0.cross_attn.in_proj_bias",
        "transformer.t2v_encoder.layers.1.activation.weight": "t2v_encoder.1.activation.weight",
        "transformer.encoder.layers.1.linear2.weight": "encoder.1.linear2.weight",
        "transformer.decoder.layers.1.self_attn.out_proj.weight": "decoder.layers.1.sa_out_proj.weight",
        "transformer.decoder.layers.0.cross_attn.out_proj.bias": "decoder.layers.0.ca_out_proj.bias",
        "transformer.decoder.layers.0.ca_qpos_proj.weight": "decoder.layers.0.ca_qpos_proj.weight",
        "transformer.decoder.ref_anchor_head.layers.1.weight": "decoder.ref_anchor_head.layers.1.weight",
        "query_embed.weight": "query_embed.weight",
        "saliency_proj2.bias": "saliency_proj2.bias",
    },
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_public_tensor_lands_in_its_sadetr_parameter(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, state = make_release(tmp_path, fmt, monkeypatch)
    summary = import_release(src, tmp_path / "out.ckpt")
    assert summary["format"] == fmt
    model, cfg, ckpt = load_trained_model(tmp_path / "out.ckpt")
    ours = model.state_dict()
    # Random values are distinct, so equality of values identifies each tensor: a bijection is required.
    by_value = {tuple(t.flatten().tolist()): name for name, t in state.items()}
    assert len(by_value) == len(state)
    pairs = {by_value[tuple(t.flatten().tolist())]: name for name, t in ours.items()}
    assert len(pairs) == len(ours) == len(state)
    for public, sadetr in SPOT_CHECKS[fmt.removeprefix("lighthouse_")].items():
        assert pairs[public] == sadetr
        assert torch.equal(ours[sadetr], state[public])
    assert (cfg.model.hidden_dim, cfg.model.nheads, cfg.model.num_queries) == (SMALL["d"], HEADS, SMALL["nq"])
    assert ckpt["imported_from"]["epoch"] == 3 and ckpt["imported_from"]["format"] == fmt


@pytest.mark.parametrize(
    "fmt, sources",
    [
        ("moment_detr", ["slowfast_features", "clip_features"]),
        ("qd_detr", ["slowfast_features", "clip_features"]),
        ("lighthouse_moment_detr", ["clip_features", "slowfast_features"]),
        ("lighthouse_qd_detr", ["clip_features", "slowfast_features"]),
    ],
)
def test_records_the_feature_pipeline(
    fmt: str, sources: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Source order from the recorded feature directories, TEF, 2 s clips, lengths, normalisation."""
    _, cfg, ckpt, _ = _imported(tmp_path, fmt, monkeypatch)
    feats = ckpt["features"]
    assert feats["video_sources"] == sources and feats["video_dims"] == [
        {"slowfast_features": 2304, "clip_features": 512}[s] for s in sources
    ]
    assert feats["use_tef"] is True and feats["clip_len"] == 2.0 and feats["video_dim"] == 2818
    assert (feats["max_v_l"], feats["max_q_l"], feats["text_source"]) == (
        75,
        SMALL["max_q"],
        "clip_text_features",
    )
    assert feats["normalize_video"] and feats["normalize_text"]
    assert cfg.data.video_sources == sources and cfg.data.dataset == "qvhighlights"


def test_run_on_video_model_is_clip_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Moment-DETR's run_on_video checkpoint: CLIP 512 + TEF = 514-d input."""
    src, _ = make_release(tmp_path, "moment_detr", monkeypatch, clip_only=True)
    summary = import_release(src, tmp_path / "out.ckpt")
    assert summary["features"]["video_sources"] == ["clip_features"]
    assert summary["features"]["video_dim"] == 514


def test_bare_state_dict_uses_the_format_default_order_or_the_override(tmp_path: Path) -> None:
    state = random_state(public_qd_detr(**SMALL))
    torch.save(state, tmp_path / "bare.pt")
    default = import_release(tmp_path / "bare.pt", tmp_path / "a.ckpt", fmt_name="lighthouse_qd_detr")
    assert default["features"]["video_sources"] == ["clip_features", "slowfast_features"]
    forced = import_release(
        tmp_path / "bare.pt", tmp_path / "b.ckpt", video_sources=["slowfast_features", "clip_features"]
    )
    assert forced["format"] == "qd_detr" and forced["features"]["video_sources"][0] == "slowfast_features"


def test_training_only_contrastive_heads_are_ignored(tmp_path: Path) -> None:
    shapes = public_moment_detr(**SMALL)
    for head in ("query", "txt", "vid"):
        _linear(shapes, f"contrastive_align_projection_{head}", 64, SMALL["d"])
    torch.save(random_state(shapes), tmp_path / "c.pt")
    assert import_release(tmp_path / "c.pt", tmp_path / "c.ckpt")["model"] == "moment_detr"


# ------------------------------------------------------------------------------ exactness


def _reference_input_projection(state: dict, prefix: str, x: torch.Tensor, n_proj: int = 2) -> torch.Tensor:
    """Public LinearLayer stack: LayerNorm -> (Dropout) -> Linear -> ReLU (all but the last)."""
    for i in range(n_proj):
        p = f"{prefix}.{i}"
        x = F.layer_norm(x, x.shape[-1:], state[f"{p}.LayerNorm.weight"], state[f"{p}.LayerNorm.bias"])
        x = F.linear(x, state[f"{p}.net.1.weight"], state[f"{p}.net.1.bias"])
        if i < n_proj - 1:
            x = F.relu(x)
    return x


def _reference_sine_position(mask: torch.Tensor, d: int) -> torch.Tensor:
    """Public PositionEmbeddingSine(d, normalize=True) on a [B, L] valid mask."""
    x = mask.float().cumsum(1)
    x = x / (x[:, -1:] + 1e-6) * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(d, dtype=torch.float32) // 2) / d)
    pos = x[:, :, None] / dim_t
    return torch.stack((pos[:, :, 0::2].sin(), pos[:, :, 1::2].cos()), dim=3).flatten(2)


def _batch(vdim: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(2, 9, vdim, generator=gen)
    text = torch.randn(2, 6, 512, generator=gen)
    video_mask = torch.ones(2, 9, dtype=torch.bool)
    video_mask[1, 6:] = False
    text_mask = torch.ones(2, 6, dtype=torch.bool)
    text_mask[0, 4:] = False
    return video, video_mask, text, text_mask


def _imported(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, dict, dict]:
    """A synthetic release of `fmt`, imported and loaded: (model, config, checkpoint, public state)."""
    src, state = make_release(tmp_path, fmt, monkeypatch)
    import_release(src, tmp_path / "out.ckpt")
    model, cfg, ckpt = load_trained_model(tmp_path / "out.ckpt")
    return model, cfg, ckpt, state


@pytest.mark.parametrize("fmt", ["moment_detr", "lighthouse_qd_detr"])
def test_input_projection_and_positions_equal_the_public_equations(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _, _, state = _imported(tmp_path, fmt, monkeypatch)
    video, video_mask, text, _ = _batch(2818)
    with torch.no_grad():
        vid, txt, pos_vid, pos_txt = model.inputs(video, video_mask, text)
    torch.testing.assert_close(vid, _reference_input_projection(state, "input_vid_proj", video))
    torch.testing.assert_close(txt, _reference_input_projection(state, "input_txt_proj", text))
    ref_pos = _reference_sine_position(video_mask, SMALL["d"])
    torch.testing.assert_close(pos_vid[video_mask], ref_pos[video_mask], atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(pos_txt) == 0  # use_txt_pos is off in the released models


def _reference_t2v(layer_state: dict, vid, pos_vid, txt, txt_pad, nheads: int, public: bool) -> torch.Tensor:
    """Public T2V layer (sequence-first MHA): x = v + attn; out = norm2(x + FFN(norm1(x))), PReLU FFN.
    `public=False`: y = norm1(v + attn); out = norm2(y + FFN(y))."""
    s = layer_state
    attn = F.multi_head_attention_forward(
        (vid + pos_vid).transpose(0, 1),
        txt.transpose(0, 1),
        txt.transpose(0, 1),
        vid.shape[-1],
        nheads,
        s["self_attn.in_proj_weight"],
        s["self_attn.in_proj_bias"],
        None,
        None,
        False,
        0.0,
        s["self_attn.out_proj.weight"],
        s["self_attn.out_proj.bias"],
        training=False,
        key_padding_mask=txt_pad,
        need_weights=False,
    )[0].transpose(0, 1)
    d = vid.shape[-1]
    x = vid + attn
    normed = F.layer_norm(x, (d,), s["norm1.weight"], s["norm1.bias"])
    ffn = F.linear(
        F.prelu(F.linear(normed, s["linear1.weight"], s["linear1.bias"]), s["activation.weight"]),
        s["linear2.weight"],
        s["linear2.bias"],
    )
    return F.layer_norm((x if public else normed) + ffn, (d,), s["norm2.weight"], s["norm2.bias"])


@pytest.mark.parametrize("form", ["public", "normed"])
def test_qd_detr_t2v_layer_equals_its_reference(form: str, tmp_path: Path, monkeypatch) -> None:
    """The imported first T2V layer, on projected inputs, equals the public equations (default form) or
    this framework's earlier form (`model.qd_t2v_form=normed`)."""
    from sadetr.config.compose import config_from_dict
    from sadetr.model.build import build_model

    model, cfg, ckpt, state = _imported(tmp_path, "qd_detr", monkeypatch)
    assert cfg.model.qd_t2v_form == "public"
    if form == "normed":
        tree = dict(ckpt["config"])
        tree["model"] = {**tree["model"], "qd_t2v_form": "normed"}
        model = build_model(config_from_dict(tree).model).eval()
        model.load_state_dict(ckpt["model"])
    video, video_mask, text, text_mask = _batch(2818)
    prefix = "transformer.t2v_encoder.layers.0."
    layer_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    with torch.no_grad():
        vid, txt, pos_vid, pos_txt = model.inputs(video, video_mask, text)
        ours = model.t2v_encoder[0](vid, pos_vid, txt, pos_txt, ~text_mask)
        ref = _reference_t2v(layer_state, vid, pos_vid, txt, ~text_mask, HEADS, public=form == "public")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def _ln(s: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], s[f"{name}.weight"], s[f"{name}.bias"])


def _lin(s: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, s[f"{name}.weight"], s[f"{name}.bias"])


def _mlp_ref(s: dict, name: str, x: torch.Tensor, n: int) -> torch.Tensor:
    for i in range(n):
        x = _lin(s, f"{name}.layers.{i}", x)
        x = F.relu(x) if i < n - 1 else x
    return x


def _torch_mha_ref(s: dict, name: str, q, k, v, key_pad) -> torch.Tensor:
    """torch.nn.MultiheadAttention (in_proj + out_proj) on batch-first inputs."""
    out = F.multi_head_attention_forward(
        q.transpose(0, 1),
        k.transpose(0, 1),
        v.transpose(0, 1),
        q.shape[-1],
        HEADS,
        s[f"{name}.in_proj_weight"],
        s[f"{name}.in_proj_bias"],
        None,
        None,
        False,
        0.0,
        s[f"{name}.out_proj.weight"],
        s[f"{name}.out_proj.bias"],
        training=False,
        key_padding_mask=key_pad,
        need_weights=False,
    )[0]
    return out.transpose(0, 1)


def _ffn(s: dict, p: str, x: torch.Tensor, prelu: bool) -> torch.Tensor:
    h = _lin(s, f"{p}.linear1", x)
    h = F.prelu(h, s[f"{p}.activation.weight"]) if prelu else F.relu(h)
    return _lin(s, f"{p}.linear2", h)


def _encoder_layer_ref(s: dict, p: str, src, pos, pad, prelu: bool) -> torch.Tensor:
    """DETR post-norm encoder layer: positions on queries and keys only."""
    src = _ln(s, f"{p}.norm1", src + _torch_mha_ref(s, f"{p}.self_attn", src + pos, src + pos, src, pad))
    return _ln(s, f"{p}.norm2", src + _ffn(s, p, src, prelu))


def reference_moment_detr(s: dict, video, video_mask, text, text_mask, n_enc=2, n_dec=2) -> dict:
    """Moment-DETR's forward from the public equations (jayleicn/moment_detr model.py, transformer.py)."""
    vid = _reference_input_projection(s, "input_vid_proj", video)
    txt = _reference_input_projection(s, "input_txt_proj", text)
    src = torch.cat([vid, txt], 1)
    pad = ~torch.cat([video_mask, text_mask], 1)
    pos = torch.cat([_reference_sine_position(video_mask, vid.shape[-1]), torch.zeros_like(txt)], 1)
    for i in range(n_enc):
        src = _encoder_layer_ref(s, f"transformer.encoder.layers.{i}", src, pos, pad, prelu=False)
    query_pos = s["query_embed.weight"][None].expand(vid.shape[0], -1, -1)
    tgt = torch.zeros_like(query_pos)
    for i in range(n_dec):
        p = f"transformer.decoder.layers.{i}"
        q = tgt + query_pos
        tgt = _ln(s, f"{p}.norm1", tgt + _torch_mha_ref(s, f"{p}.self_attn", q, q, tgt, None))
        cross = _torch_mha_ref(s, f"{p}.multihead_attn", tgt + query_pos, src + pos, src, pad)
        tgt = _ln(s, f"{p}.norm2", tgt + cross)
        tgt = _ln(s, f"{p}.norm3", tgt + _ffn(s, p, tgt, prelu=False))
    hs = _ln(s, "transformer.decoder.norm", tgt)
    return {
        "pred_logits": _lin(s, "class_embed", hs),
        "pred_spans": _mlp_ref(s, "span_embed", hs, 3).sigmoid(),
        "saliency_scores": _lin(s, "saliency_proj", src[:, : vid.shape[1]]).squeeze(-1),
    }


def _public_inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _gen_sineembed(ref: torch.Tensor, d: int) -> torch.Tensor:
    """DAB-DETR's sine embedding of (center, width): d/2 features each."""
    half = d // 2
    dim_t = 10000 ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)
    parts = []
    for k in (0, 1):
        pos = ref[..., k, None] * 2 * math.pi / dim_t
        parts.append(torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(parts, -1)


def _heads(x: torch.Tensor) -> torch.Tensor:
    return x.view(x.shape[0], x.shape[1], HEADS, -1)


def _conditional_attention(q, k, v, key_pad, out_proj: tuple) -> torch.Tensor:
    """Conditional-DETR MultiheadAttention (no in-projection): q, k [B, N, H, c]; v [B, L, d]."""
    logits = torch.einsum("bqhc,blhc->bhql", q, k) / math.sqrt(q.shape[-1])
    if key_pad is not None:
        logits = logits.masked_fill(key_pad[:, None, None], float("-inf"))
    out = logits.softmax(-1) @ _heads(v).transpose(1, 2)  # (B, H, Nq, d/H)
    return F.linear(out.transpose(1, 2).flatten(2), *out_proj)


def reference_qd_detr(s: dict, video, video_mask, text, text_mask, n_enc=2, n_dec=2) -> dict:
    """QD-DETR's forward from the public equations (wjun0830/QD-DETR model.py, transformer.py)."""
    vid = _reference_input_projection(s, "input_vid_proj", video)
    txt = _reference_input_projection(s, "input_txt_proj", text)
    d, bsz = vid.shape[-1], vid.shape[0]
    pos_vid = _reference_sine_position(video_mask, d)
    for i in range(n_enc):  # T2V: x = v + attn; out = norm2(x + FFN(norm1(x)))
        p = f"transformer.t2v_encoder.layers.{i}"
        x = vid + _torch_mha_ref(s, f"{p}.self_attn", vid + pos_vid, txt, txt, ~text_mask)
        vid = _ln(s, f"{p}.norm2", x + _ffn(s, p, _ln(s, f"{p}.norm1", x), prelu=True))
    src = torch.cat([s["global_rep_token"].expand(bsz, 1, d), vid], 1)
    pos = torch.cat([s["global_rep_pos"].expand(bsz, 1, d), pos_vid], 1)
    pad = torch.cat([torch.zeros(bsz, 1, dtype=torch.bool), ~video_mask], 1)
    for i in range(n_enc):
        src = _encoder_layer_ref(s, f"transformer.encoder.layers.{i}", src, pos, pad, prelu=True)
    mem_g, mem = src[:, 0], src[:, 1:]
    saliency = (_lin(s, "saliency_proj1", mem) * _lin(s, "saliency_proj2", mem_g)[:, None]).sum(
        -1
    ) / math.sqrt(d)

    dec = "transformer.decoder"
    ref = s["query_embed.weight"].sigmoid()[None].expand(bsz, -1, -1)
    tgt = torch.zeros(bsz, ref.shape[1], d)
    for i in range(n_dec):
        p = f"{dec}.layers.{i}"
        sine = _gen_sineembed(ref, d)
        query_pos = _mlp_ref(s, f"{dec}.ref_point_head", sine, 2)
        if i > 0:
            sine = sine * _mlp_ref(s, f"{dec}.query_scale", tgt, 2)
        sine = (
            sine * (_mlp_ref(s, f"{dec}.ref_anchor_head", tgt, 2).sigmoid()[..., 0] / ref[..., 1])[..., None]
        )
        q = _lin(s, f"{p}.sa_qcontent_proj", tgt) + _lin(s, f"{p}.sa_qpos_proj", query_pos)
        k = _lin(s, f"{p}.sa_kcontent_proj", tgt) + _lin(s, f"{p}.sa_kpos_proj", query_pos)
        sa_out = (s[f"{p}.self_attn.out_proj.weight"], s[f"{p}.self_attn.out_proj.bias"])
        sa = _conditional_attention(_heads(q), _heads(k), _lin(s, f"{p}.sa_v_proj", tgt), None, sa_out)
        tgt = _ln(s, f"{p}.norm1", tgt + sa)
        q = _lin(s, f"{p}.ca_qcontent_proj", tgt)
        k = _lin(s, f"{p}.ca_kcontent_proj", mem)
        k_pos = _lin(s, f"{p}.ca_kpos_proj", pos_vid)
        if i == 0:
            q, k = q + _lin(s, f"{p}.ca_qpos_proj", query_pos), k + k_pos
        q = torch.cat([_heads(q), _heads(_lin(s, f"{p}.ca_qpos_sine_proj", sine))], -1)
        k = torch.cat([_heads(k), _heads(k_pos)], -1)
        ca_out = (s[f"{p}.cross_attn.out_proj.weight"], s[f"{p}.cross_attn.out_proj.bias"])
        ca = _conditional_attention(q, k, _lin(s, f"{p}.ca_v_proj", mem), ~video_mask, ca_out)
        tgt = _ln(s, f"{p}.norm2", tgt + ca)
        tgt = _ln(s, f"{p}.norm3", tgt + _ffn(s, p, tgt, prelu=True))
        new_ref = (_mlp_ref(s, f"{dec}.bbox_embed", tgt, 3) + _public_inverse_sigmoid(ref)).sigmoid()
        if i < n_dec - 1:
            ref = new_ref  # the last layer's spans are refined from that layer's input anchor
    hs = _ln(s, f"{dec}.norm", tgt)
    return {
        "pred_logits": _lin(s, "class_embed", hs),
        "pred_spans": (_mlp_ref(s, "span_embed", hs, 3) + _public_inverse_sigmoid(ref)).sigmoid(),
        "saliency_scores": saliency,
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_converted_model_equals_the_public_forward(fmt: str, tmp_path: Path, monkeypatch) -> None:
    """Spans, foreground logits and saliency of the converted model equal a forward written in this
    test from the public equations with the public tensors (padded batch: padded clips and words)."""
    model, _, _, state = _imported(tmp_path, fmt, monkeypatch)
    video, video_mask, text, text_mask = _batch(2818)
    reference = {"moment_detr": reference_moment_detr, "qd_detr": reference_qd_detr}[
        fmt.removeprefix("lighthouse_")
    ]
    with torch.no_grad():
        ours = model(video, video_mask, text, text_mask)
        ref = reference(state, video, video_mask, text, text_mask)
    torch.testing.assert_close(ours["pred_logits"], ref["pred_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours["pred_spans"], ref["pred_spans"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        ours["saliency_scores"][video_mask], ref["saliency_scores"][video_mask], atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_converted_model_forward_is_finite_and_deterministic(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _, _, _ = _imported(tmp_path, fmt, monkeypatch)
    batch = _batch(2818)
    with torch.no_grad():
        a, b = model(*batch), model(*batch)
    for key in ("pred_spans", "pred_logits", "saliency_scores"):
        assert torch.isfinite(a[key]).all()
        assert torch.equal(a[key], b[key])
    assert ((a["pred_spans"] > 0) & (a["pred_spans"] < 1)).all()


# ------------------------------------------------------------------------------ refusals


def _expect_refusal(src: Path, tmp_path: Path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as err:
        import_release(src, tmp_path / "refused.ckpt")
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert not (tmp_path / "refused.ckpt").exists()
    return message


def test_refuses_a_missing_key(tmp_path: Path) -> None:
    state = random_state(public_moment_detr(**SMALL))
    del state["transformer.decoder.norm.weight"]
    torch.save({"model": state, "opt": official_opt([], 2818)}, tmp_path / "m.ckpt")
    _expect_refusal(tmp_path / "m.ckpt", tmp_path, "1 missing key(s): transformer.decoder.norm.weight")


def test_refuses_an_extra_key(tmp_path: Path) -> None:
    state = random_state(public_qd_detr(**SMALL))
    state["transformer.decoder.layers.1.ca_qpos_proj.weight"] = torch.zeros(SMALL["d"], SMALL["d"])
    state["transformer.encoder.norm.weight"] = torch.zeros(SMALL["d"])
    torch.save({"model": state}, tmp_path / "x.ckpt")
    _expect_refusal(
        tmp_path / "x.ckpt", tmp_path, "2 unexpected key(s): transformer.decoder.layers.1.ca_qpos_proj.weight"
    )


def test_refuses_a_wrong_shape(tmp_path: Path) -> None:
    state = random_state(public_qd_detr(**SMALL))
    state["transformer.decoder.bbox_embed.layers.2.weight"] = torch.zeros(4, SMALL["d"])
    torch.save({"model": state}, tmp_path / "s.ckpt")
    msg = _expect_refusal(
        tmp_path / "s.ckpt",
        tmp_path,
        "1 shape mismatch(es): transformer.decoder.bbox_embed.layers.2.weight [4, 32]",
    )
    assert "missing" not in msg


def test_refuses_another_lighthouse_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = random_state(public_qd_detr(**SMALL))
    save_public(tmp_path / "cg.ckpt", state, EasyDict({"model_name": "cg_detr"}), monkeypatch)
    _expect_refusal(tmp_path / "cg.ckpt", tmp_path, "'cg_detr'", "only moment_detr and qd_detr")


class _Exploit:
    """Pickles as a call that creates a file: a checkpoint that runs code when unpickled unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_refuses_a_pickle_that_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = random_state(public_moment_detr(**SMALL))
    torch.save({"model": state, "opt": _Exploit(marker)}, tmp_path / "evil.ckpt")
    _expect_refusal(tmp_path / "evil.ckpt", tmp_path, "refused to load", "exec")
    assert not marker.exists()


def test_refuses_a_feature_set_sadetr_cannot_rebuild(tmp_path: Path) -> None:
    state = random_state(public_moment_detr(vdim=2050, **SMALL))
    opt = official_opt(["features/resnet"], 2050)
    torch.save({"model": state, "opt": opt}, tmp_path / "r.ckpt")
    _expect_refusal(tmp_path / "r.ckpt", tmp_path, "['features/resnet']", "--video-sources")


def test_refuses_a_video_audio_model(tmp_path: Path) -> None:
    state = random_state(public_qd_detr(vdim=2818 + 2048, **SMALL))
    opt = official_opt(["f/slowfast_features", "f/clip_features"], 4866, a_feat_dir="f/pann")
    torch.save({"model": state, "opt": opt}, tmp_path / "a.ckpt")
    _expect_refusal(tmp_path / "a.ckpt", tmp_path, "audio features (f/pann)")


# ------------------------------------------------------------------------------ CLI and Predictor


def test_cli_import_then_predictor_on_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`sadetr import-checkpoint` then the unchanged Predictor: ranked windows and one saliency per clip."""
    from sadetr.cli.main import main
    from sadetr.inference.predictor import Predictor

    src, _ = make_release(tmp_path, "moment_detr", monkeypatch, clip_only=True)
    assert main(["import-checkpoint", str(src), "--out", str(tmp_path / "mdetr.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "clip_features + TEF (514-d video)" in out and "2 s clips" in out
    predictor = Predictor.from_checkpoint(tmp_path / "mdetr.ckpt", device="cpu")
    rng = np.random.default_rng(0)
    pred = predictor.predict(
        "a chef cuts pizza", rng.normal(size=(40, 512)), text_features=rng.normal(size=(7, 512))
    )
    assert len(pred["pred_saliency_scores"]) == 40 and pred["clip_len"] == 2.0
    windows = pred["pred_relevant_windows"]
    # one row per distinct window (random weights may give all queries the same one)
    assert 1 <= len(windows) <= SMALL["nq"] and all(0 <= s < e <= 80.0 + 1e-6 for s, e, _ in windows)
    assert len({(s, e) for s, e, _ in windows}) == len(windows)
    scores = [c for _, _, c in windows]
    assert scores == sorted(scores, reverse=True)


def test_an_imported_checkpoint_exports_to_a_model_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """import-checkpoint output -> `sadetr export --format safetensors` -> the same predictions; the model
    card names the release it came from."""
    from sadetr.cli.main import main
    from sadetr.inference.predictor import Predictor

    src, _ = make_release(tmp_path, "qd_detr", monkeypatch)
    assert main(["import-checkpoint", str(src), "--out", str(tmp_path / "qd.ckpt")]) == 0
    args = ["export", "--checkpoint", str(tmp_path / "qd.ckpt"), "--format", "safetensors"]
    assert main([*args, "--out", str(tmp_path / "folder")]) == 0
    capsys.readouterr()
    card = (tmp_path / "folder" / "README.md").read_text()
    assert "imported from" in card and src.name in card and "## Feature pipeline" in card
    assert not (tmp_path / "folder" / "model.onnx").exists()
    rng = np.random.default_rng(0)
    feats, text = rng.normal(size=(90, 2816)), rng.normal(size=(7, 512))
    a, b = (
        Predictor.from_checkpoint(p, device="cpu").predict("q", feats, text_features=text)
        for p in (tmp_path / "qd.ckpt", tmp_path / "folder")
    )
    assert a == b and a["num_windows"] == 2


def test_cli_refusal_is_one_line_and_exit_code_2(tmp_path: Path, capsys) -> None:
    from sadetr.cli.main import main

    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert main(["import-checkpoint", str(tmp_path / "junk.ckpt"), "--out", str(tmp_path / "o.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sadetr import-checkpoint: error:") and "\n" not in err


def test_imported_clip_only_model_predicts_on_a_raw_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converted run_on_video-style model on a real video file, through the unchanged Predictor and
    extractors (a tiny random CLIP whose image embedding and text width are CLIP ViT-B/32's 512)."""
    from sadetr.inference.predictor import Predictor
    from sadetr.video.clip import load_clip
    from sadetr.video.tiny import TINY_VOCAB, make_tiny_clip, write_test_video

    src, _ = make_release(tmp_path, "qd_detr", monkeypatch, clip_only=True)
    import_release(src, tmp_path / "qd.ckpt")
    clip = load_clip(
        make_tiny_clip(tmp_path / "clip", embed_dim=512, text_width=512), expected_vocab_size=TINY_VOCAB
    )
    video = write_test_video(tmp_path / "v.mp4", n_frames=60, fps=10)  # 6 s -> 3 clips of 2 s
    predictor = Predictor.from_checkpoint(tmp_path / "qd.ckpt", device="cpu", clip=clip)
    pred = predictor.predict("the dog", video)
    assert len(pred["pred_saliency_scores"]) == 3 and pred["clip_len"] == 2.0
    assert all(0 <= s < e <= 6.0 + 1e-6 for s, e, _ in pred["pred_relevant_windows"])


# ------------------------------------------------------------------------------ hostile releases


def _clip_only_release(path: Path, state_change=None, **opt_change) -> Path:
    """A clip-only official Moment-DETR release with some `opt` fields or the state dict changed."""
    state = random_state(public_moment_detr(vdim=514, **SMALL))
    if state_change is not None:
        state_change(state)
    opt = official_opt(["features/clip_features"], 514)
    for key, value in opt_change.items():
        setattr(opt, key, value)
    torch.save({"model": state, "opt": opt, "epoch": 3}, path)
    return path


def _cli_refusal(capsys, argv: list[str], *fragments: str) -> str:
    from sadetr.cli.main import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


BAD_OPTIONS = [
    ("clip_length", -2),
    ("clip_length", 0),
    ("clip_length", float("nan")),
    ("clip_length", float("inf")),
    ("clip_length", "2"),
    ("max_v_l", 0),
    ("max_v_l", -75),
    ("max_v_l", float("nan")),
    ("max_v_l", 7.5),
    ("max_q_l", -1),
    ("max_q_l", "32"),
    ("nheads", "four"),
    ("nheads", 0),
    ("nheads", [4]),
    ("dropout", 1.5),
    ("dropout", "0.1"),
    ("input_dropout", float("nan")),
    ("dim_feedforward", "x"),
    ("hidden_dim", -32),
    ("num_queries", True),
    ("enc_layers", "2"),
    ("ctx_mode", 3),
    ("dset_name", ["hl"]),
    ("v_feat_dirs", "features/clip_features"),
    ("v_feat_dirs", [3]),
    ("use_txt_pos", "yes"),
    ("no_norm_vfeat", "no"),
]


@pytest.mark.parametrize(("key", "value"), BAD_OPTIONS, ids=[f"{k}={v!r}" for k, v in BAD_OPTIONS])
def test_refuses_an_option_of_the_wrong_type_or_range(
    key: str, value: object, tmp_path: Path, capsys
) -> None:
    src = _clip_only_release(tmp_path / "r.ckpt", **{key: value})
    out = tmp_path / "o.ckpt"
    _cli_refusal(capsys, ["import-checkpoint", str(src), "--out", str(out)], f"opt.{key}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.ckpt"]


@pytest.mark.parametrize("clip_len", ["nan", "inf", "-1", "0"])
def test_refuses_a_bad_clip_len_option(clip_len: str, tmp_path: Path, capsys) -> None:
    src = _clip_only_release(tmp_path / "r.ckpt")
    argv = ["import-checkpoint", str(src), "--out", str(tmp_path / "o.ckpt"), "--clip-len", clip_len]
    _cli_refusal(capsys, argv, "--clip-len")
    assert not (tmp_path / "o.ckpt").exists()


def _nan_weight(state: dict) -> None:
    state["transformer.encoder.layers.1.linear2.weight"][0, 3] = float("nan")


def _inf_bias(state: dict) -> None:
    state["class_embed.bias"][0] = float("inf")


def _int_key(state: dict) -> None:
    state[7] = torch.zeros(3)


def _query_embed(shape: tuple[int, ...]):
    def change(state: dict) -> None:
        state["query_embed.weight"] = torch.zeros(shape)

    return change


BAD_STATES = {
    "nan_weight": (_nan_weight, "transformer.encoder.layers.1.linear2.weight", "NaN/Inf"),
    "inf_bias": (_inf_bias, "class_embed.bias", "NaN/Inf"),
    "int_key": (_int_key, "7", "not a string"),
    "query_embed_width": (_query_embed((SMALL["nq"], SMALL["d"] + 1)), "query_embed.weight", "shape"),
    "query_embed_1d": (_query_embed((SMALL["nq"],)), "query_embed.weight", "shape"),
    "query_embed_0d": (_query_embed(()), "query_embed.weight", "shape"),
    "query_embed_empty": (_query_embed((0, SMALL["d"])), "query_embed.weight", "query"),
    "query_embed_3d": (_query_embed((SMALL["nq"], SMALL["d"], 1)), "query_embed.weight", "shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_refuses_weights_it_cannot_trust(case: str, tmp_path: Path, capsys) -> None:
    change, name, what = BAD_STATES[case]
    src = _clip_only_release(tmp_path / "r.ckpt", state_change=change)
    _cli_refusal(capsys, ["import-checkpoint", str(src), "--out", str(tmp_path / "o.ckpt")], name, what)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.ckpt"]


def test_refuses_out_equal_to_the_source(tmp_path: Path, capsys) -> None:
    src = _clip_only_release(tmp_path / "r.ckpt")
    before = src.read_bytes()
    (tmp_path / "link.ckpt").symlink_to(src)
    (tmp_path / "sub").mkdir()
    for out in (src, tmp_path / "link.ckpt", tmp_path / "sub" / ".." / "r.ckpt"):
        _cli_refusal(
            capsys, ["import-checkpoint", str(src), "--out", str(out)], "--out", "the file being imported"
        )
    assert src.read_bytes() == before


def test_a_failed_write_during_import_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save reports a full disk as a RuntimeError (measured on a full tmpfs: "[enforce fail at
    inline_container.cc:672] . unexpected pos 704 vs 598"): one line, no file, no temp file."""
    src = _clip_only_release(tmp_path / "r.ckpt")
    out = tmp_path / "out" / "o.ckpt"

    def full(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    _cli_refusal(
        capsys,
        ["import-checkpoint", str(src), "--out", str(out)],
        f"cannot write {out}",
        "nothing was written",
    )
    assert list((tmp_path / "out").iterdir()) == []


def test_a_file_size_limit_during_import_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """The same through a real failed write: a subprocess whose file size limit (RLIMIT_FSIZE) is below
    the checkpoint's size."""
    import resource
    import signal
    import subprocess

    src = _clip_only_release(tmp_path / "r.ckpt")
    out = tmp_path / "out"
    out.mkdir()

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    run = subprocess.run(
        [sys.executable, "-m", "sadetr", "import-checkpoint", str(src), "--out", str(out / "o.ckpt")],
        preexec_fn=limit,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot write {out / 'o.ckpt'}" in lines[0], run.stderr
    assert list(out.iterdir()) == []
