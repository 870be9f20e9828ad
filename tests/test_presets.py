"""Ablation presets: every override names a real config field with a valid value; rows match the tables."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sadetr.config.presets import PRESETS, get_preset, list_presets
from sadetr.core.errors import ConfigError
from sadetr.model.build import build_model
from sadetr.model.config import LossConfig, ModelConfig

SECTIONS = {"model": ModelConfig, "loss": LossConfig}
TABLE4_SWITCHES = ("model.use_vtc", "model.use_ctm", "model.use_gaussian_mask", "model.use_span_enhance")


def apply(overrides: dict[str, object]) -> ModelConfig:
    small = dict(video_dim=6, text_dim=5, hidden_dim=8, nheads=2, ffn_dim=16, num_queries=3)
    model_kw = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("model.")}
    return dataclasses.replace(ModelConfig(**small), **model_kw)


@pytest.mark.parametrize("name", list_presets())
def test_preset_names_real_fields_and_builds(name):
    overrides = get_preset(name)
    assert overrides
    for key, value in overrides.items():
        section, field = key.split(".", 1)
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        assert field in fields, key
        default = getattr(SECTIONS[section](), field)
        assert type(value) is type(default), key  # same type as the field's default
    model = build_model(apply(overrides)).train()
    video, text = torch.randn(2, 4, 6), torch.randn(2, 3, 5)
    ones = torch.ones(2, 4, dtype=torch.bool)
    out = model(video, ones, text, ones[:, :3], [torch.tensor([[0.5, 0.2]])] * 2)
    assert out["pred_spans"].shape == (2, 3, 2)


def test_table4_rows():
    a = get_preset("table4.a")
    assert all(a[k] is False for k in TABLE4_SWITCHES)
    assert (
        a["model.use_dn"] is False and a["model.anchor_init"] == "learnable" and not a["model.use_init_loss"]
    )
    j = get_preset("table4.j")
    assert all(j[k] is True for k in TABLE4_SWITCHES)
    assert j["model.use_dn"] and j["model.anchor_init"] == "instance" and j["model.use_init_loss"]
    assert [r for r in list_presets() if r.startswith("table4.")] == [f"table4.{c}" for c in "abcdefghij"]
    # (i) = FA + QI + DN, without the span aware decoder.
    i = get_preset("table4.i")
    assert i["model.use_vtc"] and i["model.use_dn"] and not i["model.use_gaussian_mask"]
    # The full-model row equals the default config on every switch it names.
    assert all(getattr(ModelConfig(), k.split(".")[1]) == v for k, v in j.items())


def test_get_preset_unknown_and_copy():
    with pytest.raises(ConfigError, match=r"table4\.a"):
        get_preset("table99.z")
    get_preset("table4.a")["model.use_dn"] = True
    assert PRESETS["table4.a"]["model.use_dn"] is False
