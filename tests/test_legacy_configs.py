"""Old checkpoints keep every behaviour they were trained with (`LEGACY_DEFAULTS`), a removed switch is
refused by name (`REMOVED_SWITCHES`), and a new config key cannot be added without a legacy entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from sadetr.config.compose import (
    LAST_VERSION_WITH_REMOVED,
    LEGACY_DEFAULTS,
    REMOVED_SWITCHES,
    compose_config,
    config_to_dict,
    stored_config,
)
from sadetr.core.errors import ConfigError

LEGACY = Path(__file__).parent / "data" / "legacy"
# Keys that no builder reads (a legacy value that changes nothing is right for them).
METADATA_KEYS = {"model.recipe"}


def _get(cfg: Any, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def _without(tree: dict, dotted: str) -> dict:
    section, key = dotted.split(".")
    return {s: {k: v for k, v in part.items() if (s, k) != (section, key)} for s, part in tree.items()}


def _inputs() -> tuple:
    g = torch.Generator().manual_seed(1)
    bsz, length, tokens = 3, 20, 7
    video_mask = torch.ones(bsz, length, dtype=torch.bool)
    video_mask[1, 15:] = False
    text_mask = torch.ones(bsz, tokens, dtype=torch.bool)
    text_mask[2, 5:] = False
    spans = [torch.tensor([[0.3, 0.2]]), torch.tensor([[0.5, 0.1], [0.8, 0.2]]), torch.tensor([[0.6, 0.4]])]
    saliency = torch.zeros(bsz, length)
    saliency[:, 4:8] = 3.0
    batch = {
        "spans": spans,
        "saliency": saliency,
        "relevant": saliency > 0,
        "saliency_pos_idx": torch.tensor([[4, 5]] * bsz),
        "saliency_neg_idx": torch.tensor([[0, 1]] * bsz),
        "vid_index": torch.arange(bsz),
    }
    return g, video_mask, text_mask, batch


def behaviour(cfg: Any, weights: dict | None = None) -> dict[str, Any]:
    """What a config decides, on a fixed batch: the training forward (noise draws seeded), every loss
    term with its weight, and the submitted windows of the eval forward. `weights`: a state dict loaded
    where its shapes fit (so two configs are compared on the same parameters)."""
    from sadetr.model.build import build_criterion, build_model
    from sadetr.model.postprocess import to_submission

    torch.manual_seed(0)
    model = build_model(cfg.model)
    if weights is not None:
        own = model.state_dict()
        model.load_state_dict(
            {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}, False
        )
    g, video_mask, text_mask, batch = _inputs()
    video = torch.randn(3, 20, cfg.model.video_dim, generator=g)
    text = torch.randn(3, 7, cfg.model.text_dim, generator=g)
    torch.manual_seed(5)
    model.train()
    if cfg.model.name == "sa_detr":  # the noise anchors drawn from their own generator
        out = model(video, video_mask, text, text_mask, batch["spans"], torch.Generator().manual_seed(3))
    else:
        out = model(video, video_mask, text, text_mask, batch["spans"])
    criterion = build_criterion(cfg.model, cfg.loss)
    losses = {
        k: round(float(v.detach()) * criterion.weight_dict.get(k, 0.0), 5)
        for k, v in criterion(out, batch).items()
    }
    with torch.no_grad():
        out = model.eval()(video, video_mask, text, text_mask)
    meta = [
        {"qid": b, "vid": f"v{b}", "query": "q", "duration": 39.0, "clip_sec": 2.0, "num_clips": 20}
        for b in range(3)
    ]
    records = to_submission(out, meta, round_to_clip=cfg.model.round_to_clip)
    return {
        "losses": losses,
        "windows": [r["pred_relevant_windows"] for r in records],
        "weights": model.state_dict(),
    }


def _same(a: dict, b: dict) -> bool:
    return a["losses"] == b["losses"] and a["windows"] == b["windows"]


@pytest.mark.parametrize("dotted", sorted(LEGACY_DEFAULTS))
def test_a_stored_config_without_the_key_keeps_its_legacy_behaviour(dotted: str) -> None:
    # QD-DETR's own keys decide QD-DETR's behaviour
    cfg = compose_config("synthetic_tiny", ["model.name=qd_detr"] if dotted.startswith("model.qd_") else [])
    tree = config_to_dict(cfg)
    old = stored_config(_without(tree, dotted))
    legacy = LEGACY_DEFAULTS[dotted]
    assert _get(old, dotted) == legacy  # the value runs had before the key existed
    assert stored_config(tree) == cfg  # a stored key keeps its stored value
    if dotted.startswith("data."):
        return  # the data pipeline's legacy values equal its defaults (test_every_legacy_value_...)
    new = behaviour(cfg)
    then = behaviour(old, new["weights"])
    if dotted in METADATA_KEYS or legacy == _get(cfg, dotted):
        assert _same(then, new), f"{dotted}: the same value must give the same behaviour"
    else:
        assert not _same(then, new), f"{dotted}: its legacy value {legacy!r} changes nothing"


def test_the_legacy_values_that_equal_today_s_defaults() -> None:
    # listed so that a change of one of these defaults shows up here: configs stored before the key
    # existed keep the legacy value, configs stored since keep theirs, only new configs change
    cfg = compose_config("synthetic_tiny")
    same = sorted(k for k, v in LEGACY_DEFAULTS.items() if _get(cfg, k) == v)
    assert same == [
        "data.allow_empty_windows", "loss.ctm_univtg_weight", "loss.quality_balance", "model.anchor_grad",
        "model.dn_center_noise", "model.gate_scale", "model.gaussian_mode", "model.position_mode",
        "train.compile",
    ]  # fmt: skip


def test_a_new_config_key_needs_a_legacy_entry() -> None:
    """Every key of today's config existed in the first stored format or has a `LEGACY_DEFAULTS` entry:
    a new key without one would give old checkpoints (which lack it) today's default, not their value."""
    first = set(json.loads((LEGACY / "config_keys_first.json").read_text()))
    tree = config_to_dict(compose_config("synthetic_tiny"))
    keys = {f"{section}.{key}" for section, part in tree.items() for key in part}
    missing = sorted(keys - first - set(LEGACY_DEFAULTS))
    assert missing == [], f"add LEGACY_DEFAULTS entries (the value before each key existed) for {missing}"
    assert not set(LEGACY_DEFAULTS) & first  # an entry for a key every stored config has would never apply


