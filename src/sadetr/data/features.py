"""Feature store: pre-extracted clip and token features in the Moment-DETR / QD-DETR / lighthouse layout.

    <feat_root>/<video_source>/{vid}.npz      key "features",          shape [L, D_source]
    <feat_root>/<text_source>/qid{qid}.npz    key "last_hidden_state", shape [L_t, D_text]

Video sources are L2-normalised per clip and per source, truncated to the shortest source and
concatenated along D; `fit_length` then truncates or resamples to `max_v_l` and `add_tef` appends
the temporal endpoint feature. Any unreadable, missing, wrongly shaped or non-finite file is a
`FeatureError` naming the file. A `vid` or `qid` whose path would lead outside its source folder
(`../x`, an absolute path, a symlink pointing out) is refused before anything is read, and so is a
source name that would lead outside the feature root (a source folder may itself be a symlink).
"""

from __future__ import annotations

import itertools
import zipfile
from pathlib import Path

import numpy as np

from sadetr.core.errors import FeatureError
from sadetr.core.paths import check_relative, safe_child

VIDEO_KEY = "features"
TEXT_KEY = "last_hidden_state"


def load_feature_file(path: Path, key: str, dim: int) -> np.ndarray:
    """Load `key` of one `.npz` as float32 [L, dim]; every failure is a FeatureError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if key not in npz.files:
                raise FeatureError(f"missing array {key!r} (has {npz.files})", path=path, field=key)
            arr = npz[key]
    except FeatureError:
        raise
    except FileNotFoundError:
        raise FeatureError("feature file not found", path=path) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        if not zipfile.is_zipfile(path):
            raise FeatureError("unreadable feature file (not an .npz archive)", path=path) from None
        raise FeatureError(f"unreadable feature file ({type(err).__name__}: {err})", path=path) from None
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise FeatureError(f"expected shape [L>0, {dim}], got {list(arr.shape)}", path=path, field=key)
    if arr.shape[1] != dim:
        raise FeatureError(f"expected {dim} dims, got {arr.shape[1]}", path=path, field=key)
    if not np.issubdtype(arr.dtype, np.number):
        raise FeatureError(f"non-numeric dtype {arr.dtype}", path=path, field=key)
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise FeatureError(f"NaN/Inf values in {bad} row(s)", path=path, field=key)
    return arr


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by their L2 norm (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def add_tef(x: np.ndarray) -> np.ndarray:
    """Append the temporal endpoint feature [i/L, (i+1)/L] of each clip i: [L, D] -> [L, D + 2]."""
    n = x.shape[0]
    start = np.arange(n, dtype=np.float32) / n
    tef = np.stack([start, start + 1.0 / n], axis=1)  # [L, 2]
    return np.concatenate([x, tef.astype(x.dtype)], axis=1)


def resample_bins(n_in: int, n_out: int) -> np.ndarray:
    """Edges of `n_out` contiguous, near-equal bins over `n_in` clips (n_in >= n_out): [n_out + 1] ints.

    >>> resample_bins(5, 2).tolist()
    [0, 2, 5]
    """
    return np.floor(np.arange(n_out + 1) * n_in / n_out).astype(np.int64)


def mean_pool(x: np.ndarray, n_out: int) -> np.ndarray:
    """Uniformly resample [L, D] to [n_out, D] by averaging each bin of `resample_bins`."""
    edges = resample_bins(x.shape[0], n_out)
    csum = np.concatenate([np.zeros((1, x.shape[1]), np.float64), np.cumsum(x, axis=0, dtype=np.float64)])
    sums = csum[edges[1:]] - csum[edges[:-1]]  # [n_out, D]
    return (sums / np.diff(edges)[:, None]).astype(x.dtype)


class FeatureStore:
    """Reads (and optionally caches) the video and text features of one feature root."""

    def __init__(
        self,
        feat_root: str | Path,
        video_sources: list[str],
        video_dims: list[int],
        text_source: str,
        text_dim: int,
        normalize_video: bool = True,
        normalize_text: bool = True,
        cache: bool = False,
    ) -> None:
        if len(video_sources) != len(video_dims) or not video_sources:
            raise FeatureError(
                f"need one expected dim per video source, got sources {video_sources} and dims {video_dims}",
                field="video_dims",
            )
        self.root = Path(feat_root)
        for source in video_sources:  # folder names from a config or checkpoint: no '..', not absolute
            check_relative(source, field="video_sources", root=self.root)
        check_relative(text_source, field="text_source", root=self.root)
        self.video_sources = list(video_sources)
        self.video_dims = list(video_dims)
        self.text_source = text_source
        self.text_dim = text_dim
        self.normalize_video = normalize_video
        self.normalize_text = normalize_text
        self._cache: dict[tuple[str, str], np.ndarray] | None = {} if cache else None
        offsets = np.cumsum([0, *self.video_dims])
        self.source_slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(offsets)]

    def video_paths(self, vid: str, origin: tuple[Path, int] | None = None) -> list[Path]:
        """`<root>/<source>/{vid}.npz` per source; a `vid` leading outside its source folder is a
        `DataError` naming `origin` (annotation file, line) and the field."""
        path, line = origin or (None, None)
        return [
            safe_child(self.root / src, f"{vid}.npz", field="vid", path=path, line=line)
            for src in self.video_sources
        ]

    def text_path(self, qid: int | str, origin: tuple[Path, int] | None = None) -> Path:
        """`<root>/<text_source>/qid{qid}.npz`, proven to stay inside that folder (see `video_paths`)."""
        path, line = origin or (None, None)
        return safe_child(self.root / self.text_source, f"qid{qid}.npz", field="qid", path=path, line=line)

    def video(self, vid: str) -> np.ndarray:
        """[L, sum(video_dims)] float32: sources normalised, truncated to the shortest, concatenated."""
        key = ("v", vid)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        parts = [load_feature_file(p, VIDEO_KEY, d) for p, d in zip(self.video_paths(vid), self.video_dims)]
        n = min(len(p) for p in parts)
        parts = [l2_normalize(p[:n]) if self.normalize_video else p[:n] for p in parts]
        feat = np.concatenate(parts, axis=1)  # [L, sum D]
        if self._cache is not None:
            self._cache[key] = feat
        return feat

    def text(self, qid: int | str) -> np.ndarray:
        """[L_t, text_dim] float32, every token L2-normalised if configured."""
        key = ("t", str(qid))
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        feat = load_feature_file(self.text_path(qid), TEXT_KEY, self.text_dim)
        if self.normalize_text:
            feat = l2_normalize(feat)
        if self._cache is not None:
            self._cache[key] = feat
        return feat

    def fit_length(self, feat: np.ndarray, max_len: int, mode: str) -> np.ndarray:
        """Truncate ([:max_len]) or mean-pool to `max_len` clips; no-op when short enough or max_len <= 0.

        After pooling, each source is re-normalised (when normalisation is on).
        """
        if max_len <= 0 or feat.shape[0] <= max_len:
            return feat
        if mode == "truncate":
            return feat[:max_len]
        if mode != "resample":
            raise FeatureError(f"unknown mode {mode!r} (truncate | resample)", field="long_video")
        pooled = mean_pool(feat, max_len)  # [max_len, D]
        if self.normalize_video:
            pooled = np.concatenate([l2_normalize(pooled[:, s]) for s in self.source_slices], axis=1)
        return pooled
