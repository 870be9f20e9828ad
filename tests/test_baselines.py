"""Moment-DETR / QD-DETR baselines: parameter parity with the public code, forward contract, Table 11
switches, the criterion terms that differ from SA-DETR's, and learning on synthetic data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sadetr.model.baselines.losses import BaselineCriterion, label_loss
from sadetr.model.baselines.qd_detr import multihead_attention
from sadetr.model.build import build_criterion, build_model
from sadetr.model.config import LossConfig, ModelConfig
from sadetr.model.matcher import HungarianMatcher

SMALL = dict(video_dim=12, text_dim=10, hidden_dim=32, nheads=4, ffn_dim=64, num_queries=5)


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name, expected", [("moment_detr", 4_823_305), ("qd_detr", 7_585_573)])
def test_parameter_parity_with_public_code(name: str, expected: int) -> None:
    # QVHighlights SF+C: 2818-d video, 512-d text, d=256, 8 heads, FFN 1024, 2+2 layers, 10 queries.
    assert _n_params(build_model(ModelConfig(name=name))) == expected


def _inputs(bsz: int = 3, lv: int = 9, lt: int = 6, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(bsz, lv, SMALL["video_dim"], generator=g)
    text = torch.randn(bsz, lt, SMALL["text_dim"], generator=g)
    vmask = torch.ones(bsz, lv, dtype=torch.bool)
    vmask[1, 6:] = False
    tmask = torch.ones(bsz, lt, dtype=torch.bool)
    tmask[2, 3:] = False
    return video, vmask, text, tmask


def _model(name: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name=name, dropout=0.0, input_dropout=0.0, **SMALL, **kw))


@pytest.mark.parametrize(
    "name, switches",
    [
        ("moment_detr", {}),
        ("qd_detr", {}),
        ("qd_detr", {"qd_dynamic_anchor": True, "qd_gaussian_mask": True}),
    ],
)
def test_forward_contract_and_padding_invariance(name: str, switches: dict) -> None:
    model = _model(name, **switches).eval()
    video, vmask, text, tmask = _inputs()
    with torch.no_grad():
        out = model(video, vmask, text, tmask)
        # Sample 1 alone with its padding cut off must give the same predictions.
        alone = model(video[1:2, :6], vmask[1:2, :6], text[1:2], tmask[1:2])
    assert out["pred_spans"].shape == (3, 5, 2) and out["pred_logits"].shape == (3, 5, 2)
    assert ((out["pred_spans"] > 0) & (out["pred_spans"] < 1)).all()
    torch.testing.assert_close(out["pred_quality"], out["pred_logits"].softmax(-1)[..., 0])
    assert out["saliency_scores"].shape == (3, 9)
    assert len(out["aux_outputs"]) == 1 and out["aux_outputs"][0]["pred_logits"].shape == (3, 5, 2)
    assert out["dn_outputs"] is None and (out["init_spans"] is None) == (not switches)
    torch.testing.assert_close(alone["pred_spans"], out["pred_spans"][1:2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        alone["saliency_scores"], out["saliency_scores"][1:2, :6], atol=1e-5, rtol=1e-4
    )


def test_qd_detr_negative_pass_pairs_each_video_with_next_query() -> None:
    model = _model("qd_detr").train()  # negative pass only in training; dropout is 0
    video, vmask, text, tmask = _inputs()
    out = model(video, vmask, text, tmask)
    rolled = model(video, vmask, text.roll(-1, 0), tmask.roll(-1, 0))
    torch.testing.assert_close(out["saliency_scores_neg"], rolled["saliency_scores"])
    assert not torch.allclose(out["saliency_scores_neg"], out["saliency_scores"])


def test_multihead_attention_gaussian_logit_mask_hand_case() -> None:
    # One head, one query, two keys: logits q·k/sqrt(2) = [2/sqrt(2), 0]; the mask multiplies logits.
    q = torch.tensor([[1.0, 0.0]]).view(1, 1, 1, 2)
    k = torch.tensor([[2.0, 0.0], [0.0, 0.0]]).view(1, 2, 1, 2)
    v = torch.tensor([[1.0], [0.0]]).view(1, 2, 1)
    drop = torch.nn.Dropout(0.0)
    plain = multihead_attention(q, k, v, 1, None, drop)
    a = math.sqrt(2.0)
    assert plain.item() == pytest.approx(math.exp(a) / (math.exp(a) + 1))
    mask = torch.tensor([[[0.5, 1.0]]])  # (B, Nq, L)
    masked = multihead_attention(q, k, v, 1, None, drop, logit_mask=mask)
    assert masked.item() == pytest.approx(math.exp(0.5 * a) / (math.exp(0.5 * a) + 1))
    padded = multihead_attention(q, k, v, 1, torch.tensor([[False, True]]), drop)
    assert padded.item() == pytest.approx(1.0)


def test_table11_switches_change_the_model() -> None:
    video, vmask, text, tmask = _inputs()
    base = _model("qd_detr").eval()
    dyn = _model("qd_detr", qd_dynamic_anchor=True).eval()
    gauss = _model("qd_detr", qd_dynamic_anchor=True, qd_gaussian_mask=True).eval()
    gauss.load_state_dict(dyn.state_dict())  # same weights: only the attention modulation differs
    with torch.no_grad():
        o_dyn, o_gauss = dyn(video, vmask, text, tmask), gauss(video, vmask, text, tmask)
    assert base.query_embed is not None and dyn.query_embed is None
    # Dynamic anchors depend on the input (unlike learnable ones) and are the first layer's anchors.
    init = o_dyn["init_spans"]
    assert init.shape == (3, 5, 2) and not torch.allclose(init[0], init[2])
    assert not torch.allclose(o_dyn["pred_spans"], o_gauss["pred_spans"])
    crit = build_criterion(ModelConfig(name="qd_detr", qd_dynamic_anchor=True, **SMALL), LossConfig())
    assert "loss_init_l1" in crit.weight_dict


def test_label_loss_is_plain_mean_of_weighted_terms() -> None:
    # Equal logits: -log p = ln 2 per query. One matched (w=1), one background (w=eos=0.1):
    # public code: (ln2 + 0.1 ln2) / 2; PyTorch's weighted mean would give ln 2.
    logits = torch.zeros(1, 2, 2)
    matches = [(torch.tensor([0]), torch.tensor([0]))]
    assert label_loss(logits, matches, 0.1).item() == pytest.approx(0.55 * math.log(2))
    # Confident correct logits give (almost) zero.
    sharp = torch.tensor([[[10.0, -10.0], [-10.0, 10.0]]])
    assert label_loss(sharp, matches, 0.1).item() < 1e-6


def test_class_cost_decides_between_equal_spans() -> None:
    # Two queries with the same span: the one with the higher foreground probability is matched.
    crit = BaselineCriterion(HungarianMatcher(10.0, 1.0), {}, losses=(), cost_label=4.0)
    layer = {
        "pred_spans": torch.tensor([[[0.5, 0.2], [0.5, 0.2]]]),
        "pred_logits": torch.tensor([[[-1.0, 1.0], [2.0, -2.0]]]),
    }
    ((pred_idx, tgt_idx),) = crit.match(layer, [torch.tensor([[0.5, 0.2]])])
    assert pred_idx.tolist() == [1] and tgt_idx.tolist() == [0]


def _batch(bsz: int = 3, lv: int = 9) -> dict:
    saliency = torch.zeros(bsz, lv)
    saliency[:, 2:5] = torch.tensor([4.0, 12.0, 8.0])
    return {
        "spans": [
            torch.tensor([[0.4, 0.3]]),
            torch.tensor([[0.3, 0.2], [0.8, 0.1]]),
            torch.tensor([[0.5, 0.5]]),
        ],
        "saliency": saliency,
        "relevant": saliency > 0,
        "saliency_pos_idx": torch.tensor([[3, 4]] * bsz),
        "saliency_neg_idx": torch.tensor([[0, 7]] * bsz),
        "vid_index": torch.arange(bsz),
    }


@pytest.mark.parametrize(
    "name, saliency_terms",
    [("moment_detr", {"loss_sal_margin"}), ("qd_detr", {"loss_sal_margin", "loss_sal_rank", "loss_sal_neg"})],
)
def test_criterion_terms_and_weights(name: str, saliency_terms: set[str]) -> None:
    model = _model(name).train()
    video, vmask, text, tmask = _inputs()
    out = model(video, vmask, text, tmask)
    crit = build_criterion(ModelConfig(name=name, **SMALL), LossConfig())
    losses = crit(out, _batch())
    expected = {
        "loss_l1",
        "loss_giou",
        "loss_label",
        "loss_l1_0",
        "loss_giou_0",
        "loss_label_0",
    } | saliency_terms
    assert set(losses) == expected
    assert crit.weight_dict["loss_label"] == 4.0 and crit.weight_dict["loss_l1"] == 10.0
    assert all(torch.isfinite(v) for v in losses.values())
    total = crit.total(losses)
    total.backward()
    assert model.class_embed.weight.grad is not None and model.class_embed.weight.grad.abs().sum() > 0


def test_build_criterion_dispatches_on_model_name() -> None:
    # build.py picks the criterion as it picks the model: SA-DETR's own SetCriterion (quality head, no
    # class head) for sa_detr, the class-head BaselineCriterion for the baselines; unknown names refused.
    from sadetr.core.errors import ConfigError
    from sadetr.model.losses import SetCriterion

    sa = build_criterion(ModelConfig(name="sa_detr"), LossConfig())
    assert type(sa) is SetCriterion
    assert "loss_quality" in sa.weight_dict and "loss_label" not in sa.weight_dict
    for name in ("moment_detr", "qd_detr"):
        crit = build_criterion(ModelConfig(name=name), LossConfig())
        assert type(crit) is BaselineCriterion and "loss_quality" not in crit.weight_dict
    with pytest.raises(ConfigError, match=r"model\.name"):
        build_criterion(ModelConfig(name="detr"), LossConfig())


SRC = Path(__file__).resolve().parents[1] / "src"


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a source file imports (relative imports resolved)."""
    import ast

    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(x for x in (base, node.module or "") if x)
            names.update([module] + [f"{module}.{alias.name}" for alias in node.names])
    return names


