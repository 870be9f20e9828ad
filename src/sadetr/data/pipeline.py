"""The feature pipeline of a model, and the one function that turns features into model inputs.

`FeaturePipeline` records what a model was trained on (video sources and their dims, text source and dim,
seconds per clip) and how raw features become its input (per-source L2 norm of every clip, L2 norm of
every token, the temporal endpoint feature (TEF), the `max_v_l`/`max_q_l` limits). Checkpoints, model
folders and corpus indexes store it (`to_record`); the training data (`sadetr.data.dataset`), the
Predictor, the corpus index and search, and the exported runtimes all prepare their inputs through it.
`pad_inputs` (with `pad_rows`) is the only place that builds the padded model inputs (`ModelInputs`)
from prepared clips and tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sadetr.core.errors import CheckpointError, DataError
from sadetr.data.config import DataConfig
from sadetr.data.features import add_tef, l2_normalize

# The keys of a stored pipeline record (checkpoint `features`, model folder, corpus index manifest).
RECORD_KEYS = (
    "video_sources",
    "video_dims",
    "text_source",
    "video_dim",
    "text_dim",
    "clip_len",
    "normalize_video",
    "normalize_text",
    "use_tef",
    "max_v_l",
    "max_q_l",
)


@dataclass(frozen=True)
class FeaturePipeline:
    """What was extracted and how it becomes model input (module docstring)."""

    video_sources: tuple[str, ...]
    video_dims: tuple[int, ...]  # D of each source, in input order
    text_source: str
    text_dim: int
    clip_len: float  # seconds per clip
    normalize_video: bool = True
    normalize_text: bool = True
    use_tef: bool = True
    max_v_l: int = 0  # clips per model input (<= 0: no limit)
    max_q_l: int = 0  # tokens per query (<= 0: no limit)

    @property
    def clip_dim(self) -> int:
        """Width of the concatenated clip features [L, sum D] (before the TEF)."""
        return int(sum(self.video_dims))

    @property
    def video_dim(self) -> int:
        """Width of the model's video input: the clip features + 2 with the TEF."""
        return self.clip_dim + 2 * int(self.use_tef)

    # ------------------------------------------------------------------ records

    @classmethod
    def from_data_config(cls, data: DataConfig) -> FeaturePipeline:
        """The pipeline a training run on `data` feeds its model."""
        return cls(
            tuple(data.video_sources),
            tuple(int(d) for d in data.video_dims),
            data.text_source,
            int(data.text_dim),
            float(data.clip_len),
            bool(data.normalize_video),
            bool(data.normalize_text),
            bool(data.use_tef),
            int(data.max_v_l or 0),
            int(data.max_q_l or 0),
        )

    @classmethod
    def from_record(
        cls,
        record: Mapping[str, Any] | None,
        data: DataConfig,
        model_dims: tuple[int, int],
        where: str = "",
    ) -> FeaturePipeline:
        """The pipeline of a stored model: its record, completed from its data config for keys an older
        checkpoint lacks. `model_dims` = the model's (video_dim, text_dim); sources whose dims (+ 2 TEF)
        do not give the model's video input are a `CheckpointError` naming `where`."""
        rec = dict(record or {})
        pipe = cls(
            tuple(rec.get("video_sources") or data.video_sources),
            tuple(int(d) for d in (rec.get("video_dims") or data.video_dims)),
            rec.get("text_source") or data.text_source,
            int(rec.get("text_dim") or model_dims[1]),
            float(rec.get("clip_len") or data.clip_len),
            bool(rec.get("normalize_video", data.normalize_video)),
            bool(rec.get("normalize_text", data.normalize_text)),
            bool(rec.get("use_tef", data.use_tef)),
            int(rec.get("max_v_l") or data.max_v_l or 0),
            int(rec.get("max_q_l") or data.max_q_l or 0),
        )
        video_dim = int(rec.get("video_dim") or model_dims[0])
        if pipe.video_dim != video_dim or video_dim != model_dims[0]:
            raise CheckpointError(
                f"{where}: feature sources {list(pipe.video_sources)} with dims {list(pipe.video_dims)} "
                f"(+ TEF {pipe.use_tef}) do not add up to the model's {model_dims[0]}"
            )
        return pipe

    def to_record(self) -> dict[str, Any]:
        """Plain types (JSON, `torch.load(weights_only=True)`), keys `RECORD_KEYS`."""
        return {
            "video_sources": list(self.video_sources),
            "video_dims": list(self.video_dims),
            "text_source": self.text_source,
            "video_dim": self.video_dim,
            "text_dim": self.text_dim,
            "clip_len": self.clip_len,
            "normalize_video": self.normalize_video,
            "normalize_text": self.normalize_text,
            "use_tef": self.use_tef,
            "max_v_l": self.max_v_l,
            "max_q_l": self.max_q_l,
        }

    # ------------------------------------------------------------------ preparation

    def check_clips(self, feats: Any, field: str = "video_features") -> np.ndarray:
        """Raw clip features as float32 [L > 0, clip_dim] in the source order; else a `DataError`."""
        arr = np.asarray(feats, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != self.clip_dim:
            raise DataError(
                f"video features must be [L > 0, {self.clip_dim}] ({'+'.join(self.video_sources)}), "
                f"got {list(arr.shape)}",
                field=field,
            )
        return arr

    def normalize_clips(self, feats: np.ndarray) -> np.ndarray:
        """Per-source L2 norm of every clip (as the feature store reads them): [L, clip_dim] float32."""
        feats = feats.astype(np.float32, copy=False)
        if not self.normalize_video:
            return feats
        edges = np.cumsum([0, *self.video_dims])
        return np.concatenate([l2_normalize(feats[:, a:b]) for a, b in itertools.pairwise(edges)], axis=1)

    def text_tokens(self, tokens: Any, field: str = "text_features") -> np.ndarray:
        """Raw token features [L_t > 0, text_dim] -> normalised (if configured) and cut to max_q_l."""
        text = np.asarray(tokens, dtype=np.float32)
        if text.ndim != 2 or text.shape[0] == 0 or text.shape[1] != self.text_dim:
            raise DataError(
                f"text features must be [L_t > 0, {self.text_dim}], got {list(text.shape)}", field=field
            )
        if self.normalize_text:
            text = l2_normalize(text)
        return text[: self.max_q_l] if self.max_q_l > 0 else text

    def video_input(self, clips: np.ndarray) -> np.ndarray:
        """Normalised clips of one model input [W, clip_dim] -> [W, video_dim] (TEF of the W clips)."""
        clips = clips.astype(np.float32, copy=False)
        return add_tef(clips) if self.use_tef else clips


@dataclass
class ModelInputs:
    """A padded batch of model inputs (numpy; `tensors` for a torch model)."""

    video: np.ndarray  # [B, Lv, Dv] float32, zero-padded
    video_mask: np.ndarray  # [B, Lv] bool (True = valid clip)
    text: np.ndarray  # [B, Lt, Dt] float32, zero-padded
    text_mask: np.ndarray  # [B, Lt] bool

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """(video_feat, video_mask, text_feat, text_mask) as tensors on `device`."""
        return tuple(
            torch.from_numpy(a).to(device) for a in (self.video, self.video_mask, self.text, self.text_mask)
        )


def pad_rows(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """list[B] of [L_i, D] -> ([B, max L_i, D] zero-padded, [B, max L_i] bool mask). One memcpy per row."""
    length = max(r.shape[0] for r in rows)
    out = np.zeros((len(rows), length, *rows[0].shape[1:]), dtype=np.float32)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
        mask[i, : row.shape[0]] = True
    return out, mask


def pad_inputs(videos: Sequence[np.ndarray], texts: Sequence[np.ndarray]) -> ModelInputs:
    """Model inputs of B (video, query) pairs: videos list[B] of [L_i, video_dim] (`video_input`), texts
    list[B] of [L_t,i, text_dim] (`text_tokens`); one text is shared by every video."""
    if len(texts) == 1 and len(videos) > 1:
        texts = [texts[0]] * len(videos)
    if not videos or len(videos) != len(texts):
        raise ValueError(f"need as many texts as videos (or one), got {len(videos)} and {len(texts)}")
    video, video_mask = pad_rows(videos)
    text, text_mask = pad_rows(texts)
    return ModelInputs(video, video_mask, text, text_mask)
