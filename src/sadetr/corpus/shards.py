"""Parquet shards of a corpus index, the hand-over to a vector server (Milvus, LanceDB; docs/corpus.md).

    OUT/part-00000.parquet ...   columns id int64, video_id string, t0 float32, t1 float32,
                                 vector fixed_size_list<float32>[d] (L2-normalised: inner product = cosine)
    OUT/_manifest.json           the index manifest (checkpoint, pipeline, windowing) + shard list

One row per window; `id` is the window id of the index generation exported. Shards are written
atomically, each at most `rows_per_shard` rows; shards of an earlier, larger export are removed, so the
folder holds exactly the listed ones. `read_shards` reads the shards `_manifest.json` lists, each name
proven inside the folder (`safe_child`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from sadetr.core.atomic import atomic_path, atomic_write_text
from sadetr.core.errors import DataError
from sadetr.core.paths import ensure_out_dir, read_user_text, safe_child
from sadetr.corpus.store import read_state

SHARD_NAME = re.compile(r"part-\d{5}\.parquet")

SCHEMA_COLUMNS = ("id", "video_id", "t0", "t1", "vector")


def _schema(dim: int):
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.int64()),
            ("video_id", pa.string()),
            ("t0", pa.float32()),
            ("t1", pa.float32()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def export_shards(index_dir: Path, out_dir: Path, rows_per_shard: int = 100_000) -> list[Path]:
    """Write the live generation of `index_dir` as Parquet shards into `out_dir`; returns their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    state, _ = read_state(Path(index_dir))
    vectors, table = state.vectors, state.table
    n, dim = vectors.shape
    schema = _schema(dim)
    out_dir = ensure_out_dir(out_dir, "--shards")
    paths = []
    for i, lo in enumerate(range(0, max(n, 1), rows_per_shard)):
        hi = min(n, lo + rows_per_shard)
        flat = pa.array(np.ascontiguousarray(vectors[lo:hi]).reshape(-1), type=pa.float32())
        batch = pa.table(
            {
                "id": pa.array(np.arange(lo, hi, dtype=np.int64)),
                "video_id": pa.array(table.video[lo:hi], type=pa.string()),
                "t0": pa.array(np.asarray(table.t0[lo:hi], dtype=np.float32)),
                "t1": pa.array(np.asarray(table.t1[lo:hi], dtype=np.float32)),
                "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
            },
            schema=schema,
        )
        path = out_dir / f"part-{i:05d}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(batch, tmp)
        paths.append(path)
    manifest = {**state.manifest, "shards": [p.name for p in paths], "columns": list(SCHEMA_COLUMNS)}
    atomic_write_text(out_dir / "_manifest.json", json.dumps(manifest, indent=1))
    for old in out_dir.glob("part-*.parquet"):  # an earlier export's extra shards
        if SHARD_NAME.fullmatch(old.name) and old not in paths:
            old.unlink(missing_ok=True)
    return paths


def read_shards(out_dir: Path) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(ids [N], video ids, t0 [N], t1 [N], vectors [N, d]) of the shards listed in `out_dir`'s
    `_manifest.json`, in id order."""
    import pyarrow.parquet as pq

    where = Path(out_dir) / "_manifest.json"
    try:
        names = json.loads(read_user_text(where, "shard manifest")).get("shards")
    except (ValueError, AttributeError, RecursionError):
        raise DataError("not a shard manifest (JSON object with a 'shards' list)", path=where) from None
    if not isinstance(names, list) or not names:
        raise DataError(f"must be a non-empty list of shard names, got {names!r}", path=where, field="shards")
    for name in names:
        if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
            raise DataError(f"not a shard name part-NNNNN.parquet: {name!r}", path=where, field="shards")
    tables = [pq.read_table(safe_child(out_dir, n, field="shards", path=where)) for n in names]
    ids = np.concatenate([t.column("id").to_numpy() for t in tables])
    vids = [v for t in tables for v in t.column("video_id").to_pylist()]
    t0 = np.concatenate([t.column("t0").to_numpy() for t in tables])
    t1 = np.concatenate([t.column("t1").to_numpy() for t in tables])
    vecs = np.concatenate([np.stack(t.column("vector").to_numpy(zero_copy_only=False)) for t in tables])
    order = np.argsort(ids)
    return ids[order], [vids[i] for i in order], t0[order], t1[order], vecs[order].astype(np.float32)
