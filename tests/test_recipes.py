"""The `paper` recipe is what the Table 9 configs train; `tuned` is paper plus its listed readings; every
ablation row resolves to the recipe plus exactly that row's switches; `sadetr reproduce` prints them."""

from __future__ import annotations

import dataclasses
import math
import shlex
import subprocess
import sys

import pytest
import torch

from sadetr.config.compose import compose_config, config_to_dict
from sadetr.config.presets import PRESETS, TABLES, table_rows
from sadetr.config.recipes import RECIPES, get_recipe
from sadetr.core.errors import ConfigError
from sadetr.model.build import build_criterion, build_model

TABLE9_CONFIGS = ("qvhighlights_sfc", "tacos_sfc", "charades_sfc", "charades_vgg")
# Table 9's loss columns per config: (λ_l1, λ_giou, w_q, δ_q, λ_A, λ_S, λ_M, λ_Q)
TABLE9_LOSS = {
    "qvhighlights_sfc": (10, 1, 1, 0.4, 1, 1, 1, 1),
    "tacos_sfc": (10, 1, 10, 0.4, 0, 4, 1, 1),
    "charades_sfc": (10, 1, 10, 0.4, 0, 4, 1, 1),
    "charades_vgg": (10, 1, 10, 0.4, 0, 4, 1, 1),
}
# The paper's reading of each switch (docs/readings.md), which the Table 9 configs must resolve to.
PAPER_READINGS = {
    "model.self_attn_pos": "after_proj",
    "model.gate_scale": False,
    "model.position_mode": "raw",
    "model.mask_clip_time": "end",
    "model.gaussian_mode": "logits",
    "model.cross_residual": "query",
    "model.anchor_grad": "first",
    "model.dn_center_noise": "width",
    "model.round_to_clip": True,
    "loss.noise_reduction": "gt",
    "loss.qmargin_reduction": "gt",
    "loss.quality_balance": "none",
    "loss.ctm_univtg_weight": 1.0,
}


def _flat(cfg) -> dict:
    return {f"{s}.{k}": v for s, part in config_to_dict(cfg).items() for k, v in part.items()}


@pytest.mark.parametrize("name", TABLE9_CONFIGS)
def test_table9_configs_train_the_paper_s_model(name: str) -> None:
    cfg = compose_config(name)
    flat = _flat(cfg)
    assert cfg.model.recipe == "paper"
    assert {k: flat[k] for k in PAPER_READINGS} == PAPER_READINGS
    l1, giou, w_q, delta_q, lam_a, lam_s, lam_m, lam_q = TABLE9_LOSS[name]
    criterion = build_criterion(cfg.model, cfg.loss)
    # eq 10: L = λ_A (L_vtc + L_local + L_intra + L_inter) + λ_S L_S + λ_M L_M + λ_Q L_Q, with L_M's eq 7
    # terms at λ_l1 and λ_giou (direct on every layer, L_init, L_noise) and L_Q = eq 8 + eq 9
    expected: dict[str, float] = {}
    for suffix in ["", *(f"_{i}" for i in range(cfg.model.n_dec_layers - 1))]:
        expected |= {f"loss_l1{suffix}": lam_m * l1, f"loss_giou{suffix}": lam_m * giou}
        expected |= {f"loss_dn_l1{suffix}": lam_m * l1, f"loss_dn_giou{suffix}": lam_m * giou}
        expected |= {f"loss_quality{suffix}": lam_q, f"loss_qmargin{suffix}": lam_q}
    expected |= {"loss_init_l1": lam_m * l1, "loss_init_giou": lam_m * giou}
    expected |= {k: lam_a for k in ("loss_vtc", "loss_ctm_local", "loss_ctm_intra", "loss_ctm_inter")}
    expected |= {k: lam_s for k in ("loss_sal_margin", "loss_sal_rank", "loss_sal_neg")}
    assert criterion.weight_dict == pytest.approx(expected)
    assert (criterion.quality_matched_weight, criterion.qmargin) == pytest.approx((w_q, delta_q))
    assert (criterion.quality_balance, criterion.noise_reduction, criterion.qmargin_reduction) == (
        "none",
        "gt",
        "gt",
    )


