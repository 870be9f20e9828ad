"""A long video's sliding windows run as one batch: the same prediction as one forward per window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sadetr.inference.predictor import Predictor


@pytest.mark.parametrize("n_clips", [300, 301, 40])
def test_batched_windows_equal_one_by_one(tiny_checkpoint: Path, n_clips: int) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    rng = np.random.default_rng(n_clips)
    feats = rng.normal(size=(n_clips, sum(predictor.video_dims))).astype(np.float32)
    text = rng.normal(size=(9, predictor.text_dim)).astype(np.float32)
    one_by_one = predictor.predict("q", feats, text_features=text, window_batch=1)
    batched = predictor.predict("q", feats, text_features=text)
    in_threes = predictor.predict("q", feats, text_features=text, window_batch=3)
    assert batched["num_windows"] == one_by_one["num_windows"] == (1 if n_clips <= predictor.max_v_l else 8)
    for other in (batched, in_threes):
        for key in ("pred_saliency_scores", "pred_relevant_windows"):
            np.testing.assert_allclose(other[key], one_by_one[key], atol=2e-4, err_msg=key)
