"""Validation of a corpus index generation as it is read from disk (nothing of it is trusted).

A generation is checked when it is opened: the manifest's schema (keys, types, ranges), the SQLite
metadata (types, ranges, every window inside its video), the vectors (shape, finiteness, unit norm) and
the faiss index (kind, size, width), all against each other. Any problem is one `CorpusIndexError`
line naming the file and the field, e.g. `.../gen-000003/manifest.json: window: must be an integer
>= 1, got -2`. Keys this version does not know are kept (a newer writer may add some).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from sadetr.core.errors import SadetrError
from sadetr.corpus.embed import PIPELINE_KEYS

FORMAT = "sadetr-corpus-index/1"
KINDS = ("flat", "hnsw", "ivfpq")
NORM_TOLERANCE = 1e-3  # stored vectors are L2-normalised float32: |norm - 1| is ~1e-7 when intact
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CorpusIndexError(SadetrError):
    """Missing, corrupt or mismatching corpus index (names the index folder and what is wrong)."""


def refuse(path: str | Path, field: str, message: str) -> CorpusIndexError:
    """`path: field: message` as one `CorpusIndexError` line."""
    return CorpusIndexError(f"{path}: {field}: {message}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, float | np.floating)) and not isinstance(value, bool)


def check_int(value: Any, path: Path, field: str, low: int = 0) -> int:
    """An integer >= `low` (a bool, a float or a string is refused)."""
    if not is_int(value) or value < low:
        raise refuse(path, field, f"must be an integer >= {low}, got {_shown(value)}")
    return int(value)


def check_float(value: Any, path: Path, field: str, *, positive: bool = False) -> float:
    """A finite number >= 0 (> 0 when `positive`)."""
    if not is_number(value) or not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "> 0" if positive else ">= 0"
        raise refuse(path, field, f"must be a finite number {need}, got {_shown(value)}")
    return float(value)


def _check_str(value: Any, path: Path, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise refuse(path, field, f"must be a non-empty string, got {_shown(value)}")
    return value


def check_pipeline(value: Any, path: Path) -> dict[str, Any]:
    """The feature pipeline the index was built with (compared with the checkpoint's when opened)."""
    if not isinstance(value, dict):
        raise refuse(path, "feature_pipeline", f"must be an object, got {_shown(value)}")
    missing = [k for k in PIPELINE_KEYS if k not in value]
    if missing:
        raise refuse(path, "feature_pipeline", f"missing key(s) {', '.join(missing)}")
    where = "feature_pipeline."
    sources, dims = value["video_sources"], value["video_dims"]
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
        raise refuse(path, where + "video_sources", f"must be a list of names, got {_shown(sources)}")
    if not isinstance(dims, list) or len(dims) != len(sources):
        raise refuse(path, where + "video_dims", f"must be one size per video source, got {_shown(dims)}")
    for i, d in enumerate(dims):
        check_int(d, path, f"{where}video_dims[{i}]", 1)
    _check_str(value["text_source"], path, where + "text_source")
    for key in ("video_dim", "text_dim"):
        check_int(value[key], path, where + key, 1)
    for key in ("max_v_l", "max_q_l"):
        check_int(value[key], path, where + key, 0)
    check_float(value["clip_len"], path, where + "clip_len", positive=True)
    for key in ("normalize_video", "normalize_text", "use_tef"):
        if not isinstance(value[key], bool):
            raise refuse(path, where + key, f"must be true or false, got {_shown(value[key])}")
    return value


def new_manifest(
    checkpoint: str,
    sha256: str,
    pipeline: dict[str, Any],
    window: int,
    stride: int,
    kind: str,
    dim: int,
    alpha: float | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The manifest fields a writer gives (`store.write_state` adds format and counts); `fingerprint`: what
    decided the embeddings (`SADETR.embedding_fingerprint`), so that another encoder's are refused."""
    return {
        "checkpoint": checkpoint,
        "checkpoint_sha256": sha256,
        "embedding_fingerprint": fingerprint,
        "feature_pipeline": pipeline,
        "window": window,
        "stride": stride,
        "kind": kind,
        "dim": dim,
        "alpha": alpha,
    }


def check_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """The manifest of a generation (`path`: its manifest.json), every field this version reads checked."""
    if not isinstance(manifest, dict):
        raise refuse(path, "manifest", f"must be a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise refuse(path, "format", f"not a {FORMAT} manifest (format {_shown(manifest.get('format'))})")
    required = (
        "checkpoint",
        "checkpoint_sha256",
        "feature_pipeline",
        "window",
        "stride",
        "kind",
        "dim",
        "alpha",
        "num_windows",
        "num_videos",
    )
    missing = [k for k in required if k not in manifest]
    if missing:
        raise refuse(path, missing[0], f"missing (the manifest lacks {', '.join(missing)})")
    _check_str(manifest["checkpoint"], path, "checkpoint")
    sha = manifest["checkpoint_sha256"]
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise refuse(path, "checkpoint_sha256", f"must be 64 lowercase hex digits, got {_shown(sha)}")
    fingerprint = manifest.get("embedding_fingerprint")  # absent or null in indexes of sadetr 0.1
    if fingerprint is not None and not (isinstance(fingerprint, str) and _SHA256.fullmatch(fingerprint)):
        raise refuse(path, "embedding_fingerprint", f"must be 64 hex digits, got {_shown(fingerprint)}")
    check_pipeline(manifest["feature_pipeline"], path)
    window = check_int(manifest["window"], path, "window", 1)
    stride = check_int(manifest["stride"], path, "stride", 1)
    if stride > window:
        raise refuse(path, "stride", f"must be <= window ({window}), got {stride}")
    if manifest["kind"] not in KINDS:
        raise refuse(path, "kind", f"must be one of {', '.join(KINDS)}, got {_shown(manifest['kind'])}")
    check_int(manifest["dim"], path, "dim", 1)
    if manifest["alpha"] is not None:
        check_float(manifest["alpha"], path, "alpha")
    check_int(manifest["num_windows"], path, "num_windows", 0)
    check_int(manifest["num_videos"], path, "num_videos", 0)
    return manifest


def check_vectors(vectors: Any, path: Path, rows: int, dim: int) -> np.ndarray:
    """[rows, dim] finite, L2-normalised window embeddings as float32."""
    if not isinstance(vectors, np.ndarray) or not np.issubdtype(vectors.dtype, np.floating):
        kind = vectors.dtype if isinstance(vectors, np.ndarray) else type(vectors).__name__
        raise refuse(path, "vectors", f"must be a float array, got {kind}")
    if vectors.shape != (rows, dim):
        raise refuse(
            path, "vectors", f"shape {list(vectors.shape)}, expected [{rows}, {dim}] (num_windows, dim)"
        )
    vectors = vectors.astype(np.float32, copy=False)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise refuse(path, f"vectors[{bad[0]}]", f"NaN/Inf values in {len(bad)} row(s)")
    off = np.abs(np.sqrt(np.einsum("ij,ij->i", vectors, vectors)) - 1.0) > NORM_TOLERANCE  # [rows]
    if off.any():
        bad = np.flatnonzero(off)
        raise refuse(path, f"vectors[{bad[0]}]", f"not L2-normalised ({len(bad)} row(s))")
    return vectors


def check_videos(rows: list[tuple], path: Path) -> dict[str, dict[str, Any]]:
    """Rows (video, feat_root, n_clips, duration) of the `videos` table -> video -> metadata."""
    videos: dict[str, dict[str, Any]] = {}
    for i, (vid, root, n, dur) in enumerate(rows):
        field = f"videos[{i}]"
        if not isinstance(vid, str) or not vid or vid in videos:
            raise refuse(path, f"{field}.video", f"must be a new non-empty name, got {_shown(vid)}")
        if not isinstance(root, str) or not Path(root).is_absolute():
            raise refuse(path, f"{field}.feat_root", f"must be an absolute folder, got {_shown(root)}")
        videos[vid] = {
            "feat_root": root,
            "n_clips": check_int(n, path, f"{field}.n_clips", 1),
            "duration": check_float(dur, path, f"{field}.duration", positive=True),
        }
    return videos


def check_window(row: tuple, i: int, videos: dict[str, dict[str, Any]], path: Path) -> tuple:
    """A row (video, start_clip, n_clips, t0, t1) of the `windows` table, inside its video."""
    vid, start, n, t0, t1 = row
    field = f"windows[{i}]"
    if vid not in videos:
        raise refuse(path, f"{field}.video", f"{_shown(vid)} is not in the videos table")
    start = check_int(start, path, f"{field}.start_clip", 0)
    n = check_int(n, path, f"{field}.n_clips", 1)
    if start + n > videos[vid]["n_clips"]:
        raise refuse(
            path, f"{field}.n_clips", f"clips {start}..{start + n} past the video's {videos[vid]['n_clips']}"
        )
    t0 = check_float(t0, path, f"{field}.t0")
    t1 = check_float(t1, path, f"{field}.t1")
    if not t0 < t1 <= videos[vid]["duration"] + 1e-6:
        raise refuse(path, f"{field}.t1", f"need t0 < t1 <= duration, got {t0:g}, {t1:g}")
    return vid, start, n, t0, t1


def check_windows(
    rows: list[tuple], videos: dict[str, dict[str, Any]], path: Path
) -> tuple[list[str], list[int], list[int], list[float], list[float]]:
    """Rows (id, video, start_clip, n_clips, t0, t1) of the `windows` table, ids 0..N-1 in order ->
    the columns (video, start_clip, n_clips, t0, t1). Checked column-wise with numpy (100k rows in a
    few tens of ms); a failure is re-checked row by row to name the first bad row and field."""
    if not rows:
        return [], [], [], [], []
    ids, vid, start, n, t0, t1 = (list(c) for c in zip(*rows))
    if _columns_ok(ids, vid, start, n, t0, t1, videos):
        return vid, start, n, [float(x) for x in t0], [float(x) for x in t1]
    for i, (wid, *row) in enumerate(rows):
        if wid != i or not is_int(wid):
            raise refuse(path, f"windows[{i}].id", f"window ids must be 0..N-1 in order, got {_shown(wid)}")
        check_window(tuple(row), i, videos, path)
    raise refuse(path, "windows", "inconsistent rows")  # pragma: no cover - the loop names the bad row


def _columns_ok(
    ids: list, vid: list, start: list, n: list, t0: list, t1: list, videos: dict[str, dict[str, Any]]
) -> bool:
    cols = [np.asarray(c) for c in (ids, start, n, t0, t1)]  # a str or None among them: dtype U / object
    if any(c.dtype.kind != "i" for c in cols[:3]) or any(c.dtype.kind not in "if" for c in cols[3:]):
        return False
    if not all(isinstance(v, str) and v in videos for v in vid):
        return False
    clips = np.array([videos[v]["n_clips"] for v in vid], dtype=np.int64)  # [N]
    duration = np.array([videos[v]["duration"] for v in vid], dtype=np.float64)  # [N]
    i, s, k = (c.astype(np.int64) for c in cols[:3])
    a, b = (c.astype(np.float64) for c in cols[3:])
    return bool(
        (i == np.arange(len(i))).all()
        and (s >= 0).all()
        and (k >= 1).all()
        and (s + k <= clips).all()
        and np.isfinite(a).all()
        and np.isfinite(b).all()
        and (a >= 0).all()
        and (a < b).all()
        and (b <= duration + 1e-6).all()
    )
