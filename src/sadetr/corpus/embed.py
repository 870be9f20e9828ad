"""The trained SA-DETR as a retrieval bi-encoder and a window localiser (the two stages of corpus search).

Owns: loading a checkpoint for corpus use, its feature pipeline (the checkpoint's `features` entry), the
per-window model input (per-source L2 norm as in training, TEF per window), the L_vtc embeddings and the
batched localisation of a query in a set of windows.

The index needs a video embedding that does not depend on the query. SA-DETR's L_vtc (paper 3.2,
`vtc_stage=before`, NOTES.md) aligns the masked means of the *projected* inputs, `mean_i F_v[i]` and
`mean_j F_t[j]`, before any fusion; those are computed here from `encoder.video_proj` and
`encoder.text_proj` alone. With `vtc_stage=after` the aligned embeddings are fused with the query, so no
per-window vector exists; such a checkpoint is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sadetr.data.features import add_tef, l2_normalize
from sadetr.errors import CheckpointError, DataError
from sadetr.model.postprocess import snap_to_clip_grid
from sadetr.model.span_ops import span_cxw_to_xx

PIPELINE_KEYS = (
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
        pipeline: dict[str, Any],
        device: torch.device,
        source: str,
        round_to_clip: bool = True,
    ) -> None:
        encoder = getattr(model, "encoder", None)
        if encoder is None or not hasattr(encoder, "video_proj") or not hasattr(model, "query_init"):
            raise CheckpointError(f"{source}: corpus search needs an SA-DETR checkpoint (model.name sa_detr)")
        if not getattr(encoder, "use_vtc", False) or getattr(encoder, "vtc_stage", "") != "before":
            raise CheckpointError(
                f"{source}: corpus search needs the L_vtc bi-encoder at vtc_stage=before "
                f"(this model: use_vtc={getattr(encoder, 'use_vtc', None)}, "
                f"vtc_stage={getattr(encoder, 'vtc_stage', None)!r})"
            )
        self.model = model.to(device).eval()
        self.round_to_clip = round_to_clip  # the field's inference protocol, as the checkpoint's config says
        self.encoder: Any = encoder  # MultiModalAlignEncoder: video_proj / text_proj give the L_vtc inputs
        self.pipeline = pipeline
        self.device = device
        self.source = source
        self.video_dims = [int(d) for d in pipeline["video_dims"]]
        self.clip_len = float(pipeline["clip_len"])
        self.use_tef = bool(pipeline["use_tef"])
        self.normalize_text = bool(pipeline["normalize_text"])
        self.max_v_l = int(pipeline["max_v_l"] or 0)
        self.max_q_l = int(pipeline["max_q_l"] or 0)
        self.text_dim = int(pipeline["text_dim"])

    @property
    def dim(self) -> int:
        """Size d of the L_vtc embeddings (the model's hidden size)."""
        return int(self.encoder.hidden_dim)

    @classmethod
    def load(cls, checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[CorpusModel, str]:
        """(model, checkpoint SHA-256) of a training checkpoint file or run directory. A device name the
        machine lacks (or a typo) is a `ConfigError` naming --device, before the checkpoint is read."""
        from sadetr.devices import resolve_device
        from sadetr.engine.checkpoint import checkpoint_file, file_sha256, load_trained_model, pipeline_of

        device = resolve_device(device, "--device") if isinstance(device, str) else device
        path = checkpoint_file(checkpoint).resolve()
        model, cfg, state = load_trained_model(path, map_location="cpu")
        pipeline = pipeline_of(cfg, state.get("features"), str(path))
        corpus_model = cls(model, pipeline, device, str(path), cfg.model.round_to_clip)
        return corpus_model, file_sha256(path)

    # ------------------------------------------------------------------ inputs

    def window_input(self, video: np.ndarray) -> np.ndarray:
        """One window of normalised clip features [W, sum D] -> model input [W, Dv] (TEF appended)."""
        video = video.astype(np.float32, copy=False)
        return add_tef(video) if self.use_tef else video  # [W, sum D (+ 2)]

    def _pad(self, windows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """list[B] of [W_b, Dv] -> (video [B, W, Dv], mask [B, W] bool)."""
        width = max(w.shape[0] for w in windows)
        video = np.zeros((len(windows), width, windows[0].shape[1]), dtype=np.float32)
        mask = np.zeros((len(windows), width), dtype=bool)
        for b, w in enumerate(windows):
            video[b, : len(w)] = w
            mask[b, : len(w)] = True
        return torch.from_numpy(video).to(self.device), torch.from_numpy(mask).to(self.device)

    def text_input(self, query_feats: np.ndarray, where: str = "query_feats") -> np.ndarray:
        """Token features [L_t, D_t] -> normalised and cut to max_q_l, as in training; checks the shape."""
        text = np.asarray(query_feats, dtype=np.float32)
        if text.ndim != 2 or text.shape[0] == 0 or text.shape[1] != self.text_dim:
            raise DataError(f"must be [L_t > 0, {self.text_dim}], got {list(text.shape)}", field=where)
        if not np.isfinite(text).all():
            raise DataError("contains NaN/Inf values", field=where)
        if not np.abs(text).any():
            raise DataError("the query embeds to zero (all token features are 0)", field=where)
        if self.normalize_text:
            text = l2_normalize(text)
        return text[: self.max_q_l] if self.max_q_l > 0 else text

    # ------------------------------------------------------------------ embeddings (L_vtc, before fusion)

    @torch.no_grad()
    def embed_windows(self, windows: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """L2-normalised masked mean of `video_proj` per window: list of [W, Dv] -> [N, d] float32."""
        out = []
        for i in range(0, len(windows), batch_size):
            video, mask = self._pad(windows[i : i + batch_size])  # (B, W, Dv), (B, W)
            f_v = self.encoder.video_proj(video)  # (B, W, d)
            w = mask[..., None].to(f_v.dtype)  # (B, W, 1)
            emb = (f_v * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, d)
            out.append(F.normalize(emb, dim=-1).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    @torch.no_grad()
    def embed_text(self, text: np.ndarray) -> np.ndarray:
        """L2-normalised mean of `text_proj` over the tokens of `text_input(...)` [L_t, D_t] -> [d]."""
        t = torch.from_numpy(np.ascontiguousarray(text))[None].to(self.device)  # (1, L_t, D_t)
        emb = self.encoder.text_proj(t).mean(dim=1)[0]  # (d,)
        norm = float(emb.norm())
        if not np.isfinite(norm) or norm < 1e-8:
            raise DataError("the query embeds to zero (no direction to search)", field="query")
        return (emb / norm).float().cpu().numpy()

    # ------------------------------------------------------------------ localisation

    @torch.no_grad()
    def localize(
        self,
        windows: list[np.ndarray],
        offsets: list[float],
        ends: list[float],
        text: np.ndarray,
        batch_size: int = 32,
    ) -> Moments:
        """The query `text` [L_t, D_t] in each window [W_b, Dv]; spans shifted by `offsets` (s) and
        clipped to [offset, end] of their window -> Moments([B, Nq, 2], [B, Nq])."""
        spans, quality = [], []
        t_one = torch.from_numpy(np.ascontiguousarray(text))[None].to(self.device)  # (1, L_t, D_t)
        for i in range(0, len(windows), batch_size):
            chunk = windows[i : i + batch_size]
            video, v_mask = self._pad(chunk)  # (B, W, Dv), (B, W)
            t = t_one.expand(len(chunk), -1, -1)  # (B, L_t, D_t)
            t_mask = torch.ones(t.shape[:2], dtype=torch.bool, device=self.device)
            out = self.model(video, v_mask, t, t_mask)
            xx = span_cxw_to_xx(out["pred_spans"].float()).cpu().numpy()  # (B, Nq, 2) window fraction
            n = v_mask.sum(1).cpu().numpy().astype(np.float64)  # (B,)
            secs_b = xx * (n * self.clip_len)[:, None, None]  # (B, Nq, 2) window time
            if self.round_to_clip:  # window starts lie on the clip grid, so window time may be snapped
                secs_b = np.stack(
                    [
                        snap_to_clip_grid(torch.from_numpy(s), self.clip_len, w * self.clip_len).numpy()
                        for s, w in zip(secs_b, n)
                    ]
                )
            spans.append(secs_b)
            quality.append(out["pred_quality"].float().cpu().numpy())
        secs = np.concatenate(spans) + np.asarray(offsets, dtype=np.float64)[:, None, None]  # (B, Nq, 2)
        lo = np.asarray(offsets, dtype=np.float64)[:, None, None]
        hi = np.asarray(ends, dtype=np.float64)[:, None, None]
        return Moments(np.clip(secs, lo, hi), np.concatenate(quality).astype(np.float64))
