"""Config composition: Table 9 values of the shipped configs, layering, overrides, errors, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sadetr.config.compose import (
    compose_config,
    config_to_dict,
    list_builtin_configs,
    load_config,
    parse_override,
    save_config,
)
from sadetr.core.errors import ConfigError

# Table 9: dataset config -> (bs, epochs, lr, N_q, N_n, N_s, alpha, sigma_p, sigma_n, l1, giou, w_q,
#                             delta_q, lambda_A, lambda_S, lambda_M, lambda_Q)
TABLE9 = {
    "qvhighlights_sfc": (32, 200, 1e-4, 10, 5, 10, 2, 0.2, 0.6, 10, 1, 1, 0.4, 1, 1, 1, 1),
    "tacos_sfc": (32, 200, 2e-4, 10, 5, 15, 2, 0.2, 0.6, 10, 1, 10, 0.4, 0, 4, 1, 1),
    "charades_sfc": (32, 200, 2e-4, 10, 5, 15, 2, 0.2, 0.6, 10, 1, 10, 0.4, 0, 4, 1, 1),
    "charades_vgg": (16, 100, 1e-4, 10, 5, 10, 2, 0.2, 0.6, 10, 1, 10, 0.4, 0, 4, 1, 1),
}


@pytest.mark.parametrize("name", sorted(TABLE9))
def test_table9_settings(name: str) -> None:
    c = compose_config(name)
    got = (
        c.train.batch_size,
        c.train.epochs,
        c.train.lr,
        c.model.num_queries,
        c.model.num_dn_groups,
        c.model.num_align_points,
        c.model.gaussian_alpha,
        c.model.dn_sigma_p,
        c.model.dn_sigma_n,
        c.loss.l1,
        c.loss.giou,
        c.loss.quality_matched_weight,
        c.loss.qmargin,
        c.loss.lambda_align,
        c.loss.lambda_saliency,
        c.loss.lambda_moment,
        c.loss.lambda_quality,
    )
    assert got == pytest.approx(TABLE9[name])
    assert c.train.weight_decay == 1e-4 and c.train.grad_clip == 0.1
    assert c.model.video_dim == c.data.video_feat_dim and c.model.text_dim == c.data.text_dim


def test_dataset_specific_settings() -> None:
    qvh, cha, vgg, tac = (
        compose_config(n) for n in ("qvhighlights_sfc", "charades_sfc", "charades_vgg", "tacos_sfc")
    )
    assert (qvh.train.lr_schedule, qvh.train.lr_constant_epochs) == ("constant_cosine", 40)
    assert qvh.train.selection_metric == "MR-full-mAP"
    assert {c.train.selection_metric for c in (cha, vgg, tac)} == {"MR-full-R1@0.7"}
    assert (qvh.data.clip_len, cha.data.clip_len, vgg.data.clip_len, tac.data.clip_len) == (
        2.0,
        1.0,
        0.125,
        2.0,
    )
    assert (qvh.model.video_dim, vgg.model.video_dim, vgg.model.text_dim) == (2818, 4098, 300)


def test_every_builtin_config_composes() -> None:
    names = list_builtin_configs()
    assert {"qvhighlights_sfc", "synthetic_qvh", "synthetic_tiny"} <= set(names)
    for name in names:
        compose_config(name)


def _write(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path


def test_layers_merge_in_order(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    _write(tmp_path / "parts" / "a.yaml", {"model": {"hidden_dim": 64, "nheads": 4}, "train": {"lr": 0.5}})
    _write(tmp_path / "parts" / "b.yaml", {"model": {"hidden_dim": 128}})
    top = _write(tmp_path / "top.yaml", {"_base_": ["parts/a.yaml", "parts/b.yaml"], "train": {"epochs": 3}})
    c = compose_config(top)
    assert (c.model.hidden_dim, c.model.nheads, c.train.lr, c.train.epochs) == (128, 4, 0.5, 3)
    # a later part of a nested section replaces only its own keys
    assert c.train.batch_size == 32


def test_overrides_are_yaml_scalars_and_win_over_preset() -> None:
    assert parse_override("train.lr=1e-4") == ("train.lr", "1e-4")  # PyYAML 1.1: string, coerced below
    c = compose_config(
        "qvhighlights_sfc",
        ["train.lr=1e-4", "model.use_dn=true", "data.video_dims=[2304, 512]", "train.epochs=7"],
        presets=["table4.a"],
    )
    assert c.train.lr == 1e-4 and c.train.epochs == 7
    assert c.model.use_dn is True  # the explicit override beats the preset
    assert c.model.use_vtc is False and c.model.anchor_init == "learnable"  # the preset's other switches


def test_save_load_round_trip(tmp_path: Path) -> None:
    c = compose_config("charades_vgg", ["model.hidden_dim=64", "train.seed=3"], presets=["table4.c"])
    save_config(c, tmp_path / "run" / "config.yaml")
    back = load_config(tmp_path / "run" / "config.yaml")
    assert back == c
    assert config_to_dict(back) == config_to_dict(c)


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ("model.hiden_dim=3", "model.hiden_dim", "unknown key"),
        ("modle.hidden_dim=3", "modle", "unknown key"),
        ("train.epochs=ten", "train.epochs", "integer"),
        ("train.epochs=2.5", "train.epochs", "integer"),
        ("model.use_dn=maybe", "model.use_dn", "true/false"),
        ("data.video_dims=[1, x]", "data.video_dims[1]", "integer"),
        ("train.lr.x=1", "train.lr", "not a section"),
        ("train.lr", "train.lr", "expected section.key=value"),
        ("=3", "=3", "expected section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose_config("synthetic_tiny", [override])
    assert info.value.key == key
    assert fragment in str(info.value) and str(info.value).startswith(f"{key}: ")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config"):
        compose_config("no_such_config")
    a = _write(tmp_path / "a.yaml", {"_base_": ["b.yaml"]})
    _write(tmp_path / "b.yaml", {"_base_": ["a.yaml"]})
    with pytest.raises(ConfigError, match="circular"):
        compose_config(a)
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        compose_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError):
        compose_config("synthetic_tiny", presets=["table99.z"])
