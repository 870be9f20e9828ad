"""The long-video path by hand: window offsets, saliency rescoring, NMS and saliency stitching.

A scripted backend stands in for the model's forward pass (its outputs per window are written here, so
every expected value can be computed by hand); everything after it is the Predictor's real code: the
sliding windows, the shared decoding (seconds, clip grid), the offsets, `saliency_relevance`, NMS and
the stitched saliency."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sadetr.inference.loading import load_model
from sadetr.inference.predictor import Predictor
from sadetr.inference.tiny import save_tiny_clip_checkpoint
from sadetr.video.tiny import TINY_CLIP_VIDEO_DIM

CLIP = 2.0  # seconds per clip (the tiny checkpoint's QVHighlights clip length)
# Window k (4 clips = 8 s, starts 0, 2, 4, 6 clips for a 10-clip video at overlap 0.5) predicts one
# moment, (c, w) = (0.5, 0.5) of the window = seconds [2, 6] inside it, with quality QUALITY[k] and
# per-clip saliency SALIENCY[k]; the moment covers the window's clips 1 and 2, so its peak is
# max(SALIENCY[k][1:3]).
QUALITY = [0.9, 0.8, 0.7, 0.6]
SALIENCY = [[0.0, -5.0, -4.0, 0.0], [0.0, 3.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 2.0, 1.0]]


class ScriptedBackend:
    """Returns the scripted outputs of the windows in the order the Predictor sends them."""

    name = "scripted"

    def __init__(self, quality: list[float] = QUALITY, saliency: list[list[float]] = SALIENCY) -> None:
        self.quality, self.saliency = quality, saliency
        self.next = 0
        self.batches: list[int] = []

    def __call__(self, video_feat, video_mask, text_feat, text_mask) -> dict:
        b = video_feat.shape[0]
        rows = range(self.next, self.next + b)
        self.next += b
        self.batches.append(b)
        return {
            "pred_spans": torch.tensor([[[0.5, 0.5]] for _ in rows]),  # (B, 1, 2)
            "pred_quality": torch.tensor([[self.quality[k]] for k in rows]),  # (B, 1)
            "saliency_scores": torch.tensor([self.saliency[k] for k in rows]),  # (B, 4)
            "video_mask": video_mask,
        }


@pytest.fixture()
def predictor(tmp_path: Path) -> tuple[Predictor, ScriptedBackend]:
    checkpoint = save_tiny_clip_checkpoint(tmp_path / "m.ckpt", "data.max_v_l=4")
    loaded = load_model(checkpoint)
    backend = ScriptedBackend()
    return Predictor.from_loaded(loaded, backend, torch.device("cpu")), backend


def _features(n_clips: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n_clips, TINY_CLIP_VIDEO_DIM)).astype(np.float32)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_window_offsets_and_rescoring_by_hand(predictor) -> None:
    pred, backend = predictor
    text = np.ones((3, 64), dtype=np.float32)
    out = pred.predict("q", _features(10), text_features=text, window_batch=3)
    assert out["num_windows"] == 4 and backend.batches == [3, 1]  # windows batched in order
    # offsets: window k starts at clip 2k = 4k seconds, its moment [2, 6] becomes [2 + 4k, 6 + 4k]
    peaks = [max(s[1:3]) for s in SALIENCY]  # -4, 3, 0, 2
    best = max(_sigmoid(p) for p in peaks)
    expected = sorted(
        ([2.0 + 4 * k, 6.0 + 4 * k, q * _sigmoid(p) / best] for k, (q, p) in enumerate(zip(QUALITY, peaks))),
        key=lambda m: -m[2],
    )  # window 1 (peak 3) first, then window 3, window 2, window 0 (peak -4) last
    got = out["pred_relevant_windows"]
    assert [w[:2] for w in got] == [m[:2] for m in expected]
    assert [w[2] for w in got] == pytest.approx([m[2] for m in expected], rel=1e-4)
    assert got[0][:2] == [6.0, 10.0] and got[-1][:2] == [2.0, 6.0]
    # stitched saliency: clip j is the mean over the windows [2k, 2k + 4) that contain it
    sums, counts = np.zeros(10), np.zeros(10)
    for k, s in enumerate(SALIENCY):
        sums[2 * k : 2 * k + 4] += s
        counts[2 * k : 2 * k + 4] += 1
    assert out["pred_saliency_scores"] == pytest.approx((sums / counts).round(4).tolist())


def test_without_rescoring_windows_rank_by_quality_and_nms_merges_overlaps(predictor) -> None:
    pred, _ = predictor
    text = np.ones((3, 64), dtype=np.float32)
    out = pred.predict("q", _features(10), text_features=text, rescore=False)
    assert [w[:2] for w in out["pred_relevant_windows"]] == [
        [2.0, 6.0],
        [6.0, 10.0],
        [10.0, 14.0],
        [14.0, 18.0],
    ]
    assert [w[2] for w in out["pred_relevant_windows"]] == pytest.approx(QUALITY)
    # overlap 0.75: 3 clips of overlap, starts 0, 1, ..., 6: window k's moment [2 + 2k, 6 + 2k]; NMS at
    # IoU 0.3 keeps the best (window 0, [2, 6]) and drops [4, 8] (IoU 1/3), keeps [6, 10] (IoU 0) ...
    pred.localizer.backend = backend = ScriptedBackend([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [[0.0] * 4] * 7)
    out = pred.predict("q", _features(10), text_features=text, overlap=0.75, nms_threshold=0.3, rescore=False)
    assert out["num_windows"] == 7 and backend.next == 7
    assert [w[:2] for w in out["pred_relevant_windows"]] == [
        [2.0, 6.0],
        [6.0, 10.0],
        [10.0, 14.0],
        [14.0, 18.0],
    ]


def test_a_short_video_is_one_window_ranked_by_quality(predictor) -> None:
    pred, backend = predictor
    out = pred.predict("q", _features(3), text_features=np.ones((2, 64), dtype=np.float32))
    assert out["num_windows"] == 1 and backend.next == 1
    # one window of 3 clips (6 s): (0.5, 0.5) is [1.5, 4.5] s, rounded to the 2 s grid: [2, 4]
    assert out["pred_relevant_windows"] == [[2.0, 4.0, pytest.approx(QUALITY[0])]]
