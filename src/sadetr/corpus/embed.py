"""The trained SA-DETR as a retrieval bi-encoder and a window localiser (the two stages of corpus search).

Owns: loading a model for corpus use (a checkpoint or a model folder, any inference backend), and the
corpus's view of it: window and query embeddings from the model's own `embed_video`/`embed_text` (L_vtc's
embeddings before fusion, paper 3.2, `vtc_stage=before`), the fingerprint of what decides them (an index
records it and refuses a model whose embeddings differ), and the batched localisation of a query in a set
of windows through the predictor core (`sadetr.inference.core.Localizer`). Inputs are prepared by the
model's `FeaturePipeline`. A model without query-independent embeddings (`vtc_stage=after`, or a
baseline) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sadetr.core.devices import resolve_device
from sadetr.core.errors import CheckpointError, DataError
from sadetr.data.pipeline import RECORD_KEYS, FeaturePipeline, pad_rows
from sadetr.inference.backend import Backend, TorchBackend
from sadetr.inference.core import Localizer
from sadetr.inference.loading import load_model, make_backend
from sadetr.model.sa_detr import SADETR

PIPELINE_KEYS = RECORD_KEYS  # what an index compares with the model's pipeline


@dataclass
class Moments:
    """Localiser output for B windows: spans in seconds (video time) and quality in [0, 1]."""

    spans: np.ndarray  # [B, Nq, 2] start, end (s)
    quality: np.ndarray  # [B, Nq]


class CorpusModel:
    """A trained SA-DETR with its feature pipeline: window/text embeddings and window localisation."""

    def __init__(
        self,
        model: nn.Module,
        features: FeaturePipeline,
        device: torch.device,
        source: str,
        round_to_clip: bool = True,
        backend: Backend | None = None,
    ) -> None:
        if not isinstance(model, SADETR):
            raise CheckpointError(f"{source}: corpus search needs an SA-DETR model (model.name sa_detr)")
        if not model.can_embed:
            raise CheckpointError(
                f"{source}: corpus search needs the L_vtc bi-encoder at vtc_stage=before "
                f"(this model: use_vtc={model.encoder.use_vtc}, vtc_stage={model.encoder.vtc_stage!r})"
            )
        self.model = model.to(device).eval()
        self.features = features
        self.pipeline = features.to_record()  # the record an index stores and compares
        self.device = device
        self.source = source
        self.video_dims = list(features.video_dims)
        self.clip_len = features.clip_len
        self.max_v_l = features.max_v_l
        self.text_dim = features.text_dim
        self.localizer = Localizer(
            backend if backend is not None else TorchBackend(self.model, device),
            features,
            round_to_clip,
            device,
        )

    @property
    def dim(self) -> int:
        """Size d of the L_vtc embeddings (the model's hidden size)."""
        return int(self.model.encoder.hidden_dim)

    @property
    def fingerprint(self) -> str:
        """What decides the embeddings (`SADETR.embedding_fingerprint`)."""
        return self.model.embedding_fingerprint()

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        backend: str | Backend = "torch",
        threads: int = 0,
    ) -> tuple[CorpusModel, str]:
        """(model, SHA-256 of its weights file) of a checkpoint file, run directory or model folder;
        `backend` runs the localiser (torch | onnx | onnx-int8, or a backend already built for this model,
        e.g. a service's), the embeddings are the torch model's.
        A device name the machine lacks (or a typo) is a `ConfigError` naming --device, before the
        checkpoint is read."""

        device = resolve_device(device, "--device") if isinstance(device, str) else device
        path = Path(checkpoint)
        loaded = load_model(path)
        source = str(path.resolve()) if loaded.folder is not None else str(Path(loaded.source).resolve())
        runner = make_backend(loaded, backend, device, threads) if isinstance(backend, str) else backend
        model = cls(loaded.model, loaded.pipeline, device, source, loaded.round_to_clip, runner)
        return model, loaded.identity

    # ------------------------------------------------------------------ inputs

    def text_input(self, query_feats: np.ndarray, where: str = "query_feats") -> np.ndarray:
        """Token features [L_t, D_t] -> prepared as in training (`FeaturePipeline.text_tokens`); also
        refuses non-finite and all-zero features."""
        text = np.asarray(query_feats, dtype=np.float32)
        if text.ndim != 2 or text.shape[0] == 0 or text.shape[1] != self.text_dim:
            raise DataError(f"must be [L_t > 0, {self.text_dim}], got {list(text.shape)}", field=where)
        if not np.isfinite(text).all():
            raise DataError("contains NaN/Inf values", field=where)
        if not np.abs(text).any():
            raise DataError("the query embeds to zero (all token features are 0)", field=where)
        return self.features.text_tokens(text, field=where)

    # ------------------------------------------------------------------ embeddings (the model's own)

    @torch.no_grad()
    def embed_windows(self, windows: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """`SADETR.embed_video` of each window of normalised clips [W, clip_dim] -> [N, d] float32."""
        out = []
        for i in range(0, len(windows), batch_size):
            chunk = [self.features.video_input(w) for w in windows[i : i + batch_size]]
            video, video_mask = (
                torch.from_numpy(a).to(self.device) for a in pad_rows(chunk)
            )  # (B, W, Dv), (B, W)
            out.append(self.model.embed_video(video, video_mask).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    @torch.no_grad()
    def embed_text(self, text: np.ndarray) -> np.ndarray:
        """`SADETR.embed_text` of the tokens of `text_input(...)` [L_t, D_t] -> [d]."""
        t, mask = (torch.from_numpy(a).to(self.device) for a in pad_rows([text]))  # (1, L_t, D_t), (1, L_t)
        emb = self.model.embed_text(t, mask)[0].float().cpu().numpy()  # (d,)
        if not np.isfinite(emb).all() or np.linalg.norm(emb) < 0.5:  # unit length, or 0 for a zero mean
            raise DataError("the query embeds to zero (no direction to search)", field="query")
        return emb

    # ------------------------------------------------------------------ localisation

    def localize(
        self,
        windows: list[np.ndarray],
        offsets: list[float],
        ends: list[float],
        text: np.ndarray,
        batch_size: int = 32,
    ) -> Moments:
        """The query `text` [L_t, D_t] in each window of normalised clips [W_b, clip_dim] starting at
        `offsets` (s) and ending at `ends` (s) -> Moments([B, Nq, 2] in video time, [B, Nq])."""
        durations = [min(len(w) * self.clip_len, end - off) for w, off, end in zip(windows, offsets, ends)]
        decoded = self.localizer.localize(windows, text, durations, batch_size)
        spans = np.stack([d.windows.astype(np.float64) for d in decoded])  # (B, Nq, 2) window time
        spans = spans + np.asarray(offsets, dtype=np.float64)[:, None, None]
        quality = np.stack([d.quality.astype(np.float64) for d in decoded])  # (B, Nq)
        return Moments(spans, quality)
