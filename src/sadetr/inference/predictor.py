"""Predictor API: a trained checkpoint applied to a raw video (or its features) and a text query.

    p = Predictor.from_checkpoint("run/best.ckpt", clip="clip-vit-base-patch32/",
                                  slowfast="SLOWFAST_8x8_R50.pyth")
    pred = p.predict("a man opens the door", "video.mp4")
    pred["pred_relevant_windows"]   # [[start_s, end_s, score], ...] ranked by score
    pred["pred_saliency_scores"]    # one score per clip of `clip_len` seconds

The model's `FeaturePipeline` (sources, clip length, normalisation, TEF, max_v_l, max_q_l; stored with
the checkpoint or model folder) prepares the input exactly as in training (`sadetr.data`), and the
predictor core (`sadetr.inference.core.Localizer`) runs it through the chosen backend (`backend="torch"`,
or `"onnx"` / `"onnx-int8"` for an exported model folder) and the shared post-processing. A model
trained on features this package cannot extract (e.g. VGG, GloVe) is refused with a `CheckpointError`
when a video or a query has to be encoded; precomputed features still work. Videos longer than `max_v_l`
clips go through overlapping windows (`sadetr.inference.sliding`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sadetr.core.errors import CheckpointError, ConfigError, DataError
from sadetr.data.pipeline import FeaturePipeline
from sadetr.engine.checkpoint import pipeline_of
from sadetr.inference.backend import Backend, TorchBackend
from sadetr.inference.core import Localizer
from sadetr.inference.loading import LoadedModel, load_model, make_backend, with_overrides
from sadetr.inference.sliding import stitch_saliency, temporal_nms, window_starts
from sadetr.model.postprocess import merge_duplicates
from sadetr.video.clip import load_clip
from sadetr.video.decode import probe
from sadetr.video.extract import VideoExtractor, resolve_device
from sadetr.video.slowfast import load_slowfast

if TYPE_CHECKING:
    from sadetr.video.extract import VideoExtractor

EXTRACTABLE_SOURCES = ("clip_features", "slowfast_features")
EXTRACTABLE_TEXT = "clip_text_features"


@dataclass
class VideoFeatures:
    """Clip features of one video in a checkpoint's source order: [L, sum D] (not normalised, no TEF)."""

    feats: np.ndarray
    clip_len: float
    duration: float
    path: str | None = None


def saliency_relevance(peaks: np.ndarray) -> np.ndarray:
    """sigmoid(peak saliency) of each moment relative to the best one (the best gets 1).

    Used to merge the moments of several windows: their quality scores are not comparable, since
    the model was trained on videos that contain the queried moment, so a window without it still
    yields confident-looking moments. The saliency head is trained against unrelated (video, query)
    pairs (QD-DETR's negative term), so sigmoid(saliency) is a calibrated "this clip shows the
    query". Computed in log space, since raw saliency can be very negative.

    >>> saliency_relevance(np.array([2.0, 0.0])).round(4).tolist()
    [1.0, 0.5677]
    """
    log_sig = -np.logaddexp(0.0, -np.asarray(peaks, dtype=np.float64))  # log sigmoid
    return np.exp(log_sig - log_sig.max())


def check_request(query: object, max_moments: int = 0, overlap: float = 0.5) -> None:
    """The user's part of a prediction request: a non-blank query string, `max_moments` >= 0 (0 = all),
    `overlap` in [0, 1).

    >>> check_request("   ")
    Traceback (most recent call last):
    ...
    sadetr.core.errors.DataError: query: must be a non-empty string, got '   '
    """
    if not isinstance(query, str) or not query.strip():
        raise DataError(f"must be a non-empty string, got {query!r}", field="query")
    if isinstance(max_moments, bool) or not isinstance(max_moments, int) or max_moments < 0:
        raise ConfigError(f"must be an integer >= 0 (0 = all), got {max_moments!r}", key="max_moments")
    if not (isinstance(overlap, (int, float)) and 0 <= overlap < 1):
        raise ConfigError(f"must be in [0, 1), got {overlap!r}", key="overlap")