def test_only_build_imports_the_baselines() -> None:
    # the baselines depend on the shared model modules, never the other way round (no import cycle):
    # outside sadetr/model/baselines/, only sadetr/model/build.py may import the subpackage.
    importers = {
        str(path.relative_to(SRC))
        for path in (SRC / "sadetr").rglob("*.py")
        if "baselines" not in path.relative_to(SRC).parts
        and any(m.startswith("sadetr.model.baselines") for m in _imported_modules(path))
    }
    assert importers == {"sadetr/model/build.py"}


def test_table11_presets() -> None:
    from sadetr.config.presets import get_preset

    assert get_preset("table11.qd_detr")["model.qd_dynamic_anchor"] is False
    dyn, gauss = get_preset("table11.dynamic_anchor"), get_preset("table11.gaussian_mask")
    assert dyn["model.name"] == gauss["model.name"] == "qd_detr"
    assert dyn["model.qd_dynamic_anchor"] and not dyn["model.qd_gaussian_mask"]
    assert gauss["model.qd_dynamic_anchor"] and gauss["model.qd_gaussian_mask"]


def test_compare_helpers(tmp_path) -> None:
    from sadetr.cli.commands.compare import (
        eval_curves,
        eval_records,
        format_table,
        parse_models,
        plot_curves,
        summarize_entry,
    )
    from sadetr.core.errors import ConfigError

    assert parse_models("qd_detr, table11.gaussian_mask") == ["qd_detr", "table11.gaussian_mask"]
    for bad in ("qd_detr,qd_detr", "detr", ""):
        with pytest.raises(ConfigError):
            parse_models(bad)
    (tmp_path / "metrics.jsonl").write_text(
        '{"kind": "train", "epoch": 1, "global_step": 3, "loss": 1.0}\n'
        '{"kind": "eval", "epoch": 1, "global_step": 3, "MR-full-mAP": 2.5}\n'
        '{"kind": "eval", "epoch": 2, "global_step": 6, "MR-full-mAP": 4.0}\n'
    )
    assert eval_curves(eval_records(tmp_path), ("MR-full-mAP",)) == {"MR-full-mAP": [(1, 2.5), (2, 4.0)]}
    results = {
        "a": {"summary": summarize_entry({0: {"MR-full-mAP": 1.0}, 1: {"MR-full-mAP": 3.0}})},
        "b": {"summary": summarize_entry({0: {"MR-full-mAP": 5.0}})},
    }
    table = format_table(results, ["MR-full-mAP"])
    assert "| a | 2.00 ± 1.41 |" in table and "| b | 5.00 |" in table
    plot_curves({"a": [[(1, 1.0), (2, 2.0)], [(1, 2.0), (2, 3.0)]]}, "MR-full-mAP", tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ learning

# Learning. Both baselines are scored on held-out data: trained on synthetic Charades-shaped queries and
# evaluated ONCE, on the 100 val queries they never saw, after their last epoch (no model selection).
# QD-DETR (400 train queries), observed (seed 2018, this budget): MR-full-mAP 47.7 vs constant 10.0 (the
# trajectory is not monotone: 24.0 at epoch 24, 36.7 at 27). Its DAB queries start identical (zero
# content, 2-d anchors), so its spans and ranking follow the query only after ~1000 steps.
# Moment-DETR needs dropout off and 800 train queries: with its default dropout (0.5 on the inputs) it
# stayed at 8-22 mAP up to 2500 steps on the 400-query split; without dropout on 400 queries the last
# epoch (30-40) ranged 13-36 over seeds (seed 2 stalls near the constant). On 800 queries, 20 epochs
# (2000 steps), the last epoch gave 38.2 / 40.4 / 47.0 (seeds 2018 / 1 / 2) vs constant 10.0.
HELD_OUT_EPOCHS = 30  # x 50 steps (batch 8)
HELD_OUT_MARGIN = 10.0  # MR-full-mAP points above the best constant span chosen on the val split itself
MDETR_EPOCHS = 20  # x 100 steps (batch 8, 800 train queries)
MDETR_MARGIN = 15.0  # the same, for Moment-DETR


def synthetic_charades_set(tmp_path_factory, n_train: int, n_val: int) -> Path:
    """The synthetic Charades-shaped set (~30 one-second clips per video)."""
    from sadetr.data.synth import generate_synthetic

    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, "charades", n_train=n_train, n_val=n_val, seed=0)
    return root


