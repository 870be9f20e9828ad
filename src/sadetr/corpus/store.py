"""On-disk corpus index: generations of (manifest, vectors, SQLite metadata, faiss index), atomic switch.

    INDEX_DIR/CURRENT                  name of the live generation (written atomically, last)
    INDEX_DIR/gen-000003/manifest.json checkpoint path + SHA-256, feature pipeline, window/stride, kind, dim
    INDEX_DIR/gen-000003/vectors.npy   [N, d] float32, L2-normalised window embeddings, row = window id
    INDEX_DIR/gen-000003/meta.sqlite   videos(video, feat_root, n_clips, duration), windows(id, video, ...)
    INDEX_DIR/gen-000003/index.faiss   faiss index over vectors.npy (inner product; flat | hnsw | ivfpq)
    INDEX_DIR/partial/<key>/<vid>.npz  embeddings of an unfinished build (resume), removed on commit
    INDEX_DIR/.sadetr.lock             the writers' lock (one writer at a time)

A new state is written into a fresh generation folder and becomes live only when CURRENT names it, so a
build that fails or is killed leaves the previous index as it was. The vectors are the source of truth;
the faiss index is rebuilt from them at every commit that changes them (adding or removing videos never
edits it in place); a commit of the manifest alone (`set_alpha`) writes the live faiss index unchanged.

Concurrency: writers hold `writer_lock` for their whole read-modify-write (a second writer is refused in
one line); readers take no lock. A generation's files never change once its folder is renamed into
place, so a reader that has read all four has a consistent snapshot; a reader that loses a race with a
commit (the generation it was reading is deleted) sees CURRENT name another one and reads that instead.
Every generation is validated when read (`corpus/manifest.py`); nothing it names is followed outside
the index folder (`safe_child`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sadetr.core.atomic import atomic_path, atomic_write_text, library_write_error
from sadetr.core.errors import OutputError, SadetrError
from sadetr.core.paths import safe_child
from sadetr.corpus.manifest import (
    FORMAT,
    KINDS,
    CorpusIndexError,
    check_manifest,
    check_vectors,
    check_videos,
    check_windows,
    refuse,
)
from sadetr.engine.rundir import RunDirLock

__all__ = ["FORMAT", "KINDS", "CorpusIndexError"]

IVFPQ_MIN = 10_000  # windows needed to train a product quantiser with 256 centroids per sub-space
GENERATION = re.compile(r"gen-(\d{6,})")
READ_ATTEMPTS = 20  # a reader retries while commits replace the generation under it
_FILES = ("manifest.json", "vectors.npy", "meta.sqlite", "index.faiss")

log = logging.getLogger(__name__)


@dataclass
class WindowTable:
    """Metadata of N windows (row i = window id i) and of the videos they come from."""

    video: list[str] = field(default_factory=list)  # [N]
    start_clip: list[int] = field(default_factory=list)  # [N]
    n_clips: list[int] = field(default_factory=list)  # [N]
    t0: list[float] = field(default_factory=list)  # [N] seconds
    t1: list[float] = field(default_factory=list)  # [N] seconds
    videos: dict[str, dict[str, Any]] = field(default_factory=dict)  # video -> feat_root, n_clips, duration

    def __len__(self) -> int:
        return len(self.video)

    def append(self, video: str, start_clip: int, n_clips: int, clip_len: float, duration: float) -> None:
        self.video.append(video)
        self.start_clip.append(start_clip)
        self.n_clips.append(n_clips)
        self.t0.append(start_clip * clip_len)
        self.t1.append(min((start_clip + n_clips) * clip_len, duration))

    def select(self, keep: np.ndarray) -> WindowTable:
        """The rows where `keep` [N] bool is True (renumbered 0..), with only the videos they use."""
        rows = np.flatnonzero(keep).tolist()
        out = WindowTable(
            [self.video[i] for i in rows],
            [self.start_clip[i] for i in rows],
            [self.n_clips[i] for i in rows],
            [self.t0[i] for i in rows],
            [self.t1[i] for i in rows],
        )
        out.videos = {v: self.videos[v] for v in dict.fromkeys(out.video)}
        return out


@dataclass
class IndexState:
    """Everything one generation holds (the faiss index is derived from `vectors`)."""

    manifest: dict[str, Any]
    vectors: np.ndarray  # [N, d] float32
    table: WindowTable


# ---------------------------------------------------------------------------------- faiss


def _faiss() -> Any:
    """The faiss module, without its loader's INFO lines about CPU instruction sets."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def build_faiss(vectors: np.ndarray, kind: str) -> Any:
    """An inner-product faiss index over `vectors` [N, d] (L2-normalised, so scores are cosines)."""
    faiss = _faiss()

    n, d = vectors.shape
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    elif kind == "ivfpq":
        if n < IVFPQ_MIN:
            raise CorpusIndexError(f"kind ivfpq needs >= {IVFPQ_MIN} windows to train, got {n}; use flat")
        m = next(m for m in (16, 8, 4, 2, 1) if d % m == 0)
        nlist = int(min(4 * np.sqrt(n), n // 39))
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.nprobe = min(nlist, 16)
    else:
        raise CorpusIndexError(f"unknown index kind {kind!r} (one of {', '.join(KINDS)})")
    if n:
        index.add(x)
    return index


def faiss_search(index: Any, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [k'], ids [k']) of the top-k inner products of `query` [d]; drops faiss' -1 fillers."""
    faiss = _faiss()

    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(64, k)
    scores, ids = index.search(np.ascontiguousarray(query[None], dtype=np.float32), k)
    keep = ids[0] >= 0
    return scores[0][keep], ids[0][keep]


def faiss_bytes(index: Any) -> int:
    """Size of the serialised faiss index (its memory footprint, to within a few header bytes)."""
    faiss = _faiss()

    return int(faiss.serialize_index(index).nbytes)


def check_faiss(index: Any, kind: str, path: Path, rows: int, dim: int) -> None:
    """The faiss index read from `path` is of the manifest's `kind`, inner product, [rows, dim]."""
    faiss = _faiss()

    types = {"flat": faiss.IndexFlat, "hnsw": faiss.IndexHNSW, "ivfpq": faiss.IndexIVFPQ}
    if not isinstance(index, types[kind]):
        raise refuse(path, "index.faiss", f"a {type(index).__name__}, but the manifest says kind {kind}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise refuse(path, "index.faiss", "not an inner-product index")
    if index.ntotal != rows or index.d != dim:
        raise refuse(path, "index.faiss", f"{index.ntotal}x{index.d} windows, the manifest says {rows}x{dim}")


# ---------------------------------------------------------------------------------- the writers' lock


def writer_lock(index_dir: Path, key: str = "--out") -> Any:
    """The exclusive lock of the index's writers (non-blocking: a second writer gets a one-line
    `ConfigError` naming `key`). An OS file lock: a killed writer never leaves it held. Creates the folder."""

    return RunDirLock(index_dir, holder="writer (sadetr index or evaluate-corpus --save-alpha)", key=key)


# ---------------------------------------------------------------------------------- generations


def _pointer(index_dir: Path) -> str | None:
    """The generation name CURRENT holds (checked), or None when there is no CURRENT file."""
    path = index_dir / "CURRENT"
    if not path.exists() and not path.is_symlink():
        return None
    path = safe_child(index_dir, "CURRENT", field="CURRENT")  # a symlink out of the folder is refused
    try:
        with path.open("rb") as fh:
            raw = fh.read(64)
    except OSError as err:
        raise refuse(path, "CURRENT", f"unreadable ({err.strerror or err})") from None
    name = raw.decode("utf-8", "replace").strip()
    if not GENERATION.fullmatch(name):
        raise refuse(path, "CURRENT", f"must name a generation folder gen-NNNNNN, got {name[:40]!r}")
    return name


def current_generation(index_dir: Path) -> Path | None:
    """The live generation folder (proven inside `index_dir`), or None when it holds no index yet."""
    index_dir = Path(index_dir)
    for _ in range(READ_ATTEMPTS):
        name = _pointer(index_dir)
        if name is None:
            return None
        gen = safe_child(index_dir, name, field="CURRENT", path=index_dir / "CURRENT")
        if gen.is_dir():
            return gen
        if _pointer(index_dir) == name:  # not a commit replacing it under us: really missing
            break
    raise CorpusIndexError(f"{index_dir}: CURRENT names {name}, which does not exist (corrupt index)")


def _clean_staging(index_dir: Path) -> None:
    """Remove the staging folders of writers that were killed (called under the writers' lock)."""
    for old in index_dir.glob(".gen-*.staging"):
        shutil.rmtree(old, ignore_errors=True)


def _write_error(gen: Path, err: BaseException) -> OutputError:
    """One line for a failed generation write: an OSError (ENOSPC from Python's writes) or SQLite's
    "database or disk is full"."""
    no_space = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    no_space |= isinstance(err, sqlite3.Error) and "disk is full" in str(err)
    why = str(getattr(err, "strerror", None) or err).splitlines()[0]
    why = "no space left on device" if no_space else why
    return OutputError(f"cannot write {gen}: {why}; the index is unchanged (its live generation is intact)")


def _save_npy(path: Path, array: np.ndarray) -> None:
    """`np.save` through a Python file, so that a failed write is an OSError with its errno (np.save's
    own C writes report a full disk as "N requested and M written", without one)."""
    array = np.ascontiguousarray(array)
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(array))
        fh.write(array.reshape(-1).view(np.uint8).data)  # [N * d * 4] bytes, no copy


def write_state(index_dir: Path, state: IndexState, index: Any = None) -> Path:
    """Write `state` as a new generation, make it live (CURRENT), delete older ones; returns its folder.
    `index`: the faiss index of exactly `state.vectors` when only the manifest changed; None builds one.
    Callers hold `writer_lock`. The vectors are validated first (finite, unit norm): nothing invalid is
    committed. A failed write (full disk) is an `OutputError` and leaves the live generation as it was."""
    faiss = _faiss()

    index_dir = Path(index_dir)
    manifest = {
        **state.manifest,
        "format": FORMAT,
        "num_windows": len(state.table),
        "num_videos": len(state.table.videos),
    }
    check_manifest(manifest, index_dir / "manifest.json")  # never commit what a reader would refuse
    vectors = check_vectors(state.vectors, index_dir / "vectors.npy", len(state.table), manifest["dim"])
    index_dir.mkdir(parents=True, exist_ok=True)
    _clean_staging(index_dir)
    numbers = [int(m[1]) for p in index_dir.glob("gen-*") if (m := GENERATION.fullmatch(p.name))]
    gen = index_dir / f"gen-{max(numbers, default=0) + 1:06d}"
    staging = index_dir / f".{gen.name}.staging"
    try:
        staging.mkdir()
        _save_npy(staging / "vectors.npy", vectors.astype(np.float32, copy=False))
        _write_sqlite(staging / "meta.sqlite", state.table)
        if index is None:
            index = build_faiss(vectors, state.manifest["kind"])
        try:
            faiss.write_index(index, str(staging / "index.faiss"))
        except RuntimeError as err:  # faiss reports a failed fwrite (full disk) as a RuntimeError
            raise library_write_error(err, staging) from None
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        staging.rename(gen)
    except (OSError, sqlite3.Error) as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise _write_error(gen, err) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        atomic_write_text(index_dir / "CURRENT", gen.name + "\n")
    except OutputError:
        shutil.rmtree(gen, ignore_errors=True)
        raise
    for old in index_dir.glob("gen-*"):
        if old != gen and GENERATION.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)
    return gen


def _write_sqlite(path: Path, table: WindowTable) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute(
            "CREATE TABLE videos (video TEXT PRIMARY KEY, feat_root TEXT, n_clips INT, duration REAL)"
        )
        con.execute(
            "CREATE TABLE windows (id INTEGER PRIMARY KEY, video TEXT, start_clip INT, n_clips INT, "
            "t0 REAL, t1 REAL)"
        )
        con.executemany(
            "INSERT INTO videos VALUES (?, ?, ?, ?)",
            [(v, m["feat_root"], m["n_clips"], m["duration"]) for v, m in table.videos.items()],
        )
        con.executemany(
            "INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?)",
            zip(range(len(table)), table.video, table.start_clip, table.n_clips, table.t0, table.t1),
        )
        con.commit()
    finally:
        con.close()


def read_state(index_dir: Path) -> tuple[IndexState, Any]:
    """(state, faiss index) of the live generation, validated; any problem is one `SadetrError` line.
    A generation deleted by a concurrent commit while it was being read is retried with the new one."""
    index_dir = Path(index_dir)
    for attempt in range(READ_ATTEMPTS):
        gen = current_generation(index_dir)
        if gen is None:
            raise CorpusIndexError(
                f"{index_dir}: not a corpus index (no CURRENT file; build one with sadetr index)"
            )
        try:
            return _read_generation(gen)
        except SadetrError:
            if attempt + 1 < READ_ATTEMPTS and _pointer(index_dir) != gen.name:
                continue  # a commit replaced the generation while we read it
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _read_generation(gen: Path) -> tuple[IndexState, Any]:
    faiss = _faiss()

    mpath, vpath, spath, fpath = (safe_child(gen, name, field=name) for name in _FILES)
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: "[[[[..." nested too deep
        raise refuse(mpath, "manifest.json", f"unreadable ({type(err).__name__})") from None
    manifest = check_manifest(raw, mpath)
    rows, dim = manifest["num_windows"], manifest["dim"]
    try:
        mapped = np.load(vpath, mmap_mode="r", allow_pickle=False)  # the header first: no huge allocation
    except (OSError, ValueError, EOFError) as err:
        raise refuse(vpath, "vectors.npy", f"unreadable ({type(err).__name__})") from None
    if not isinstance(mapped, np.ndarray) or mapped.shape != (rows, dim):
        shape = list(getattr(mapped, "shape", []))
        raise refuse(vpath, "vectors", f"shape {shape}, expected [{rows}, {dim}] (num_windows, dim)")
    vectors = check_vectors(np.array(mapped), vpath, rows, dim)
    del mapped
    table = _read_sqlite(spath)
    if len(table) != rows or len(table.videos) != manifest["num_videos"]:
        raise refuse(
            spath,
            "windows",
            f"{len(table)} windows of {len(table.videos)} videos, the manifest says {rows} of "
            f"{manifest['num_videos']}",
        )
    try:
        index = faiss.read_index(str(fpath))
    except RuntimeError:
        raise refuse(fpath, "index.faiss", "corrupt faiss index file") from None
    check_faiss(index, manifest["kind"], fpath, rows, dim)
    return IndexState(manifest, vectors, table), index


def _read_sqlite(path: Path) -> WindowTable:
    """The metadata table, validated row by row (SQLite keeps whatever type a hand edit stored)."""
    if not path.is_file():
        raise refuse(path, "meta.sqlite", "missing")
    uri = path.absolute().as_uri() + "?mode=ro&immutable=1"  # escaped: '#', '?', '%' in folder names
    try:
        con = sqlite3.connect(uri, uri=True)
        try:
            videos = con.execute("SELECT video, feat_root, n_clips, duration FROM videos").fetchall()
            windows = con.execute("SELECT id, video, start_clip, n_clips, t0, t1 FROM windows ORDER BY id")
            rows = windows.fetchall()
        finally:
            con.close()
    except sqlite3.Error as err:
        raise refuse(path, "meta.sqlite", f"unreadable metadata ({err})") from None
    table = WindowTable()
    table.videos = check_videos(videos, path)
    table.video, table.start_clip, table.n_clips, table.t0, table.t1 = check_windows(rows, table.videos, path)
    return table


# ---------------------------------------------------------------------------------- resume cache


def partial_dir(index_dir: Path, key: str) -> Path:
    """Folder of the per-video embeddings of an unfinished build with this key (checkpoint + windows)."""
    return Path(index_dir) / "partial" / key


def features_sha256(feats: np.ndarray) -> str:
    """SHA-256 of a video's model input features [L, D] (shape, dtype and values)."""
    arr = np.ascontiguousarray(feats)
    digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def _partial_path(folder: Path, video: str) -> Path:
    return safe_child(folder, f"{video}.npz", field="vid")


def save_partial(folder: Path, video: str, vectors: np.ndarray, key: dict[str, Any]) -> None:
    """Store one video's window embeddings [n_w, d] atomically, with the `key` that decided them
    (checkpoint hash, windowing, the features' content hash): the resume point of an interrupted build."""
    with atomic_path(_partial_path(folder, video)) as tmp, tmp.open("wb") as fh:
        np.savez(fh, vectors=vectors.astype(np.float32), key=np.array(json.dumps(key, sort_keys=True)))


def load_partial(
    folder: Path, video: str, key: dict[str, Any], n_windows: int, dim: int
) -> np.ndarray | None:
    """The stored embeddings of `video` if they were computed with exactly `key` and are valid
    ([n_windows, dim], finite, unit norm); else None (the caller recomputes them)."""
    path = _partial_path(folder, video)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored_key, vectors = str(npz["key"]), npz["vectors"]
    except (OSError, ValueError, EOFError, KeyError) as err:
        log.warning("%s: unreadable resume entry (%s); recomputing it", path, type(err).__name__)
        return None
    if stored_key != json.dumps(key, sort_keys=True):
        log.info("%s: computed from other features, checkpoint or windowing; recomputing it", path)
        return None
    try:
        return check_vectors(vectors, path, n_windows, dim)
    except CorpusIndexError as err:
        log.warning("invalid resume entry (%s); recomputing it", err)
        return None