def _explicit_eq1(layer: torch.nn.Module, content: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """softmax((W_q C + b_q + P_S)(W_k C + b_k + P_S)ᵀ / √d_h)(W_v C + b_v) per head, then out_proj."""
    attn = layer.self_attn
    d, h = attn.embed_dim, attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q = content @ w[:d].T + b[:d] + pos
    k = content @ w[d : 2 * d].T + b[d : 2 * d] + pos
    v = content @ w[2 * d :].T + b[2 * d :]
    dh = d // h
    heads = [
        ((q[..., i * dh : (i + 1) * dh] @ k[..., i * dh : (i + 1) * dh].transpose(-1, -2)) / math.sqrt(dh))
        .softmax(-1)
        .matmul(v[..., i * dh : (i + 1) * dh])
        for i in range(h)
    ]
    return attn.out_proj(torch.cat(heads, dim=-1))


def test_the_qvhighlights_config_s_decoder_computes_eq1_as_written() -> None:
    cfg = compose_config("qvhighlights_sfc")
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    layer = model.decoder.layers[0]
    seen: dict = {}
    layer.norm1.register_forward_hook(lambda m, args, out: seen.update(norm1_in=args[0]))
    g = torch.Generator().manual_seed(0)
    d = cfg.model.hidden_dim
    content, pos = torch.randn(2, 5, d, generator=g), torch.randn(2, 5, d, generator=g)
    spans = torch.rand(2, 5, 2, generator=g) * 0.5 + 0.2
    memory, vmask = torch.randn(2, 9, d, generator=g), torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        layer(
            content,
            spans,
            pos,
            memory,
            torch.randn(2, 9, d, generator=g),
            vmask,
            torch.randn(2, d, generator=g),
        )
        expected = _explicit_eq1(layer, content, pos)
    torch.testing.assert_close(seen["norm1_in"] - content, expected, atol=1e-5, rtol=1e-4)


def test_tuned_is_paper_plus_its_listed_readings() -> None:
    paper, tuned = (
        _flat(compose_config("qvhighlights_sfc")),
        _flat(compose_config("qvhighlights_sfc", ["model.recipe=tuned"])),
    )
    diff = {k for k in paper if paper[k] != tuned[k]}
    assert diff == {"model.recipe", *get_recipe("tuned").overrides}
    assert all(tuned[k] == v for k, v in get_recipe("tuned").overrides.items())
    assert set(get_recipe("tuned").reasons) == set(get_recipe("tuned").overrides)  # each has its reason
    assert get_recipe("paper").overrides == {}  # the paper's model is the defaults


def test_a_user_s_key_wins_over_the_recipe() -> None:
    cfg = compose_config("qvhighlights_sfc", ["model.recipe=tuned", "model.gate_scale=false"])
    assert (
        cfg.model.recipe == "tuned"
        and cfg.model.gate_scale is False
        and cfg.model.position_mode == "projected"
    )
    with pytest.raises(ConfigError, match="unknown recipe"):
        compose_config("qvhighlights_sfc", ["model.recipe=best"])
    assert set(RECIPES) == {"paper", "tuned"}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_ablation_row_is_the_paper_plus_exactly_its_switches(preset: str) -> None:
    paper = _flat(compose_config("qvhighlights_sfc"))
    row = _flat(compose_config("qvhighlights_sfc", presets=[preset]))
    switches = set(PRESETS[preset])
    assert {k for k in paper if paper[k] != row[k]} <= switches
    assert all(row[k] == v for k, v in PRESETS[preset].items())
    assert not switches & {*PAPER_READINGS, "model.recipe"}  # a row never sets a reading
    assert row["model.recipe"] == "paper"


def test_presets_apply_in_order_on_top_of_the_recipe() -> None:
    both = compose_config(
        "qvhighlights_sfc", ["model.recipe=tuned"], presets=["table4.a", "table5.init_loss"]
    )
    assert both.model.use_vtc is False and both.model.use_gaussian_mask is False  # table4.a's
    assert both.model.anchor_init == "instance" and both.model.use_init_loss  # table5.init_loss wins after it
    assert both.model.gate_scale is True  # the tuned recipe's reading underneath


def test_every_table_has_rows_and_every_preset_a_table() -> None:
    assert all(table_rows(t) for t in TABLES)
    assert {name.split(".")[0] for name in PRESETS} == set(TABLES)
    assert table_rows("table4") == [f"table4.{r}" for r in "abcdefghij"]


@pytest.mark.parametrize("table", [*TABLES, "table12"])
def test_reproduce_prints_a_command_per_row_that_composes_to_the_row(table: str) -> None:
    from sadetr.cli.commands.compare import entries_of, entry_config
    from sadetr.cli.commands.reproduce import row_commands
    from sadetr.cli.commands.train import config_overrides
    from sadetr.cli.main import build_parser

    lines = row_commands(table, [], ["train.epochs=3"], "paper", "runs")
    rows = table_rows(table) if table != "table12" else []
    assert len(lines) == (1 if table in ("fig5", "table12") else len(rows))
    parser = build_parser()
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "sadetr"
        args = parser.parse_args(argv[1:])
        if args.command == "compare":
            cfgs = {n: entry_config(args, b, o) for n, (b, o) in entries_of(args).items()}
            assert set(rows) <= set(cfgs) and all(
                cfgs[r].model.use_dn == PRESETS[r]["model.use_dn"] for r in rows
            )
            continue
        cfg = compose_config(args.config, config_overrides(args), presets=args.presets)
        assert cfg.train.epochs == 3 and cfg.model.recipe == "paper"
        if rows:
            (preset,) = args.presets
            assert preset in rows and all(_flat(cfg)[k] == v for k, v in PRESETS[preset].items())


def test_reproduce_cli() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "sadetr", "reproduce", "table6", "--recipe", "tuned"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and len(run.stdout.splitlines()) == 4
    assert all("--recipe tuned" in line for line in run.stdout.splitlines())
    bad = subprocess.run(
        [sys.executable, "-m", "sadetr", "reproduce", "table9"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown table" in bad.stderr and "Traceback" not in bad.stderr


def test_the_recipe_is_stored_in_the_run_config(tmp_path) -> None:
    from sadetr.config.compose import load_config, save_config

    cfg = compose_config("synthetic_tiny", ["model.recipe=tuned"])
    save_config(cfg, tmp_path / "config.yaml")
    back = load_config(tmp_path / "config.yaml")
    assert back == cfg and dataclasses.asdict(back.model)["recipe"] == "tuned"