def constant_baseline_map(annotations: Path) -> float:
    """Best MR-full-mAP of a model-free predictor giving every query the same span (oracle over a grid
    of (center, width), chosen on the evaluated set itself)."""
    from sadetr.eval import evaluate, load_jsonl

    gt = load_jsonl(annotations)
    best = 0.0
    for c in np.linspace(0.1, 0.9, 17):
        for w in np.linspace(0.1, 0.9, 17):
            s, e = max(0.0, c - w / 2), min(1.0, c + w / 2)
            sub = [
                {
                    "qid": r["qid"],
                    "query": r["query"],
                    "vid": r["vid"],
                    "pred_relevant_windows": [[s * r["duration"], e * r["duration"], 1.0]],
                }
                for r in gt
            ]
            best = max(best, evaluate(sub, gt)["brief"]["MR-full-mAP"])
    return best


def run_compare(
    name: str,
    data: Path,
    out: Path,
    epochs: int,
    eval_split: str,
    eval_every: int,
    extra: tuple[str, ...] = (),
) -> float:
    """`sadetr compare` (CLI, engine, evaluation) of one tiny baseline -> its best MR-full-mAP (the only
    one when `eval_every == epochs`); `extra` are more `--set KEY=VALUE` overrides."""
    from sadetr.cli.main import main

    args = ["compare", "--models", name, "--config", "synthetic_tiny", "--config", str(data / "dataset.yaml")]
    args += ["--epochs", str(epochs), "--out", str(out)]
    for kv in (
        "train.lr=2e-3",
        "train.batch_size=8",
        "train.lr_schedule=constant",
        f"train.eval_split={eval_split}",
        f"train.eval_every={eval_every}",
        "train.device=cpu",
        "data.cache_features=true",
        *extra,
    ):
        args += ["--set", kv]
    assert main(args) == 0
    assert (out / "compare_curves.png").is_file() and name in (out / "compare.md").read_text()
    result = json.loads((out / "compare.json").read_text())[name]
    (curve,) = result["curves"].values()
    assert [epoch for epoch, _ in curve] == list(range(eval_every, epochs + 1, eval_every))
    return result["summary"]["MR-full-mAP"]["mean"]


