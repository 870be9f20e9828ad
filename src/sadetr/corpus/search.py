"""Two-stage corpus search: retrieve windows by L_vtc cosine, localise the query in them, fuse, NMS.

    searcher = CorpusSearcher.open("library.idx", clip_dir="clip-vit-base-patch32/")
    for hit in searcher.search("a man chops onions", top=10):
        print(hit.video, hit.start, hit.end, hit.score)

Ranking across videos (docs/corpus.md "Score fusion"): a moment found in window w with predicted quality
q (eq 8's IoU estimate, in [0, 1]) and window-query cosine s gets `score = exp(alpha * (s - 1)) * q`.
It orders moments exactly as XML/ReLoCLNet's `exp(alpha * s) * q` (a constant factor exp(-alpha) keeps
it in (0, 1]). q alone is not comparable across videos, since the localiser was trained only on videos
that contain the queried moment; s says whether they do. alpha is chosen on validation data
(`sadetr evaluate-corpus --tune-alpha`) and stored in the index; DEFAULT_ALPHA otherwise.
Moments of one video are then merged by temporal NMS (windows overlap).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sadetr.corpus.embed import CorpusModel
from sadetr.corpus.index import check_compatible, feature_store
from sadetr.corpus.store import CorpusIndexError, faiss_search, read_state
from sadetr.errors import CheckpointError, DataError
from sadetr.video.sliding import temporal_nms

log = logging.getLogger(__name__)

DEFAULT_ALPHA = 20.0
NMS_IOU = 0.7


@dataclass
class Candidates:
    """Moments of K localised windows before fusion (kept to re-rank with another alpha)."""

    rows: np.ndarray  # [K] window ids
    cosines: np.ndarray  # [K] window-query cosine s
    spans: np.ndarray  # [K, Nq, 2] seconds
    quality: np.ndarray  # [K, Nq]


@dataclass(frozen=True)
class SearchHit:
    """One ranked moment: `video`, `start`/`end` (s), fused `score`, window cosine, moment quality."""

    video: str
    start: float
    end: float
    score: float
    retrieval_score: float
    quality: float


def fuse(retrieval: np.ndarray, quality: np.ndarray, alpha: float) -> np.ndarray:
    """`exp(alpha * (s - 1)) * q` (XML's exp(alpha s) q, rescaled into (0, 1]).

    >>> fuse(np.array([1.0, 0.5]), np.array([0.5, 1.0]), 2.0).round(4).tolist()
    [0.5, 0.3679]
    """
    return np.exp(alpha * (np.asarray(retrieval, np.float64) - 1.0)) * np.asarray(quality, np.float64)


class CorpusSearcher:
    """A corpus index, the model that built it, and the features of its videos."""

    def __init__(
        self, index_dir: Path, state: Any, index: Any, model: CorpusModel, clip_dir: Path | None
    ) -> None:
        self.index_dir = index_dir
        self.manifest = state.manifest
        self.vectors = state.vectors  # [N, d]
        self.table = state.table
        self.index = index
        self.model = model
        self.clip_dir = clip_dir
        self.alpha = float(self.manifest.get("alpha") or DEFAULT_ALPHA)
        self._clip: Any = None
        self._stores: dict[str, Any] = {}
        self._feats: OrderedDict[str, np.ndarray] = OrderedDict()  # LRU of [L, sum D] per video
        self._rows: dict[str, list[int]] = {}
        for i, vid in enumerate(self.table.video):
            self._rows.setdefault(vid, []).append(i)

    @classmethod
    def open(
        cls,
        index_dir: Path,
        checkpoint: Path | None = None,
        *,
        device: str = "cpu",
        clip_dir: Path | None = None,
    ) -> CorpusSearcher:
        """Open an index; `checkpoint` None = the one recorded in it; another checkpoint is refused."""
        index_dir = Path(index_dir)
        state, index = read_state(index_dir)
        ckpt = Path(checkpoint) if checkpoint is not None else Path(state.manifest["checkpoint"])
        if checkpoint is None and not ckpt.exists():
            raise CorpusIndexError(f"{index_dir}: its checkpoint {ckpt} is gone; pass --checkpoint")
        model, sha = CorpusModel.load(ckpt, device)
        check_compatible(state.manifest, sha, model.pipeline, index_dir)
        return cls(index_dir, state, index, model, Path(clip_dir) if clip_dir is not None else None)

    # ------------------------------------------------------------------ properties

    @property
    def videos(self) -> list[str]:
        return list(self.table.videos)

    @property
    def num_windows(self) -> int:
        return len(self.table)

    def feature_path(self, video: str) -> Path:
        """The first video source's feature file of `video`."""
        meta = self._video_meta(video)
        return Path(meta["feat_root"]) / self.model.pipeline["video_sources"][0] / f"{video}.npz"

    def duration(self, video: str) -> float:
        return float(self._video_meta(video)["duration"])

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
        if self.clip_dir is None:
            raise CheckpointError("a text query needs the CLIP weights: give --clip (clip_dir)")
        if self._clip is None:
            from sadetr.video.clip import load_clip

            self._clip = load_clip(self.clip_dir, device=self.model.device)
        return self._clip.encode_texts([query])[0]["last_hidden_state"]

    # ------------------------------------------------------------------ the two stages

    def retrieve(self, qvec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: (cosines [k], window ids [k]) of the top-k windows by faiss inner product."""
        if self.num_windows == 0:
            raise CorpusIndexError(f"{self.index_dir}: empty library")
        return faiss_search(self.index, qvec, min(k, self.num_windows))

    def _window_features(self, row: int) -> tuple[np.ndarray, float, float]:
        """(model input [W, Dv], window start (s), window end (s)) of window `row`."""
        vid = self.table.video[row]
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
        s, n = self.table.start_clip[row], self.table.n_clips[row]
        return self.model.window_input(feats[s : s + n]), self.table.t0[row], self.table.t1[row]

    def candidates(self, rows: np.ndarray, cosines: np.ndarray, text: np.ndarray) -> Candidates:
        """Stage 2: SA-DETR on the windows `rows` [K] (batched) -> their moments, before fusion."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return Candidates(rows, np.zeros(0), np.zeros((0, 0, 2)), np.zeros((0, 0)))
        inputs = [self._window_features(int(r)) for r in rows]
        moments = self.model.localize(
            [w for w, _, _ in inputs], [a for _, a, _ in inputs], [b for _, _, b in inputs], text
        )
        return Candidates(rows, np.asarray(cosines, np.float64), moments.spans, moments.quality)

    def rank(self, cands: Candidates, alpha: float, nms_iou: float = NMS_IOU) -> list[SearchHit]:
        """Fuse cosines and qualities (module docstring), NMS per video, sort by fused score."""
        fused = fuse(cands.cosines[:, None], cands.quality, alpha)  # (K, Nq)
        per_video: dict[str, list[list[float]]] = {}
        for b, row in enumerate(cands.rows.tolist()):
            ms = per_video.setdefault(self.table.video[row], [])
            for (st, en), f, q in zip(cands.spans[b], fused[b], cands.quality[b]):
                ms.append([float(st), float(en), float(f), float(cands.cosines[b]), float(q)])
        hits = [
            SearchHit(vid, round(m[0], 4), round(m[1], 4), m[2], m[3], m[4])
            for vid, ms in per_video.items()
            for m in temporal_nms(ms, nms_iou)
        ]
        return sorted(hits, key=lambda h: (-h.score, h.video, h.start))

    def localize_rows(
        self, rows: np.ndarray, cosines: np.ndarray, text: np.ndarray, alpha: float, nms_iou: float = NMS_IOU
    ) -> list[SearchHit]:
        """`rank(candidates(...))`: the ranked moments of the windows `rows`."""
        return self.rank(self.candidates(rows, cosines, text), alpha, nms_iou)

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
        cosines, rows = self.retrieve(qvec, k_windows)
        return self.localize_rows(rows, cosines, text, self.alpha if alpha is None else alpha)[:top]

    def search_exhaustive(
        self,
        query: str | None = None,
        *,
        query_feats: np.ndarray | None = None,
        top: int = 10,
        alpha: float | None = None,
    ) -> list[SearchHit]:
        """The reference: SA-DETR on every window of every video, cosines by numpy (no faiss)."""
        text, qvec = self.query_embedding(query, query_feats)
        cosines = self.vectors.astype(np.float64) @ qvec.astype(np.float64)  # [N]
        rows = np.arange(self.num_windows)
        return self.localize_rows(rows, cosines, text, self.alpha if alpha is None else alpha)[:top]

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
        self._video_meta(video)
        text, qvec = self.query_embedding(query, query_feats)
        rows = np.asarray(self._rows[video])
        cosines = self.vectors[rows].astype(np.float64) @ qvec.astype(np.float64)
        return self.localize_rows(rows, cosines, text, self.alpha if alpha is None else alpha)[:top]


def check_k(k: int | None, searcher: CorpusSearcher) -> int:
    """The CLI's K: default min(100, N); an explicit K larger than the index is an error."""
    n = searcher.num_windows
    if k is None:
        return min(100, n)
    if k < 1 or k > n:
        raise DataError(f"must be in [1, {n}] (the index holds {n} windows), got {k}", field="--k-windows")
    return k
