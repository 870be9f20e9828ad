"""Building a corpus index: every video of a feature root cut into windows, one L_vtc vector per window.

`build_index` creates an index or adds the videos it does not hold yet (same checkpoint, windowing and
kind only); `remove_videos` drops videos; `set_alpha` records the fusion weight. Each holds the index's
writer lock for its whole read-modify-write and commits a new generation (`store.write_state`), so a
failure leaves the previous index usable and a second writer is refused. Embeddings of a build are
cached per video under `partial/`, keyed by everything that decides them (checkpoint hash, windowing,
the SHA-256 of the video's features), and reused by the next run: an interrupted build resumes where it
stopped, and a cached entry computed from other features is recomputed, never committed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sadetr.core.errors import DataError
from sadetr.corpus.embed import PIPELINE_KEYS, CorpusModel
from sadetr.corpus.manifest import is_number, new_manifest
from sadetr.corpus.store import (
    KINDS,
    CorpusIndexError,
    IndexState,
    WindowTable,
    current_generation,
    features_sha256,
    load_partial,
    partial_dir,
    read_state,
    save_partial,
    write_state,
    writer_lock,
)
from sadetr.data.features import FeatureStore
from sadetr.inference.sliding import window_starts

log = logging.getLogger(__name__)

# Retrieval window in clips (16 s at 2 s clips). Measured on the synthetic val corpus (42 videos, the
# demo model): video retrieval R@1 12 / 15 / 27 / 36 / 41 % with windows of 75 / 30 / 16 / 8 / 4 clips;
# 8 keeps most of the gain at half the index size of 4 (docs/corpus.md).
DEFAULT_WINDOW = 8


def feature_store(pipeline: dict, feat_root: str | Path) -> FeatureStore:
    """Reader of a feature root with the pipeline's sources and normalisation."""
    return FeatureStore(
        feat_root,
        list(pipeline["video_sources"]),
        list(pipeline["video_dims"]),
        pipeline["text_source"],
        int(pipeline["text_dim"]),
        normalize_video=bool(pipeline["normalize_video"]),
        normalize_text=bool(pipeline["normalize_text"]),
    )


def library_videos(pipeline: dict, feat_root: Path) -> list[str]:
    """Video ids with a feature file for every video source under `feat_root` (sorted)."""
    sources = list(pipeline["video_sources"])
    first = feat_root / sources[0]
    vids = sorted(p.stem for p in first.glob("*.npz")) if first.is_dir() else []
    return [v for v in vids if all((feat_root / s / f"{v}.npz").is_file() for s in sources[1:])]


