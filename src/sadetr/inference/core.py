"""The predictor core: a query localised in a list of windows (clip features of any videos) through one
backend and the shared post-processing.

The Predictor (one video, cut into sliding windows: `predict --video`, `serve`, `app`, the long-video
path) and corpus search (contexts of many videos) run their model through `Localizer`; split prediction
(`engine.inference.predict_dataset`) feeds the batches the data layer collated (the same `pad_inputs`)
to the same backends and the same `decode`. Inputs are prepared by the model's `FeaturePipeline` (TEF,
padding and masks in `pad_inputs`); outputs are decoded by `sadetr.model.postprocess.decode` (seconds,
clip-grid rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sadetr.data.pipeline import FeaturePipeline, pad_inputs
from sadetr.inference.backend import Backend
from sadetr.model.postprocess import Decoded, decode


class Localizer:
    """A backend, the feature pipeline of its model, and the post-processing settings."""

    def __init__(
        self,
        backend: Backend,
        pipeline: FeaturePipeline,
        round_to_clip: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        self.backend = backend
        self.pipeline = pipeline
        self.round_to_clip = round_to_clip  # the field's protocol, as the model's config says
        self.device = torch.device(device)

    def run(self, videos: Sequence[np.ndarray], texts: Sequence[np.ndarray]) -> dict[str, Any]:
        """Raw backend output of B inputs: videos list[B] of normalised clips [W_i, clip_dim], texts one
        or list[B] of prepared tokens [L_t, D_t] (`FeaturePipeline.text_tokens`)."""
        inputs = pad_inputs([self.pipeline.video_input(v) for v in videos], texts)
        return self.backend(*inputs.tensors(self.device))

    def localize(
        self,
        windows: Sequence[np.ndarray],
        text: np.ndarray,
        durations: Sequence[float] | None = None,
        batch_size: int = 64,
    ) -> list[Decoded]:
        """Moments of one query `text` [L_t, D_t] (prepared) in each window [W_i, clip_dim] (normalised
        clips): seconds from the window's first clip, up to `durations[i]` (default W_i * clip_len)."""
        clip_len = self.pipeline.clip_len
        if durations is None:
            durations = [len(w) * clip_len for w in windows]
        metas = [
            {"clip_sec": clip_len, "num_clips": len(w), "duration": float(d)}
            for w, d in zip(windows, durations)
        ]
        step = max(1, int(batch_size))
        out: list[Decoded] = []
        for i in range(0, len(windows), step):
            raw = self.run(windows[i : i + step], [text])
            out += decode(raw, metas[i : i + step], self.round_to_clip)
        return out