@pytest.mark.slow
def test_qd_detr_learns_held_out_queries(tmp_path_factory, tmp_path: Path) -> None:
    """Scored once on the val split after the last epoch, QD-DETR must beat the best constant-span
    predictor (chosen on that split) by a clear margin."""
    data = synthetic_charades_set(tmp_path_factory, 400, 100)
    learned = run_compare("qd_detr", data, tmp_path / "cmp", HELD_OUT_EPOCHS, "val", HELD_OUT_EPOCHS)
    constant = constant_baseline_map(data / "annotations" / "val.jsonl")
    print(f"qd_detr: held-out MR-full-mAP {learned:.2f} vs constant {constant:.2f}")
    assert learned > constant + HELD_OUT_MARGIN


@pytest.mark.slow
def test_moment_detr_learns_held_out_queries(tmp_path_factory, tmp_path: Path) -> None:
    """Scored once on the val split after the last epoch (dropout off, 800 train queries), Moment-DETR
    must beat the best constant-span predictor (chosen on that split) by a clear margin."""
    data = synthetic_charades_set(tmp_path_factory, 800, 100)
    no_dropout = ("model.dropout=0", "model.input_dropout=0")
    out = tmp_path / "cmp"
    learned = run_compare("moment_detr", data, out, MDETR_EPOCHS, "val", MDETR_EPOCHS, no_dropout)
    constant = constant_baseline_map(data / "annotations" / "val.jsonl")
    print(f"moment_detr: held-out MR-full-mAP {learned:.2f} vs constant {constant:.2f}")
    assert learned > constant + MDETR_MARGIN
