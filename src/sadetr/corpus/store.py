"""On-disk corpus index: generations of (manifest, vectors, SQLite metadata, faiss index), atomic switch.

    INDEX_DIR/CURRENT                  name of the live generation (written atomically, last)
    INDEX_DIR/gen-000003/manifest.json checkpoint path + SHA-256, feature pipeline, window/stride, kind, dim
    INDEX_DIR/gen-000003/vectors.npy   [N, d] float32, L2-normalised window embeddings, row = window id
    INDEX_DIR/gen-000003/meta.sqlite   videos(video, feat_root, n_clips, duration), windows(id, video, ...)
    INDEX_DIR/gen-000003/index.faiss   faiss index over vectors.npy (inner product; flat | hnsw | ivfpq)
    INDEX_DIR/partial/<key>/<vid>.npy  embeddings of an unfinished build (resume), removed on commit

A new state is written into a fresh generation folder and becomes live only when CURRENT names it, so a
build that fails or is killed leaves the previous index as it was. The vectors are the source of truth;
the faiss index is rebuilt from them at every commit that changes them (adding or removing videos never
edits it in place); a commit of the manifest alone (`set_alpha`) writes the live faiss index unchanged.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sadetr.atomic import atomic_path, atomic_write_text
from sadetr.errors import SadetrError

FORMAT = "sadetr-corpus-index/1"
KINDS = ("flat", "hnsw", "ivfpq")
IVFPQ_MIN = 10_000  # windows needed to train a product quantiser with 256 centroids per sub-space


class CorpusIndexError(SadetrError):
    """Missing, corrupt or mismatching corpus index (names the index folder and what is wrong)."""


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


# ---------------------------------------------------------------------------------- generations


def current_generation(index_dir: Path) -> Path | None:
    """The live generation folder, or None when `index_dir` holds no index yet."""
    pointer = index_dir / "CURRENT"
    if not pointer.is_file():
        return None
    gen = index_dir / pointer.read_text(encoding="utf-8").strip()
    if not gen.is_dir():
        raise CorpusIndexError(f"{index_dir}: CURRENT names {gen.name}, which does not exist (corrupt index)")
    return gen


def write_state(index_dir: Path, state: IndexState, index: Any = None) -> Path:
    """Write `state` as a new generation, make it live (CURRENT), delete older ones; returns its folder.
    `index`: the faiss index of exactly `state.vectors` when only the manifest changed; None builds one."""
    faiss = _faiss()

    index_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[4:]) for p in index_dir.glob("gen-*") if p.name[4:].isdigit()]
    gen = index_dir / f"gen-{max(numbers, default=0) + 1:06d}"
    staging = index_dir / f".{gen.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        np.save(staging / "vectors.npy", np.ascontiguousarray(state.vectors, dtype=np.float32))
        _write_sqlite(staging / "meta.sqlite", state.table)
        if index is None:
            index = build_faiss(state.vectors, state.manifest["kind"])
        faiss.write_index(index, str(staging / "index.faiss"))
        manifest = {
            **state.manifest,
            "format": FORMAT,
            "num_windows": len(state.table),
            "num_videos": len(state.table.videos),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        staging.rename(gen)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_text(index_dir / "CURRENT", gen.name + "\n")
    for old in index_dir.glob("gen-*"):
        if old != gen:
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
    """(state, faiss index) of the live generation; any problem is one `CorpusIndexError` line."""
    faiss = _faiss()

    gen = current_generation(index_dir)
    if gen is None:
        raise CorpusIndexError(
            f"{index_dir}: not a corpus index (no CURRENT file; build one with sadetr index)"
        )
    try:
        manifest = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorpusIndexError(f"{gen / 'manifest.json'}: unreadable ({type(err).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorpusIndexError(f"{gen / 'manifest.json'}: not a {FORMAT} manifest")
    try:
        vectors = np.load(gen / "vectors.npy", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise CorpusIndexError(f"{gen / 'vectors.npy'}: unreadable ({type(err).__name__})") from None
    try:
        table = _read_sqlite(gen / "meta.sqlite")
    except sqlite3.Error as err:
        raise CorpusIndexError(f"{gen / 'meta.sqlite'}: unreadable metadata ({err})") from None
    try:
        index = faiss.read_index(str(gen / "index.faiss"))
    except RuntimeError:
        raise CorpusIndexError(f"{gen / 'index.faiss'}: corrupt faiss index file") from None
    n = manifest.get("num_windows")
    if not (
        vectors.ndim == 2 and len(vectors) == len(table) == index.ntotal == n and index.d == vectors.shape[1]
    ):
        raise CorpusIndexError(
            f"{gen}: inconsistent index (manifest {n}, vectors {list(vectors.shape)}, metadata {len(table)}, "
            f"faiss {index.ntotal}x{index.d} windows)"
        )
    return IndexState(manifest, vectors.astype(np.float32, copy=False), table), index


def _read_sqlite(path: Path) -> WindowTable:
    if not path.is_file():
        raise sqlite3.DatabaseError("file missing")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        table = WindowTable()
        for vid, start, n, t0, t1 in con.execute(
            "SELECT video, start_clip, n_clips, t0, t1 FROM windows ORDER BY id"
        ):
            table.video.append(vid)
            table.start_clip.append(int(start))
            table.n_clips.append(int(n))
            table.t0.append(float(t0))
            table.t1.append(float(t1))
        for vid, root, n, dur in con.execute("SELECT video, feat_root, n_clips, duration FROM videos"):
            table.videos[vid] = {"feat_root": root, "n_clips": int(n), "duration": float(dur)}
    finally:
        con.close()
    return table


# ---------------------------------------------------------------------------------- resume cache


def partial_dir(index_dir: Path, key: str) -> Path:
    """Folder of the per-video embeddings of an unfinished build with this key (checkpoint + windows)."""
    return index_dir / "partial" / key


def save_partial(folder: Path, video: str, vectors: np.ndarray) -> None:
    """Store one video's window embeddings [n_w, d] atomically (resume point of an interrupted build)."""
    with atomic_path(folder / f"{video}.npy") as tmp, tmp.open("wb") as fh:
        np.save(fh, vectors.astype(np.float32))


def load_partial(folder: Path, video: str, n_windows: int) -> np.ndarray | None:
    """The stored embeddings of `video` if present and of the expected row count, else None."""
    path = folder / f"{video}.npy"
    if not path.is_file():
        return None
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return vectors if vectors.ndim == 2 and len(vectors) == n_windows else None
