"""The full SA-DETR (both recipes) and baseline (a) learn on synthetic QVHighlights-shaped data (CPU).

Each model is trained once (module fixture) and scored once with its final weights (no model selection
on val). The bars come from baselines computed here on the same val split with the same evaluation:
moment retrieval: the best constant window (a fixed fraction of the video, chosen on the TRAIN split)
and uniformly random windows; highlight detection: random saliency scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

pytestmark = pytest.mark.slow

# Budget: the demo's model (`synthetic_qvh`: every component on, d=64) for 12 epochs x 800 queries at
# batch 16 = 600 steps (lr 1e-3, cosine), ~3-4 min on one free core. MR leaves the constant-window
# solution only after ~300 steps at a high lr (a 6-epoch cosine run stays at R1@0.5 = 11); the d=32
# test model needs > 1000 steps and is erratic (11-30 between runs).
TRAIN = ["train.epochs=12", "train.eval_every=12", "train.progress=false", "train.tensorboard=false"]
# Observed (seed 2018, this budget): the tuned recipe R1@0.5 = 38 (30 after 300 steps) vs. constant 13 /
# random 4; HL-min-VeryGood-mAP 40 vs. random 9.5.
# Baseline (a) (table4.a: learnable anchors, DAB-like decoder, no L_init / Gaussian mask / span enhance /
# DN / FA) in the same 600 steps, with two test-only settings (docs/research/synthetic-learning.md):
# - w_q = 10 (Table 9's value for Charades-STA/TACoS; QVHighlights uses 1). Its queries are input-
#   independent for the first few hundred steps, so most have IoU ~0 with the GT; with w_q = 1 the L1 quality
#   loss (eq 8) drives q to that median, ~1e-3, where the sigmoid saturates and the quality stays flat after
#   the spans do become input-dependent (at 750 steps the best of the 10 windows hits IoU >= 0.5 for 74% of
#   the val queries, the quality-ranked top-1 for 12%).
# - dropout 0 (also on the inputs): with 0.1 / 0.5 the spans leave the constant solution later (R1@0.5 14
#   at 600 steps). Observed with both: R1@0.5 = 38 (21 after 300 steps).
# - eq 8 as the plain mean (`loss.quality_balance=none`, the paper recipe's reading): the setting these
#   observations were made with; with the tuned recipe's `iou_bins` on top of w_q = 10, baseline (a)
#   stayed at R1@0.5 10 in this budget (2026-11-26).
BASELINE_A = [
    "loss.quality_matched_weight=10.0",
    "model.dropout=0.0",
    "model.input_dropout=0.0",
    "loss.quality_balance=none",
]
MR_MARGIN = 10.0  # R1@0.5 points above the best MR baseline
HD_MARGIN = 8.0  # HL-min-VeryGood-mAP points above random saliency
# The same trained model evaluated again with each query rolled to the next sample of its batch (same
# videos, wrong sentences): a model that does not read the query scores the same both ways. (A model
# whose text features were multiplied by 0 passed the HD bar above, HL-VG-mAP 19.4.) Observed (seed
# 2018): R1@0.5 44.0 vs 11.0 shuffled, HL-VG-mAP 39.9 vs 13.0 shuffled.
SHUFFLED_MR_MARGIN = 15.0  # R1@0.5 points above the shuffled-query evaluation
SHUFFLED_HD_MARGIN = 12.0  # HL-min-VeryGood-mAP points above the shuffled-query evaluation
SHUFFLE_BATCH = 25  # divides the 100 val queries: no batch of one, where rolling changes nothing
# The paper recipe at this budget (observed 2026-12-07, seed 2018): R1@0.5 9-10 through 16 epochs, the
# constant window's level, while HL-VG-mAP reaches 40. L_intra and L_inter at the paper's weight 1 hold
# the spans there: the same run with `loss.ctm_univtg_weight=0.1` reaches R1@0.5 30 by epoch 9, with a
# third of the lr 17 (docs/research/paper-vs-tuned.md). The tuned recipe learns both tasks here.


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _submission(gt: list[dict], windows: list[list[float]], saliency: list[list[float]]) -> list[dict]:
    return [
        {
            "qid": g["qid"],
            "query": g["query"],
            "vid": g["vid"],
            "pred_relevant_windows": [[*w, 1.0]],
            "pred_saliency_scores": s,
        }
        for g, w, s in zip(gt, windows, saliency)
    ]


def _r1_at_05(gt: list[dict], start: float, end: float) -> float:
    hits = 0
    for g in gt:
        s, e = start * g["duration"], end * g["duration"]
        ious = [max(0.0, min(e, b) - max(s, a)) / (max(e, b) - min(s, a)) for a, b in g["relevant_windows"]]
        hits += max(ious) >= 0.5
    return hits / len(gt)


@pytest.fixture(scope="module")
def baselines(synthetic_qvh_learn: dict) -> dict[str, float]:
    """MR: best constant window (grid-searched on train), random windows; HD: random saliency."""
    from sadetr.eval import evaluate

    train, val = _jsonl(synthetic_qvh_learn["train"]), _jsonl(synthetic_qvh_learn["val"])
    grid = np.linspace(0.0, 1.0, 31)
    _, s, e = max((_r1_at_05(train, s, e), s, e) for s in grid for e in grid if e > s)
    rng = np.random.default_rng(0)
    sal = [rng.normal(size=int(np.ceil(g["duration"] / 2))).tolist() for g in val]
    const = evaluate(_submission(val, [[s * g["duration"], e * g["duration"]] for g in val], sal), val)
    rand = [sorted(rng.uniform(0, g["duration"], 2).tolist()) for g in val]
    random = evaluate(_submission(val, rand, sal), val)
    return {
        "MR constant": const["brief"]["MR-full-R1@0.5"],
        "MR random": random["brief"]["MR-full-R1@0.5"],
        "HD random": random["brief"]["HL-min-VeryGood-mAP"],
    }


def _train_run(tmp_path_factory: pytest.TempPathFactory, data: dict, preset: str | None, *extra: str) -> Path:
    """Train once; the run directory (its best.ckpt is the final model: scored once, at the end)."""
    from sadetr.config.compose import compose_config
    from sadetr.engine.trainer import train

    run = tmp_path_factory.mktemp(f"learn_{preset or 'full'}")
    presets = [preset] if preset else []
    cfg = compose_config(["synthetic_qvh", str(data["config"])], [*TRAIN, *extra], presets=presets)
    train(cfg, run)
    record = json.loads((run / "best_metrics.json").read_text())
    assert record["epoch"] == cfg.train.epochs  # scored once, at the end
    return run


def _train(
    tmp_path_factory: pytest.TempPathFactory, data: dict, preset: str | None, *extra: str
) -> dict[str, float]:
    run = _train_run(tmp_path_factory, data, preset, *extra)
    return json.loads((run / "best_metrics.json").read_text())["metrics"]["brief"]


def _evaluate_checkpoint(checkpoint: Path, roll_queries: bool) -> dict[str, float]:
    """Brief val metrics of a checkpoint, optionally with the text of sample (b + 1) % B fed to sample b."""
    from sadetr.data.dataset import build_dataset, collate
    from sadetr.engine.checkpoint import load_trained_model
    from sadetr.engine.validation import predict_dataset, score

    model, cfg, _ = load_trained_model(checkpoint)

    class RolledQueries(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, video: Tensor, video_mask: Tensor, text: Tensor, text_mask: Tensor) -> dict:
            return self.model(video, video_mask, text.roll(-1, 0), text_mask.roll(-1, 0))

    dataset = build_dataset(cfg.data, "val", seed=cfg.train.seed)
    assert len(dataset) % SHUFFLE_BATCH == 0
    net = RolledQueries() if roll_queries else model
    preds = predict_dataset(net, dataset, collate, torch.device("cpu"), batch_size=SHUFFLE_BATCH)
    return score(preds, dataset.ground_truth())["brief"]


def _scored_both_ways(tmp_path_factory: pytest.TempPathFactory, data: dict, *extra: str) -> dict[str, dict]:
    """Val metrics of a trained model: as trained ("real", re-evaluated from best.ckpt) and with the
    queries rolled within each batch ("shuffled")."""
    ckpt = _train_run(tmp_path_factory, data, None, *extra) / "best.ckpt"
    return {"real": _evaluate_checkpoint(ckpt, False), "shuffled": _evaluate_checkpoint(ckpt, True)}


@pytest.fixture(scope="module")
def paper_model(tmp_path_factory: pytest.TempPathFactory, synthetic_qvh_learn: dict) -> dict[str, dict]:
    """The full model, `paper` recipe (the default)."""
    return _scored_both_ways(tmp_path_factory, synthetic_qvh_learn)


@pytest.fixture(scope="module")
def tuned_model(tmp_path_factory: pytest.TempPathFactory, synthetic_qvh_learn: dict) -> dict[str, dict]:
    """The full model, `tuned` recipe."""
    return _scored_both_ways(tmp_path_factory, synthetic_qvh_learn, "model.recipe=tuned")


@pytest.fixture(scope="module")
def baseline_a(tmp_path_factory: pytest.TempPathFactory, synthetic_qvh_learn: dict) -> dict[str, float]:
    return _train(tmp_path_factory, synthetic_qvh_learn, "table4.a", *BASELINE_A)


def test_baselines_are_weak(baselines: dict[str, float]) -> None:
    assert baselines["MR random"] < 15 and baselines["MR constant"] < 20


# One test per model (MR and HD asserted together): the module fixture of a model is then built by one
# worker only (with two tests per model, xdist's scheduling trained the full model on both workers).
@pytest.mark.xdist_group("learn_tuned")
def test_tuned_recipe_learns_both_tasks(tuned_model: dict, baselines: dict) -> None:
    real, shuffled = tuned_model["real"], tuned_model["shuffled"]
    r1, hd = real["MR-full-R1@0.5"], real["HL-min-VeryGood-mAP"]
    r1_s, hd_s = shuffled["MR-full-R1@0.5"], shuffled["HL-min-VeryGood-mAP"]
    print(
        f"tuned R1@0.5 {r1:.1f}, HL-VG-mAP {hd:.1f}; shuffled queries R1@0.5 {r1_s:.1f}, "
        f"HL-VG-mAP {hd_s:.1f}; baselines {baselines}"
    )
    assert r1 >= max(baselines["MR constant"], baselines["MR random"]) + MR_MARGIN
    assert hd >= baselines["HD random"] + HD_MARGIN
    # the model reads the query: with another sample's sentence both tasks get clearly worse
    assert r1 >= r1_s + SHUFFLED_MR_MARGIN
    assert hd >= hd_s + SHUFFLED_HD_MARGIN


@pytest.mark.xdist_group("learn_paper")
def test_paper_recipe_learns_highlights(paper_model: dict, baselines: dict) -> None:
    """At this budget the paper recipe's moment retrieval has not left the constant-window solution (the
    observation above SHUFFLE_BATCH); its highlight detection learns and reads the query."""
    real, shuffled = paper_model["real"], paper_model["shuffled"]
    hd, hd_s = real["HL-min-VeryGood-mAP"], shuffled["HL-min-VeryGood-mAP"]
    print(f"paper R1@0.5 {real['MR-full-R1@0.5']:.1f}, HL-VG-mAP {hd:.1f}; shuffled HL-VG-mAP {hd_s:.1f}")
    assert hd >= baselines["HD random"] + HD_MARGIN
    assert hd >= hd_s + SHUFFLED_HD_MARGIN


@pytest.mark.xdist_group("learn_a")
def test_baseline_a_learns(baseline_a: dict, baselines: dict) -> None:
    r1, hd = baseline_a["MR-full-R1@0.5"], baseline_a["HL-min-VeryGood-mAP"]
    print(f"baseline (a) R1@0.5 {r1:.1f}, HL-VG-mAP {hd:.1f}, baselines {baselines}")
    assert r1 >= max(baselines["MR constant"], baselines["MR random"]) + MR_MARGIN
    assert hd >= baselines["HD random"] + HD_MARGIN
