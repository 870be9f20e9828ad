"""Two-stage corpus search: retrieve windows by L_vtc cosine, localise the query around them, fuse, NMS.

    searcher = CorpusSearcher.open("library.idx", clip_dir="clip-vit-base-patch32/")
    for hit in searcher.search("a man chops onions", top=10):
        print(hit.video, hit.start, hit.end, hit.score)

Retrieval windows are short (default 8 clips): a window's mean embedding is then dominated by what
happens in it, not diluted by the rest of the video. SA-DETR localises in the context it was trained
on: the training-length sliding window (max_v_l clips) nearest to each retrieved window, each distinct
context run once (`context_of`). Ranking across videos (docs/corpus.md "Score fusion"): a moment with
predicted quality q (eq 8's IoU estimate, in [0, 1]) and retrieval score s (the best cosine of the
windows it overlaps) gets `score = exp(alpha * (s - 1)) * q`.
It orders moments exactly as XML/ReLoCLNet's `exp(alpha * s) * q` (a constant factor exp(-alpha) keeps
it in (0, 1]). q alone is not comparable across videos, since the localiser was trained only on videos
that contain the queried moment; s says whether they do. alpha is chosen on validation data
(`sadetr evaluate-corpus --tune-alpha`) and stored in the index; DEFAULT_ALPHA otherwise.
Moments of one video are then merged by temporal NMS (windows overlap).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sadetr.core.errors import CheckpointError, DataError
from sadetr.corpus.embed import CorpusModel
from sadetr.corpus.index import check_compatible, feature_store
from sadetr.corpus.store import CorpusIndexError, faiss_search, read_state
from sadetr.inference.backend import Backend
from sadetr.inference.sliding import temporal_nms, window_starts
from sadetr.model.postprocess import merge_duplicates
from sadetr.video.clip import load_clip

DEFAULT_ALPHA = 100.0
NMS_IOU = 0.7


@dataclass
class Candidates:
    """Moments of C localised contexts before fusion (kept to re-rank with another alpha)."""

    videos: list[str]  # [C] video of each context
    cosines: np.ndarray  # [C, Nq] retrieval score s of each moment
    spans: np.ndarray  # [C, Nq, 2] seconds
    quality: np.ndarray  # [C, Nq]


@dataclass(frozen=True)
class SearchHit:
    """One ranked moment: `video`, `start`/`end` (s), fused `score`, window cosine, moment quality, and
    `log_score` = ln(score) = alpha (s - 1) + ln q (<= 0; the readable form of a score that is tiny
    for a large alpha)."""

    video: str
    start: float
    end: float
    score: float
    retrieval_score: float
    quality: float
    log_score: float


def fuse(retrieval: np.ndarray, quality: np.ndarray, alpha: float) -> np.ndarray:
    """`exp(alpha * (s - 1)) * q` (XML's exp(alpha s) q, rescaled into (0, 1]).

    >>> fuse(np.array([1.0, 0.5]), np.array([0.5, 1.0]), 2.0).round(4).tolist()
    [0.5, 0.3679]
    """
    return np.exp(alpha * (np.asarray(retrieval, np.float64) - 1.0)) * np.asarray(quality, np.float64)


class CorpusSearcher:
    """A corpus index, the model that built it, and the features of its videos."""

    def __init__(
        self,
        index_dir: Path,
        state: Any,
        index: Any,
        model: CorpusModel,
        clip_dir: Path | None,
        clip: Any = None,
    ) -> None:
        self.index_dir = index_dir
        self.manifest = state.manifest
        self.vectors = state.vectors  # [N, d]
        self.table = state.table
        self.index = index
        self.model = model
        self.clip_dir = clip_dir
        alpha = self.manifest.get("alpha")  # None until chosen; 0.0 (rank by quality alone) is a choice
        self.alpha = DEFAULT_ALPHA if alpha is None else float(alpha)
        self._clip: Any = clip  # loaded from clip_dir on the first text query, unless given
        self._stores: dict[str, Any] = {}
        self._feats: OrderedDict[str, np.ndarray] = OrderedDict()  # LRU of [L, sum D] per video
        self._t0 = np.asarray(self.table.t0, np.float64)  # [N] window start (s)
        self._t1 = np.asarray(self.table.t1, np.float64)  # [N] window end (s)
        rows: dict[str, list[int]] = {}
        for i, vid in enumerate(self.table.video):
            rows.setdefault(vid, []).append(i)
        self._rows = {vid: np.asarray(r, dtype=np.int64) for vid, r in rows.items()}  # video -> [W_vid]

    @classmethod
    def open(
        cls,
        index_dir: Path,
        checkpoint: Path | None = None,
        *,
        device: str = "cpu",
        clip_dir: Path | None = None,
        clip: Any = None,
        backend: str | Backend = "torch",
        threads: int = 0,
    ) -> CorpusSearcher:
        """Open an index; `checkpoint` None = the one recorded in it; a model whose embeddings differ from
        the index's is refused. `clip`: an already loaded CLIP (e.g. a Predictor's) to encode text queries
        with, instead of loading a second copy from `clip_dir`; `backend` runs the localiser (torch |
        onnx | onnx-int8, the ONNX ones from a model folder), `threads` its onnxruntime threads."""
        index_dir = Path(index_dir)
        state, index = read_state(index_dir)
        ckpt = Path(checkpoint) if checkpoint is not None else Path(state.manifest["checkpoint"])
        if checkpoint is None and not ckpt.exists():
            raise CorpusIndexError(f"{index_dir}: its checkpoint {ckpt} is gone; pass --checkpoint")
        model, sha = CorpusModel.load(ckpt, device, backend, threads)
        check_compatible(state.manifest, sha, model.pipeline, index_dir, model.fingerprint)
        return cls(index_dir, state, index, model, Path(clip_dir) if clip_dir is not None else None, clip)

    # ------------------------------------------------------------------ properties

    @property
    def videos(self) -> list[str]:
        return list(self.table.videos)

    @property
    def num_windows(self) -> int:
        return len(self.table)

    def duration(self, video: str) -> float:
        return float(self._video_meta(video)["duration"])

    def rows_of(self, video: str) -> np.ndarray:
        """Window ids [W_video] of `video` (index order)."""
        self._video_meta(video)
        return self._rows[video]

    def _video_meta(self, video: str) -> dict[str, Any]:
        if video not in self.table.videos:
            raise DataError(f"video {video!r} is not in the index {self.index_dir}", field="video")
        return self.table.videos[video]

    # ------------------------------------------------------------------ query

    def query_embedding(
        self, query: str | None = None, query_feats: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(token features for the localiser [L_t, D_t], L2-normalised query vector [d])."""
        if (query is None) == (query_feats is None):
            raise DataError("give exactly one of a query string and query features", field="query")
        if query_feats is None:
            if not str(query).strip():
                raise DataError("empty query", field="query")
            query_feats = self._clip_tokens(str(query))
        text = self.model.text_input(query_feats)
        return text, self.model.embed_text(text)

    def _clip_tokens(self, query: str) -> np.ndarray:
        pipe = self.model.pipeline
        if pipe["text_source"] != "clip_text_features":
            raise CheckpointError(
                f"{self.model.source}: trained on text features {pipe['text_source']!r}; pass query features"
            )
        if self._clip is None:
            if self.clip_dir is None:
                raise CheckpointError("a text query needs the CLIP weights: give --clip (clip_dir)")

            self._clip = load_clip(self.clip_dir, device=self.model.device)
        return self._clip.encode_texts([query])[0]["last_hidden_state"]

    # ------------------------------------------------------------------ the two stages

    def retrieve(self, qvec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: (cosines [k], window ids [k]) of the top-k windows by faiss inner product."""
        if self.num_windows == 0:
            raise CorpusIndexError(f"{self.index_dir}: empty library")
        return faiss_search(self.index, qvec, min(k, self.num_windows))

    def _video_features(self, vid: str) -> np.ndarray:
        """Normalised clip features [L, sum D] of a video (LRU cache of 512 videos)."""
        feats = self._feats.get(vid)
        if feats is None:
            root = self.table.videos[vid]["feat_root"]
            if root not in self._stores:
                self._stores[root] = feature_store(self.model.pipeline, root)
            feats = self._stores[root].video(vid)
            self._feats[vid] = feats
            if len(self._feats) > 512:
                self._feats.popitem(last=False)
        else:
            self._feats.move_to_end(vid)
        return feats

    def context_of(self, row: int) -> tuple[str, int, int]:
        """(video, first clip, clips) of the localisation context of retrieval window `row`: the one of
        the video's training-length sliding windows (max_v_l clips, stride max_v_l / 2, as `Predictor`)
        whose centre is nearest to the retrieval window's centre."""
        vid = self.table.video[row]
        n = int(self.table.videos[vid]["n_clips"])
        length = min(self.model.max_v_l or n, n)
        starts = window_starts(n, length, length - max(1, length // 2))
        centre = self.table.start_clip[row] + self.table.n_clips[row] / 2
        best = min(starts, key=lambda st: (abs(st + length / 2 - centre), st))
        return vid, best, length

    def candidates(self, rows: np.ndarray, qvec: np.ndarray, text: np.ndarray) -> Candidates:
        """Stage 2: SA-DETR once on each distinct context of the windows `rows` (batched). Each moment's
        retrieval score s is the best cosine of the video's windows that overlap it."""
        contexts = list(dict.fromkeys(self.context_of(int(r)) for r in np.asarray(rows, dtype=np.int64)))
        if not contexts:
            return Candidates([], np.zeros((0, 0)), np.zeros((0, 0, 2)), np.zeros((0, 0)))
        clip_len = self.model.clip_len
        windows, offsets, ends = [], [], []
        for vid, st, n in contexts:
            windows.append(self._video_features(vid)[st : st + n])
            offsets.append(st * clip_len)
            ends.append(min((st + n) * clip_len, self.duration(vid)))
        moments = self.model.localize(windows, offsets, ends, text)  # spans (C, Nq, 2), quality (C, Nq)
        cosines = np.zeros(moments.quality.shape)  # (C, Nq)
        video_cos: dict[str, np.ndarray] = {}  # a video with several contexts: its cosines once
        for c, (vid, _, _) in enumerate(contexts):
            own = self._rows[vid]
            if vid not in video_cos:
                video_cos[vid] = self.vectors[own].astype(np.float64) @ qvec.astype(np.float64)  # (W_vid,)
            cos = video_cos[vid]
            t0, t1 = self._t0[own], self._t1[own]
            m0, m1 = moments.spans[c, :, :1], moments.spans[c, :, 1:]  # (Nq, 1) each
            overlap = (np.minimum(m1, t1[None]) - np.maximum(m0, t0[None])) > 0  # (Nq, W_vid)
            nearest = np.abs((t0 + t1)[None] / 2 - (m0 + m1) / 2).argmin(axis=1)  # (Nq,)
            overlap[np.arange(len(nearest)), nearest] |= ~overlap.any(axis=1)
            cosines[c] = np.where(overlap, cos[None], -np.inf).max(axis=1)
        return Candidates([v for v, _, _ in contexts], cosines, moments.spans, moments.quality)

    def rank(self, cands: Candidates, alpha: float, nms_iou: float = NMS_IOU) -> list[SearchHit]:
        """Fuse cosines and qualities (module docstring), NMS per video, sort by fused score. Ranked in
        log space, `alpha * (s - 1) + log q`, so that a large alpha never ties moments at score 0.
        alpha must be finite and >= 0 (a NaN would rank by NaN scores)."""
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha < np.inf:
            raise DataError(f"must be a finite number >= 0, got {alpha!r}", field="alpha")
        log_fused = alpha * (cands.cosines - 1.0) + np.log(np.maximum(cands.quality, 1e-30))  # (C, Nq)
        per_video: dict[str, list[list[float]]] = {}
        for c, vid in enumerate(cands.videos):
            ms = per_video.setdefault(vid, [])
            for (st, en), f, s, q in zip(cands.spans[c], log_fused[c], cands.cosines[c], cands.quality[c]):
                ms.append([float(st), float(en), float(f), float(s), float(q)])
        kept = [  # one answer per window (the best), then NMS
            (vid, m)
            for vid, ms in per_video.items()
            for m in temporal_nms(merge_duplicates(sorted(ms, key=lambda m: -m[2])), nms_iou)
        ]
        kept.sort(key=lambda x: (-x[1][2], x[0], x[1][0]))
        return [
            SearchHit(v, round(m[0], 4), round(m[1], 4), float(np.exp(m[2])), m[3], m[4], m[2])
            for v, m in kept
        ]

    def search(
        self,
        query: str | None = None,
        *,
        query_feats: np.ndarray | None = None,
        top: int = 10,
        k_windows: int = 100,
        alpha: float | None = None,
    ) -> list[SearchHit]:
        """Top `top` moments of the library for a query string (needs clip_dir) or token features
        [L_t, D_t]; SA-DETR runs on the `k_windows` best windows only (clamped to the index size)."""
        if top < 1 or k_windows < 1:
            raise DataError(f"top and k_windows must be >= 1, got {top} and {k_windows}", field="top")
        text, qvec = self.query_embedding(query, query_feats)
        _, rows = self.retrieve(qvec, k_windows)
        return self.rank(self.candidates(rows, qvec, text), self.alpha if alpha is None else alpha)[:top]

    def search_exhaustive(
        self,
        query: str | None = None,
        *,
        query_feats: np.ndarray | None = None,
        top: int = 10,
        alpha: float | None = None,
    ) -> list[SearchHit]:
        """The reference: SA-DETR on every context of every video (no retrieval stage, no faiss)."""
        text, qvec = self.query_embedding(query, query_feats)
        cands = self.candidates(np.arange(self.num_windows), qvec, text)
        return self.rank(cands, self.alpha if alpha is None else alpha)[:top]

    def search_video(
        self,
        video: str,
        *,
        query_feats: np.ndarray | None = None,
        query: str | None = None,
        top: int = 10,
        alpha: float | None = None,
    ) -> list[SearchHit]:
        """Single-video moment retrieval (SVMR): every window of `video`, same fusion and NMS."""
        rows = self.rows_of(video)
        text, qvec = self.query_embedding(query, query_feats)
        cands = self.candidates(rows, qvec, text)
        return self.rank(cands, self.alpha if alpha is None else alpha)[:top]


def check_k(k: int | None, searcher: CorpusSearcher) -> int:
    """The CLI's K: default min(100, N); an explicit K larger than the index is an error."""
    n = searcher.num_windows
    if k is None:
        return min(100, n)
    if k < 1 or k > n:
        raise DataError(f"must be in [1, {n}] (the index holds {n} windows), got {k}", field="--k-windows")
    return k