def test_a_checkpoint_of_sadetr_0_1_keeps_its_model() -> None:
    """The config that sadetr 0.1.0 stored for `synthetic_tiny` (its defaults, every key explicit, the
    removed switches at their neutral values) loads as the `tuned` recipe: the same model and losses."""
    stored = yaml.safe_load((LEGACY / "config_0.1.0.yaml").read_text())
    assert "span_query" in stored["model"] and "recipe" not in stored["model"]
    old = stored_config(stored)
    tuned = compose_config("synthetic_tiny", ["model.recipe=tuned"])
    assert old.model.recipe == "unnamed"
    assert _same(behaviour(old), behaviour(tuned))
    paper = compose_config("synthetic_tiny")
    assert not _same(behaviour(old), behaviour(paper))


@pytest.mark.parametrize("dotted", sorted(REMOVED_SWITCHES))
def test_a_removed_switch_is_refused_by_name_unless_neutral(dotted: str) -> None:
    section, key = dotted.split(".")
    tree = config_to_dict(compose_config("synthetic_tiny"))
    neutral = REMOVED_SWITCHES[dotted]
    tree[section][key] = neutral
    assert stored_config(tree) == stored_config(_without(tree, dotted))  # dropped: it changed nothing
    tree[section][key] = (
        (not neutral) if isinstance(neutral, bool) else "other" if isinstance(neutral, str) else 0.5
    )
    with pytest.raises(ConfigError) as err:
        stored_config(tree)
    assert err.value.key == dotted
    assert f"sadetr {LAST_VERSION_WITH_REMOVED} is the last version" in str(err.value)


def test_a_checkpoint_file_loads_with_its_legacy_readings(tmp_path: Path) -> None:
    from sadetr.engine.checkpoint import load_trained_model, save_checkpoint
    from sadetr.model.build import build_criterion, build_model

    stored = yaml.safe_load((LEGACY / "config_0.1.0.yaml").read_text())
    for key in ("gate_scale", "position_mode"):  # written before these keys existed
        del stored["model"][key]
    legacy = stored_config(stored)
    model = build_model(legacy.model)
    state = {"model": model.state_dict(), "config": stored, "features": {}, "epoch": 1, "step": 0}
    save_checkpoint(tmp_path / "old.ckpt", state)
    loaded, loaded_cfg, _ = load_trained_model(tmp_path / "old.ckpt")
    assert loaded_cfg == legacy and loaded_cfg.model.position_mode == "raw"
    assert loaded.decoder.layers[0].span_enhance.gate_div == 1.0  # the unscaled eq 3 gate
    assert loaded.decoder.layers[0].self_attn_pos == "before_proj"  # sadetr 0.1's eq 1 form
    weights = build_criterion(loaded_cfg.model, loaded_cfg.loss).weight_dict
    assert weights["loss_ctm_intra"] == pytest.approx(0.1 * loaded_cfg.loss.lambda_align)  # stored 0.1
