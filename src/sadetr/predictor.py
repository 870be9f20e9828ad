"""Predictor API: a trained checkpoint applied to a raw video (or its features) and a text query.

    p = Predictor.from_checkpoint("run/best.ckpt", clip="clip-vit-base-patch32/",
                                  slowfast="SLOWFAST_8x8_R50.pyth")
    pred = p.predict("a man opens the door", "video.mp4")
    pred["pred_relevant_windows"]   # [[start_s, end_s, score], ...] ranked by score
    pred["pred_saliency_scores"]    # one score per clip of `clip_len` seconds

The checkpoint's `features` entry (sources, clip length, normalisation, TEF, max_v_l, max_q_l)
drives the input pipeline, exactly as in training (`sadetr.data`): per-source L2 norm, concat in
the recorded source order, TEF per window, text tokens L2-normalised and cut to max_q_l. A checkpoint
trained on features this package cannot extract (e.g. VGG, GloVe) is refused with a
`CheckpointError` when a video or a query has to be encoded; precomputed features still work.
Videos longer than `max_v_l` clips go through overlapping windows (`sadetr.video.sliding`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sadetr.data.features import l2_normalize
from sadetr.engine.checkpoint import pipeline_of
from sadetr.errors import CheckpointError, ConfigError, DataError
from sadetr.video.sliding import stitch_saliency, temporal_nms, window_starts

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
    sadetr.errors.DataError: query: must be a non-empty string, got '   '
    """
    if not isinstance(query, str) or not query.strip():
        raise DataError(f"must be a non-empty string, got {query!r}", field="query")
    if isinstance(max_moments, bool) or not isinstance(max_moments, int) or max_moments < 0:
        raise ConfigError(f"must be an integer >= 0 (0 = all), got {max_moments!r}", key="max_moments")
    if not (isinstance(overlap, (int, float)) and 0 <= overlap < 1):
        raise ConfigError(f"must be in [0, 1), got {overlap!r}", key="overlap")