class Predictor:
    """A model, its feature pipeline, the backend that runs it and (optionally) the backbones that
    reproduce the pipeline from a video."""

    def __init__(
        self,
        model: nn.Module,
        cfg: Any,
        features: dict[str, Any] | FeaturePipeline,
        device: torch.device,
        clip: Any = None,
        slowfast: Any = None,
        source: str = "",
        backend: Backend | None = None,
    ) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.device = device
        self.source = source
        pipe = features if isinstance(features, FeaturePipeline) else pipeline_of(cfg, features, source)
        self.pipeline = pipe
        self.video_sources: list[str] = list(pipe.video_sources)
        self.video_dims: list[int] = list(pipe.video_dims)
        self.text_source: str = pipe.text_source
        self.clip_len: float = pipe.clip_len
        self.max_v_l: int = pipe.max_v_l
        self.max_q_l: int = pipe.max_q_l
        self.video_dim: int = pipe.video_dim
        self.text_dim: int = pipe.text_dim
        self.backend: Backend = backend if backend is not None else TorchBackend(self.model, device)
        self.localizer = Localizer(self.backend, pipe, cfg.model.round_to_clip, device)
        self.clip = clip
        self.slowfast = slowfast
        self._extractor: VideoExtractor | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        clip: Any = None,
        slowfast: Any = None,
        backend: str = "torch",
        threads: int = 0,
        overrides: Sequence[str] = (),
    ) -> Predictor:
        """Load a training checkpoint (file or run directory) or a model folder; `clip`/`slowfast` are
        weight paths or loaded backbones (optional); `backend` torch | onnx | onnx-int8 (the ONNX ones
        need a model folder written by `sadetr export`), `threads` its onnxruntime threads; `overrides`
        dotted `model.round_to_clip=...` / `data.*` settings (as `predict --set`)."""

        device = resolve_device(device) if isinstance(device, str) else device
        loaded = with_overrides(load_model(path), overrides)
        return cls.from_loaded(loaded, make_backend(loaded, backend, device, threads), device, clip, slowfast)

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedModel,
        backend: Backend,
        device: torch.device,
        clip: Any = None,
        slowfast: Any = None,
    ) -> Predictor:
        """A Predictor of a loaded model (`sadetr.inference.loading`) running on `backend` (e.g. a
        `DynamicBatcher` around an onnxruntime session); `clip`/`slowfast` as in `from_checkpoint`."""
        if isinstance(clip, (str, Path)):
            clip = load_clip(clip, device=device)
        if isinstance(slowfast, (str, Path)):
            slowfast = load_slowfast(slowfast)
        return cls(loaded.model, loaded.cfg, loaded.pipeline, device, clip, slowfast, loaded.source, backend)

    # ------------------------------------------------------------------ encoders

    def _require_reproducible(self, what: str) -> None:
        unknown = [s for s in self.video_sources if s not in EXTRACTABLE_SOURCES]
        if what == "video" and unknown:
            raise CheckpointError(
                f"{self.source}: trained on video features {unknown}, which sadetr cannot "
                f"extract from a video (only {', '.join(EXTRACTABLE_SOURCES)}); pass features"
            )
        if what == "text" and self.text_source != EXTRACTABLE_TEXT:
            raise CheckpointError(
                f"{self.source}: trained on text features {self.text_source!r}, which sadetr "
                f"cannot compute (only {EXTRACTABLE_TEXT}); pass text_features"
            )
        needed = {"clip_features": self.clip, "slowfast_features": self.slowfast}
        missing = [
            s for s in (self.video_sources if what == "video" else ["clip_features"]) if needed[s] is None
        ]
        if missing:
            flags = " and ".join("--clip" if s == "clip_features" else "--slowfast" for s in missing)
            raise CheckpointError(f"{self.source}: this checkpoint needs {', '.join(missing)}: give {flags}")

    def encode_video(self, path: str | Path, batch_clips: int = 8) -> VideoFeatures:
        """Extract the checkpoint's video sources from a video file (`clip_len` s per clip)."""

        self._require_reproducible("video")
        if self._extractor is None:
            use = set(self.video_sources)
            self._extractor = VideoExtractor(
                clip=self.clip if "clip_features" in use else None,
                slowfast=self.slowfast if "slowfast_features" in use else None,
                clip_len=self.clip_len,
                batch_clips=batch_clips,
                device=self.device,
            )
        per_source = self._extractor.features(path)
        for source, dim in zip(self.video_sources, self.video_dims):
            if per_source[source].shape[1] != dim:
                raise CheckpointError(
                    f"{self.source}: the checkpoint expects {dim}-d {source}, the given "
                    f"backbone gives {per_source[source].shape[1]}-d"
                )
        feats = np.concatenate([per_source[s] for s in self.video_sources], axis=1)  # [L, sum D]
        return VideoFeatures(feats, self.clip_len, probe(path).duration, str(path))

    def encode_query(self, query: str) -> np.ndarray:
        """CLIP token features of a query: `last_hidden_state` [L_t, D_t]."""
        self._require_reproducible("text")
        feats = self.clip.encode_texts([query])[0]["last_hidden_state"]
        if feats.shape[1] != self.text_dim:
            raise CheckpointError(
                f"{self.source}: the checkpoint expects {self.text_dim}-d text features, "
                f"the given CLIP gives {feats.shape[1]}-d"
            )
        return feats

    # ------------------------------------------------------------------ prediction

    def predict(
        self,
        query: str,
        video_or_features: str | Path | VideoFeatures | np.ndarray,
        text_features: np.ndarray | None = None,
        duration: float | None = None,
        overlap: float = 0.5,
        nms_threshold: float = 0.7,
        max_moments: int = 0,
        rescore: bool = True,
        window_batch: int = 64,
    ) -> dict[str, Any]:
        """Submission-format record: `pred_relevant_windows` ([start, end, score], ranked, one per window)
        and `pred_saliency_scores` (one per clip). `video_or_features`: a video path, `VideoFeatures`,
        or an array [L, sum D] in the checkpoint's source order (`duration` defaults to L * clip_len).
        Videos longer than max_v_l clips: windows overlapping by `overlap` (fraction), merged by NMS;
        with `rescore` each moment's quality is first multiplied by `saliency_relevance` of its peak
        saliency (windows only; a video of <= max_v_l clips is ranked by quality, as in the paper).
        `max_moments` > 0 keeps the top ones (0 = all). Refused (`DataError`/`ConfigError`): an empty or
        whitespace-only query, a video shorter than one clip (`clip_len` s: nothing to localise in it),
        a negative `max_moments`, an `overlap` outside [0, 1).
        The windows (all of the same length) run as batches of up to `window_batch` in one forward each.
        """
        check_request(query, max_moments, overlap)

        if isinstance(video_or_features, (str, Path)):
            video_or_features = self.encode_video(video_or_features)
        if isinstance(video_or_features, VideoFeatures):
            feats, duration = video_or_features.feats, duration or video_or_features.duration
        else:
            feats = video_or_features
        feats = self.pipeline.check_clips(feats)
        n_clips = feats.shape[0]
        duration = float(duration) if duration is not None else n_clips * self.clip_len
        where = getattr(video_or_features, "path", None)
        if not (math.isfinite(duration) and duration > 0):
            raise DataError(f"must be a positive number of seconds, got {duration}", where, field="duration")
        if duration < self.clip_len:
            raise DataError(
                f"{duration:g} s is shorter than one clip ({self.clip_len:g} s): too short to localise "
                "a moment in",
                where,
                field="duration",
            )
        raw_text = self.encode_query(query) if text_features is None else text_features
        text = self.pipeline.text_tokens(raw_text)
        video = self.pipeline.normalize_clips(feats)

        window = self.max_v_l if self.max_v_l > 0 else n_clips
        starts = window_starts(n_clips, window, min(window - 1, round(overlap * window)))
        length = min(window, n_clips)  # every window has this many clips (the last is end-aligned)
        decoded = self.localizer.localize(
            [video[s : s + length] for s in starts],
            text,
            [min(duration - s * self.clip_len, length * self.clip_len) for s in starts],
            batch_size=window_batch,
        )
        per_window: list[list[list[float]]] = []  # per window: [start_s, end_s, score] in video time
        for start, dec in zip(starts, decoded):
            offset = start * self.clip_len
            per_window.append([[st + offset, en + offset, c] for st, en, c in dec.ranked()])
        saliency_parts = [(start, dec.saliency.astype(np.float64)) for start, dec in zip(starts, decoded)]
        moments = [m for ms in per_window for m in ms]
        if len(starts) > 1:
            if rescore:
                # a moment's peak saliency, read from the window that predicted it
                peaks = []
                for ms, (start, sal) in zip(per_window, saliency_parts):
                    for st, en, _ in ms:
                        first = min(max(int(st / self.clip_len) - start, 0), len(sal) - 1)
                        last = max(first + 1, int(np.ceil(en / self.clip_len)) - start)  # exclusive
                        peaks.append(float(sal[first:last].max()))
                rel = saliency_relevance(np.array(peaks))
                moments = [[st, en, c * r] for (st, en, c), r in zip(moments, rel)]
            moments = temporal_nms(merge_duplicates(sorted(moments, key=lambda m: -m[2])), nms_threshold)
        if max_moments > 0:
            moments = moments[:max_moments]
        saliency = stitch_saliency(n_clips, saliency_parts)
        return {
            "query": query,
            "duration": round(duration, 4),
            "clip_len": self.clip_len,
            "pred_relevant_windows": [
                [round(float(s), 4), round(float(e), 4), float(f"{c:.5g}")] for s, e, c in moments
            ],
            "pred_saliency_scores": [round(float(x), 4) for x in saliency],
            "num_windows": len(starts),
        }
