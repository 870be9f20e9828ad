"""Tests of the inference post-processing (`sadetr.model.postprocess`): the field's clip-grid protocol
(round to multiples of the clip length, at least one clip wide) by hand, on a model output through
`to_submission`, and on the released QVHighlights prediction file."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from sadetr.eval import evaluate, load_jsonl
from sadetr.model.postprocess import snap_submission, snap_to_clip_grid, to_submission
from sadetr.model.span_ops import span_xx_to_cxw

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REF_PRED = DATA / "eval_reference" / "sample_val_preds.jsonl"
QVH_VAL = DATA / "qvhighlights" / "highlight_val_release.jsonl"
needs_shared = pytest.mark.skipif(not REF_PRED.exists(), reason="../shared/data not available")


def test_snap_rounds_to_the_grid_by_hand():
    win = torch.tensor([[3.1, 9.2], [10.2, 10.6], [149.5, 150.0], [-3.0, 7.9], [140.2, 160.0]])
    got = snap_to_clip_grid(win, clip_sec=2.0, duration=150.0)
    expected = [
        [4.0, 10.0],  # nearest multiples of 2
        [10.0, 12.0],  # rounds to [10, 10]: widened to one clip from its start
        [148.0, 150.0],  # rounds to [150, 150]: one clip, moved left inside the video
        [0.0, 8.0],  # clamped at 0
        [140.0, 150.0],  # clamped at the duration
    ]
    assert got.tolist() == expected


def test_snap_off_grid_duration_and_short_video():
    # duration 149 is off the 2 s grid: both ends round to 148, one clip from there passes the end by 1 s,
    # so the window is moved left to end at the duration
    got = snap_to_clip_grid(torch.tensor([[147.2, 148.9]]), clip_sec=2.0, duration=149.0)
    assert got.tolist() == [[147.0, 149.0]]
    # a video shorter than one clip: the window is the whole video
    got = snap_to_clip_grid(torch.tensor([[0.2, 0.5]]), clip_sec=2.0, duration=1.5)
    assert got.tolist() == [[0.0, 1.5]]
    with pytest.raises(ValueError, match="clip_sec"):
        snap_to_clip_grid(torch.tensor([[0.0, 1.0]]), clip_sec=0.0, duration=10.0)


def _output(windows_sec: list[list[float]], quality: list[float], duration: float, clip: float) -> dict:
    """A one-sample model output with the given windows (seconds) on `duration / clip` valid clips."""
    n = int(duration / clip)
    xx = torch.tensor(windows_sec) / duration  # (Nq, 2) normalised
    return {
        "pred_spans": span_xx_to_cxw(xx)[None],  # (1, Nq, 2)
        "pred_quality": torch.tensor([quality]),  # (1, Nq)
        "saliency_scores": torch.zeros(1, n),
        "video_mask": torch.ones(1, n, dtype=torch.bool),
    }


def test_jittered_then_rounded_windows_score_as_on_grid():
    # GT [10, 20]; the prediction is jittered off the 2 s grid by less than a clip's half: IoU 8.5/10
    meta = [{"qid": 1, "vid": "v", "query": "q", "duration": 150.0, "clip_sec": 2.0, "num_clips": 75}]
    out = _output([[10.8, 19.3]], [0.9], 150.0, 2.0)
    gt = [{"qid": 1, "query": "q", "vid": "v", "duration": 150, "relevant_windows": [[10, 20]]}]
    raw = to_submission(out, meta, round_to_clip=False)
    snapped = to_submission(out, meta)  # on by default
    assert raw[0]["pred_relevant_windows"][0][:2] == pytest.approx([10.8, 19.3], abs=1e-3)
    assert snapped[0]["pred_relevant_windows"][0][:2] == [10.0, 20.0]
    m_raw = evaluate(raw, gt)["brief"]
    m_snap = evaluate(snapped, gt)["brief"]
    # IoU 0.85 passes the thresholds 0.5 .. 0.85 (8 of the 10 of mAP); after rounding IoU is 1
    assert m_raw["MR-full-mAP"] == pytest.approx(80.0)
    assert m_raw["MR-full-R1@0.7"] == 100.0
    assert m_snap["MR-full-mAP"] == pytest.approx(100.0)
    assert m_snap["MR-full-mIoU"] == pytest.approx(100.0)


@pytest.fixture(scope="module")
def released():
    preds, gt = load_jsonl(REF_PRED), load_jsonl(QVH_VAL)
    return preds, gt, {g["qid"]: float(g["duration"]) for g in gt}


@needs_shared
def test_released_on_grid_predictions_are_unchanged(released):
    preds, gt, durations = released
    snapped = snap_submission(preds, 2.0, durations)
    changed = [
        (a["qid"], p[:2], s[:2])
        for a, b in zip(preds, snapped)
        for p, s in zip(a["pred_relevant_windows"], b["pred_relevant_windows"])
        if s[:2] != p[:2]
    ]
    # the released windows are on the grid; only those past their video's end (the public code clamps at
    # 150 s, not at the duration) are clamped, ending exactly at the duration
    assert len(changed) < 5
    assert all(s[0] == p[0] and s[1] == durations[q] < p[1] for q, p, s in changed)
    assert evaluate(snapped, gt)["brief"] == evaluate(preds, gt)["brief"]


@needs_shared
def test_released_predictions_jittered_then_rounded_recover_the_metrics(released):
    preds, gt, durations = released
    rng = random.Random(0)
    jittered = [
        {
            **p,
            "pred_relevant_windows": [
                [
                    max(0.0, s + rng.uniform(-0.9, 0.9)),
                    min(durations[p["qid"]], e + rng.uniform(-0.9, 0.9)),
                    c,
                ]
                for s, e, c in p["pred_relevant_windows"]
            ],
        }
        for p in preds
    ]
    base = evaluate(preds, gt)["brief"]
    worse = evaluate(jittered, gt)["brief"]
    recovered = evaluate(snap_submission(jittered, 2.0, durations), gt)["brief"]
    assert worse["MR-full-mAP"] < base["MR-full-mAP"]
    assert recovered["MR-full-mAP"] == base["MR-full-mAP"]
    assert recovered["MR-full-R1@0.7"] == base["MR-full-R1@0.7"]