class Predictor:
    """A model, its feature pipeline and (optionally) the backbones that reproduce that pipeline."""

    def __init__(
        self,
        model: nn.Module,
        cfg: Any,
        features: dict[str, Any],
        device: torch.device,
        clip: Any = None,
        slowfast: Any = None,
        source: str = "",
    ) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.device = device
        self.source = source
        pipe = pipeline_of(cfg, features, source)
        self.video_sources: list[str] = pipe["video_sources"]
        self.video_dims: list[int] = pipe["video_dims"]
        self.text_source: str = pipe["text_source"]
        self.clip_len: float = pipe["clip_len"]
        self.normalize_video: bool = pipe["normalize_video"]
        self.normalize_text: bool = pipe["normalize_text"]
        self.use_tef: bool = pipe["use_tef"]
        self.max_v_l: int = pipe["max_v_l"]
        self.max_q_l: int = pipe["max_q_l"]
        self.video_dim: int = pipe["video_dim"]
        self.text_dim: int = pipe["text_dim"]
        self.clip = clip
        self.slowfast = slowfast
        self._extractor: VideoExtractor | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "auto", clip: Any = None, slowfast: Any = None
    ) -> Predictor:
        """Load a training checkpoint; `clip`/`slowfast` are weight paths or loaded backbones (optional)."""
        from sadetr.engine.checkpoint import load_trained_model
        from sadetr.video.extract import resolve_device

        device = resolve_device(device) if isinstance(device, str) else device
        model, cfg, state = load_trained_model(path, map_location="cpu")
        if isinstance(clip, (str, Path)):
            from sadetr.video.clip import load_clip

            clip = load_clip(clip, device=device)
        if isinstance(slowfast, (str, Path)):
            from sadetr.video.slowfast import load_slowfast

            slowfast = load_slowfast(slowfast)
        return cls(
            model.to(device), cfg, dict(state.get("features") or {}), device, clip, slowfast, str(path)
        )

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
        from sadetr.video.decode import probe
        from sadetr.video.extract import VideoExtractor

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

    def _video_input(self, feats: np.ndarray) -> np.ndarray:
        """Per-source L2 norm (as `FeatureStore.video`) of [L, sum D]."""
        if not self.normalize_video:
            return feats.astype(np.float32)
        offsets = np.cumsum([0, *self.video_dims])
        return np.concatenate([l2_normalize(feats[:, a:b]) for a, b in itertools.pairwise(offsets)], axis=1)

    @torch.no_grad()
    def _forward(self, video: np.ndarray, text: np.ndarray) -> dict[str, Any]:
        """Windows of one video: video [N, L, sum D] (normalised), text [L_t, D_t] -> output for batch N."""
        n_win, n = video.shape[:2]
        if self.use_tef:
            start = np.arange(n, dtype=np.float32) / n
            tef = np.broadcast_to(np.stack([start, start + 1.0 / n], axis=1), (n_win, n, 2))  # [N, L, 2]
            video = np.concatenate([video, tef], axis=2)  # [N, L, D+2]
        v = torch.from_numpy(np.ascontiguousarray(video, dtype=np.float32)).to(self.device)  # [N, L, Dv]
        t = torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32)).to(self.device)  # [Lt, Dt]
        t = t.expand(n_win, -1, -1)  # [N, Lt, Dt]
        v_mask = torch.ones(v.shape[:2], dtype=torch.bool, device=self.device)
        t_mask = torch.ones(t.shape[:2], dtype=torch.bool, device=self.device)
        return self.model(v, v_mask, t, t_mask)

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
        """Submission-format record: `pred_relevant_windows` ([start, end, score], ranked) and
        `pred_saliency_scores` (one per clip). `video_or_features`: a video path, `VideoFeatures`,
        or an array [L, sum D] in the checkpoint's source order (`duration` defaults to L * clip_len).
        Videos longer than max_v_l clips: windows overlapping by `overlap` (fraction), merged by NMS;
        with `rescore` each moment's quality is first multiplied by `saliency_relevance` of its peak
        saliency (windows only; a video of <= max_v_l clips is ranked by quality, as in the paper).
        `max_moments` > 0 keeps the top ones (0 = all). Refused (`DataError`/`ConfigError`): an empty or
        whitespace-only query, a video shorter than one clip (`clip_len` s: nothing to localise in it),
        a negative `max_moments`, an `overlap` outside [0, 1).
        The windows (all of the same length) run as batches of up to `window_batch` in one forward each.
        """
        from sadetr.model.postprocess import to_submission

        check_request(query, max_moments, overlap)

        if isinstance(video_or_features, (str, Path)):
            video_or_features = self.encode_video(video_or_features)
        if isinstance(video_or_features, VideoFeatures):
            feats, duration = video_or_features.feats, duration or video_or_features.duration
        else:
            feats = np.asarray(video_or_features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != sum(self.video_dims) or feats.shape[0] == 0:
            raise DataError(
                f"video features must be [L > 0, {sum(self.video_dims)}] "
                f"({'+'.join(self.video_sources)}), got {list(feats.shape)}",
                field="video_features",
            )
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
        text = self.encode_query(query) if text_features is None else np.asarray(text_features, np.float32)
        if text.ndim != 2 or text.shape[1] != self.text_dim or text.shape[0] == 0:
            raise DataError(
                f"text features must be [L_t > 0, {self.text_dim}], got {list(text.shape)}",
                field="text_features",
            )
        if self.normalize_text:
            text = l2_normalize(text)
        if self.max_q_l > 0:
            text = text[: self.max_q_l]
        video = self._video_input(feats)

        window = self.max_v_l if self.max_v_l > 0 else n_clips
        starts = window_starts(n_clips, window, min(window - 1, round(overlap * window)))
        per_window: list[list[list[float]]] = []  # per window: [start_s, end_s, score] in video time
        saliency_parts: list[tuple[int, np.ndarray]] = []
        length = min(window, n_clips)  # every window has this many clips (the last is end-aligned)
        metas = [
            {
                "qid": None,
                "vid": None,
                "query": query,
                "clip_sec": self.clip_len,
                "num_clips": length,
                "duration": min(duration - start * self.clip_len, length * self.clip_len),
            }
            for start in starts
        ]
        records: list[dict[str, Any]] = []
        for i in range(0, len(starts), max(1, window_batch)):
            batch_starts = starts[i : i + max(1, window_batch)]
            chunks = np.stack([video[s : s + length] for s in batch_starts])  # [N, W, sum D]
            out = self._forward(chunks, text)
            records += to_submission(
                out, metas[i : i + len(batch_starts)], decimals=6, round_to_clip=self.cfg.model.round_to_clip
            )
        for start, rec in zip(starts, records):
            offset = start * self.clip_len
            scores = np.asarray(rec["pred_saliency_scores"], dtype=np.float64)
            per_window.append([[st + offset, en + offset, c] for st, en, c in rec["pred_relevant_windows"]])
            saliency_parts.append((start, scores))
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
            moments = temporal_nms(moments, nms_threshold)
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
