"""Corpus-search benchmark: index latency/memory at growing sizes, and two-stage vs exhaustive search.

- `scale_rows`: random unit vectors (the index does not care what they encode) at N windows; per faiss
  kind: build seconds, serialised index bytes, median single-query top-k latency (one thread).
- `localise_latency`: median seconds of SA-DETR on K windows of the checkpoint's shape (stage 2; does not
  depend on the library size).
- `two_stage_vs_exhaustive`: VCMR recall of top-K retrieval + localisation against localising every
  context of every video, compute per query counted as SA-DETR forwards (distinct contexts; the
  retrieval dot products are N x d multiply-adds, negligible next to one forward pass).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from sadetr.corpus.embed import CorpusModel
from sadetr.corpus.evaluate import run_queries, score
from sadetr.corpus.store import IVFPQ_MIN, build_faiss, faiss_bytes, faiss_search


def _median_seconds(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def scale_rows(
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000),
    dim: int = 64,
    kinds: tuple[str, ...] = ("flat", "hnsw", "ivfpq"),
    k: int = 100,
    queries: int = 100,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (N, kind): build_s, index_bytes, query_ms (median top-k latency, one thread)."""
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        x = rng.normal(size=(n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q = rng.normal(size=(queries, dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        exact = None
        for kind in kinds:
            if kind == "ivfpq" and n < IVFPQ_MIN:
                continue
            t = time.perf_counter()
            index = build_faiss(x, kind)
            build_s = time.perf_counter() - t
            times = []
            for i in range(queries):
                t = time.perf_counter()
                faiss_search(index, q[i], k)
                times.append(time.perf_counter() - t)
            lat = float(np.median(times))
            ids = [faiss_search(index, q[i], k)[1] for i in range(min(queries, 20))]
            if kind == "flat":
                exact = ids
            recall = (
                float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact)]))
                if exact
                else float("nan")
            )
            rows.append(
                {
                    "windows": n,
                    "kind": kind,
                    "build_s": build_s,
                    "index_bytes": faiss_bytes(index),
                    "query_ms": 1000 * lat,
                    f"recall@{k}_vs_flat": recall,
                }
            )
    return rows


def localise_latency(checkpoint: Path, k: int, repeats: int = 5, seed: int = 0) -> float:
    """Median seconds for SA-DETR on K windows of max_v_l clips (random features, one query, one thread)."""
    import torch

    torch.set_num_threads(1)
    model, _ = CorpusModel.load(checkpoint)
    rng = np.random.default_rng(seed)
    width = model.max_v_l or 75
    windows = [rng.normal(size=(width, sum(model.video_dims))).astype(np.float32) for _ in range(k)]
    text = model.text_input(rng.normal(size=(20, model.text_dim)).astype(np.float32))
    model.localize(windows[:2], [0.0, 0.0], [1e9, 1e9], text)  # warm-up
    return _median_seconds(lambda: model.localize(windows, [0.0] * k, [1e9] * k, text), repeats)


def two_stage_vs_exhaustive(
    searcher: Any, gt: list[dict], text_root: Path, ks: tuple[int, ...], alpha: float | None = None
) -> list[dict[str, Any]]:
    """Rows (method, K, SA-DETR forwards per query = distinct contexts, TVR metrics, fraction of
    exhaustive R@1 kept, compute ratio, seconds per query) for exhaustive and two-stage search at each K."""

    alpha = searcher.alpha if alpha is None else alpha
    n = searcher.num_windows
    rows = []
    for method, k in [("exhaustive", n), *[("two-stage", min(k, n)) for k in ks]]:
        t = time.perf_counter()
        runs = run_queries(searcher, gt, text_root, k, svmr=False, exhaustive=method == "exhaustive")
        seconds = (time.perf_counter() - t) / len(gt)
        forwards = float(np.mean([len(r.corpus.videos) for r in runs]))  # distinct contexts per query
        rows.append(
            {
                "method": method,
                "k_windows": k,
                "forwards_per_query": forwards,
                "s_per_query": seconds,
                **score(searcher, runs, alpha),
            }
        )
    base, ex_forwards = rows[0]["VCMR-R@1-IoU=0.5"], rows[0]["forwards_per_query"]
    for r in rows:
        r["R@1_kept"] = r["VCMR-R@1-IoU=0.5"] / base if base > 0 else float("nan")
        r["compute_ratio"] = ex_forwards / r["forwards_per_query"]
    return rows