def windowing(window: int | None, stride: int | None) -> tuple[int, int]:
    """(window, stride) of the retrieval windows in clips: default DEFAULT_WINDOW, stride window / 2."""
    window = int(window or DEFAULT_WINDOW)
    stride = int(stride or max(1, window // 2))
    if window < 1 or not 1 <= stride <= window:
        raise CorpusIndexError(
            f"need window >= 1 and 1 <= stride <= window, got window {window}, stride {stride}"
        )
    return window, stride


def check_compatible(
    manifest: dict, sha: str, pipeline: dict, where: Path, fingerprint: str | None = None
) -> None:
    """Refuse a feature pipeline or embeddings other than the index's own (one line naming both). An index
    that records its `embedding_fingerprint` accepts any model with the same one (e.g. the same weights
    exported to a model folder) and refuses every other: its entries would be stale; an older index
    without it accepts only its own checkpoint file (SHA-256)."""
    diff = [k for k in PIPELINE_KEYS if manifest["feature_pipeline"].get(k) != pipeline.get(k)]
    if diff:
        k = diff[0]
        raise CorpusIndexError(
            f"{where}: index built with feature pipeline {k}={manifest['feature_pipeline'].get(k)!r}, "
            f"this checkpoint has {k}={pipeline.get(k)!r}"
        )
    recorded = manifest.get("embedding_fingerprint")
    if recorded is not None and fingerprint is not None:
        if recorded != fingerprint:
            raise CorpusIndexError(
                f"{where}: index entries were embedded by another encoder (embedding fingerprint "
                f"{recorded[:12]}, this model {fingerprint[:12]}): they are stale; build a new index for it"
            )
        return
    if manifest["checkpoint_sha256"] != sha:
        raise CorpusIndexError(
            f"{where}: index built with checkpoint {manifest['checkpoint']} "
            f"(sha256 {manifest['checkpoint_sha256'][:12]}), not this one "
            f"(sha256 {sha[:12]}); build a new index for it"
        )


def build_index(
    checkpoint: Path,
    feat_root: Path,
    out_dir: Path,
    *,
    videos: list[str] | None = None,
    window: int | None = None,
    stride: int | None = None,
    kind: str | None = None,
    device: str = "cpu",
    on_video: Callable[[str], None] | None = None,
) -> Path:
    """Index (or add to the index in `out_dir`) the `videos` of `feat_root` (default: all); returns out_dir.

    `kind`: the faiss index of a new index (default flat); adding to an index keeps its kind, and another
    kind is refused (no silent conversion). `on_video(vid)` is called after each video is embedded
    (progress; tests use it to interrupt). A second writer of `out_dir` is refused (`ConfigError`).
    """
    out_dir, feat_root = Path(out_dir), Path(feat_root)
    if kind is not None and kind not in KINDS:
        raise CorpusIndexError(f"unknown index kind {kind!r} (one of {', '.join(KINDS)})")
    model, sha = CorpusModel.load(checkpoint, device)
    with writer_lock(out_dir, "--out"):
        return _build_locked(model, sha, feat_root, out_dir, videos, window, stride, kind, on_video)


def _build_locked(
    model: CorpusModel,
    sha: str,
    feat_root: Path,
    out_dir: Path,
    videos: list[str] | None,
    window: int | None,
    stride: int | None,
    kind: str | None,
    on_video: Callable[[str], None] | None,
) -> Path:
    pipe = model.pipeline
    existing = read_state(out_dir)[0] if current_generation(out_dir) is not None else None
    if existing is not None:
        check_compatible(existing.manifest, sha, pipe, out_dir, model.fingerprint)
        old_w, old_s, old_kind = (
            existing.manifest["window"],
            existing.manifest["stride"],
            existing.manifest["kind"],
        )
        if (window and window != old_w) or (stride and stride != old_s):
            raise CorpusIndexError(
                f"{out_dir}: index uses window {old_w} / stride {old_s}; cannot add with {window} / {stride}"
            )
        if kind is not None and kind != old_kind:
            raise CorpusIndexError(
                f"{out_dir}: index kind is {old_kind}; cannot add with --kind {kind} (an index is not "
                "converted: build a new one with that kind)"
            )
        window, stride, kind = old_w, old_s, old_kind
    window, stride = windowing(window, stride)
    store = feature_store(pipe, feat_root)  # checks the source names before any folder is listed
    if videos is None:
        videos = library_videos(pipe, feat_root)
        if not videos and existing is None:
            sources = "/".join(pipe["video_sources"])
            raise CorpusIndexError(f"{feat_root}: empty library (no {sources} feature files *.npz)")
    have = set(existing.table.videos) if existing is not None else set()
    todo = [v for v in dict.fromkeys(videos) if v not in have]
    for vid in todo:  # every name proven inside feat_root (no '..', no symlink out) before any work
        store.video_paths(vid)
    cache = partial_dir(out_dir, f"{sha[:16]}-w{window}-s{stride}")
    table = WindowTable()
    parts: list[np.ndarray] = []
    for vid in todo:
        feats = store.video(vid)  # [L, sum D]; FeatureError names a missing/corrupt file
        n = len(feats)
        starts = window_starts(n, window, window - stride)
        key = {
            "checkpoint_sha256": sha,
            "embedding_fingerprint": model.fingerprint,
            "window": window,
            "stride": stride,
            "features_sha256": features_sha256(feats),
        }
        vectors = load_partial(cache, vid, key, len(starts), model.dim)
        if vectors is None:
            vectors = model.embed_windows([feats[s : s + window] for s in starts])
            if not np.isfinite(vectors).all():
                raise CorpusIndexError(
                    f"{model.source}: the embeddings of video {vid!r} are not finite (NaN/Inf weights?); "
                    "nothing was committed"
                )
            save_partial(cache, vid, vectors, key)
        duration = n * model.clip_len
        table.videos[vid] = {"feat_root": str(feat_root.resolve()), "n_clips": n, "duration": duration}
        for s in starts:
            table.append(vid, s, min(window, n - s), model.clip_len, duration)
        parts.append(vectors)
        if on_video is not None:
            on_video(vid)
    dim = model.dim
    new_vectors = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    if existing is not None:
        table = _concat(existing.table, table)
        new_vectors = np.concatenate([existing.vectors, new_vectors])
    if len(table) == 0:
        raise CorpusIndexError(f"{out_dir}: empty library (no video to index)")
    alpha = existing.manifest["alpha"] if existing is not None else None
    manifest = new_manifest(
        model.source, sha, pipe, window, stride, kind or "flat", dim, alpha, model.fingerprint
    )
    write_state(out_dir, IndexState(manifest, new_vectors, table))
    shutil.rmtree(out_dir / "partial", ignore_errors=True)
    log.info("indexed %d new videos (%d windows in total) into %s", len(todo), len(table), out_dir)
    return out_dir


def _concat(a: WindowTable, b: WindowTable) -> WindowTable:
    out = WindowTable(
        a.video + b.video, a.start_clip + b.start_clip, a.n_clips + b.n_clips, a.t0 + b.t0, a.t1 + b.t1
    )
    out.videos = {**a.videos, **b.videos}
    return out


def _existing(index_dir: Path) -> Path:
    """`index_dir` when it holds an index (checked before the lock, which would create the folder)."""
    index_dir = Path(index_dir)
    if current_generation(index_dir) is None:
        raise CorpusIndexError(
            f"{index_dir}: not a corpus index (no CURRENT file; build one with sadetr index)"
        )
    return index_dir


def remove_videos(index_dir: Path, videos: list[str]) -> Path:
    """Drop `videos` (and their windows) from the index; an unknown video id is an error."""
    index_dir = _existing(index_dir)
    with writer_lock(index_dir, "--out"):
        state, _ = read_state(index_dir)
        unknown = [v for v in videos if v not in state.table.videos]
        if unknown:
            raise CorpusIndexError(f"{index_dir}: not in the index: {', '.join(unknown[:10])}")
        drop = set(videos)
        keep = np.array([v not in drop for v in state.table.video], dtype=bool)
        if not keep.any():
            raise CorpusIndexError(f"{index_dir}: removing {len(drop)} videos would leave an empty library")
        write_state(index_dir, IndexState(state.manifest, state.vectors[keep], state.table.select(keep)))
    return index_dir


def set_alpha(index_dir: Path, alpha: float) -> None:
    """Record the fusion weight alpha (chosen on validation data) in the index manifest; the vectors and
    the faiss index are committed as they are (no rebuild: an HNSW build of a large library takes minutes)."""
    if not is_number(alpha) or not np.isfinite(alpha) or alpha < 0:
        raise DataError(f"must be a finite number >= 0, got {alpha!r}", field="alpha")
    index_dir = _existing(index_dir)
    with writer_lock(index_dir, "--index"):
        state, index = read_state(index_dir)
        manifest = {**state.manifest, "alpha": float(alpha)}
        write_state(index_dir, IndexState(manifest, state.vectors, state.table), index)
