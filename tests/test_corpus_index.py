"""Corpus index (`sadetr.corpus.index`, `.store`): exact search, window embeddings, add/remove/resume,
atomic generations and the refusal of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sadetr.core.errors import FeatureError
from sadetr.corpus import CorpusSearcher, build_index, remove_videos
from sadetr.corpus.store import CorpusIndexError, build_faiss, faiss_search, read_state

W, S = 20, 10  # small windows: a 75-clip synthetic video gives 7 overlapping windows
PIPELINE = {
    "video_sources": ["clip_features"],
    "video_dims": [512],
    "text_source": "clip_text_features",
    "video_dim": 514,
    "text_dim": 512,
    "clip_len": 2.0,
    "normalize_video": True,
    "normalize_text": True,
    "use_tef": True,
    "max_v_l": 75,
    "max_q_l": 32,
}


def toy_manifest(kind: str = "flat", dim: int = 16, alpha: float | None = None) -> dict:
    """A valid manifest for hand-made states (no checkpoint behind it)."""
    from sadetr.corpus.manifest import new_manifest

    return new_manifest("/m/best.ckpt", "0" * 64, dict(PIPELINE), 8, 4, kind, dim, alpha)


def _val_videos(data: dict) -> list[str]:
    return sorted({json.loads(x)["vid"] for x in data["val"].read_text().splitlines()})


def _by_video(index_dir: Path) -> dict[tuple[str, int], np.ndarray]:
    """(video, first clip) -> vector: the index content independent of row order."""
    state, _ = read_state(index_dir)
    t = state.table
    return {(v, s): state.vectors[i] for i, (v, s) in enumerate(zip(t.video, t.start_clip))}


def _same(a: Path, b: Path) -> None:
    va, vb = _by_video(a), _by_video(b)
    assert sorted(va) == sorted(vb)
    for key in va:
        np.testing.assert_allclose(va[key], vb[key], atol=1e-6)


@pytest.mark.parametrize("n,d,k", [(1000, 32, 10), (257, 64, 257)])
def test_faiss_flat_equals_numpy_brute_force(n: int, d: int, k: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = build_faiss(x, "flat")
    for q in rng.normal(size=(5, d)).astype(np.float32):
        q /= np.linalg.norm(q)
        scores, ids = faiss_search(index, q, k)
        brute = x.astype(np.float64) @ q.astype(np.float64)
        order = np.argsort(-brute, kind="stable")[:k]
        np.testing.assert_allclose(scores, brute[ids], atol=1e-5)
        np.testing.assert_allclose(np.sort(scores)[::-1], brute[order], atol=1e-5)
        assert set(ids.tolist()) == set(order.tolist()) or np.allclose(brute[ids], brute[order], atol=1e-5)


def test_window_vectors_are_the_models_vtc_video_embedding(tiny_checkpoint, synthetic_qvh, tmp_path) -> None:
    from sadetr.corpus.embed import CorpusModel
    from sadetr.corpus.index import feature_store

    vids = _val_videos(synthetic_qvh)[:2]
    idx = build_index(
        tiny_checkpoint, synthetic_qvh["feat_root"], tmp_path / "idx", videos=vids, window=W, stride=S
    )
    state, _ = read_state(idx)
    assert state.table.video.count(vids[0]) == 7  # starts 0, 10, ..., 50 and the end-aligned 55
    np.testing.assert_allclose(np.linalg.norm(state.vectors, axis=1), 1.0, atol=1e-5)
    model, _ = CorpusModel.load(tiny_checkpoint)
    feats = feature_store(model.pipeline, synthetic_qvh["feat_root"]).video(vids[0])
    row = 3
    s, n = state.table.start_clip[row], state.table.n_clips[row]
    window = torch.from_numpy(model.features.video_input(feats[s : s + n]))[None]  # (1, W, Dv)
    text = torch.randn(1, 6, model.text_dim)
    with torch.no_grad():
        out = model.model(
            window, torch.ones(1, n, dtype=torch.bool), text, torch.ones(1, 6, dtype=torch.bool)
        )
    vtc = torch.nn.functional.normalize(out["vtc"]["video_emb"], dim=-1)[0].numpy()
    np.testing.assert_allclose(state.vectors[row], vtc, atol=1e-5)


def test_add_remove_and_resume_keep_the_index_consistent(tiny_checkpoint, synthetic_qvh, tmp_path) -> None:
    vids = _val_videos(synthetic_qvh)
    feat = synthetic_qvh["feat_root"]
    full = build_index(tiny_checkpoint, feat, tmp_path / "full", videos=vids, window=W, stride=S)

    grown = build_index(tiny_checkpoint, feat, tmp_path / "grown", videos=vids[:3], window=W, stride=S)
    build_index(tiny_checkpoint, feat, grown, videos=vids)  # adds the others, keeps the window/stride
    _same(full, grown)

    remove_videos(grown, vids[:2])
    fresh = build_index(tiny_checkpoint, feat, tmp_path / "fresh", videos=vids[2:], window=W, stride=S)
    _same(grown, fresh)
    assert read_state(grown)[0].table.videos.keys() == set(vids[2:])

    class Interrupt(Exception):
        pass

    def stop_after_three(vid: str, seen: list = []) -> None:  # noqa: B006 - a counter for this test
        seen.append(vid)
        if len(seen) == 3:
            raise Interrupt

    resumed = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        build_index(
            tiny_checkpoint, feat, resumed, videos=vids, window=W, stride=S, on_video=stop_after_three
        )
    assert not (resumed / "CURRENT").exists()  # nothing committed
    cached = list((resumed / "partial").glob("*/*.npz"))
    assert len(cached) == 3
    build_index(tiny_checkpoint, feat, resumed, videos=vids, window=W, stride=S)
    _same(full, resumed)
    assert not (resumed / "partial").exists()


def test_a_failed_build_leaves_the_previous_index_usable(tiny_checkpoint, synthetic_qvh, tmp_path) -> None:
    vids = _val_videos(synthetic_qvh)
    feat = tmp_path / "feat"
    shutil.copytree(synthetic_qvh["feat_root"], feat)
    idx = build_index(tiny_checkpoint, feat, tmp_path / "idx", videos=vids[:3], window=W, stride=S)
    before = _by_video(idx)
    (feat / "clip_features" / f"{vids[4]}.npz").write_bytes(b"not a zip")
    with pytest.raises(FeatureError, match=vids[4]):
        build_index(tiny_checkpoint, feat, idx, videos=vids)
    assert _by_video(idx).keys() == before.keys()
    searcher = CorpusSearcher.open(idx)
    assert searcher.num_windows == len(before) and sorted(searcher.videos) == vids[:3]
    # the videos embedded before the failure are kept for the next run (resume)
    assert len(list((idx / "partial").glob("*/*.npz"))) == 1  # vids[3] (vids[:3] are indexed)


def test_bad_input_is_one_clear_error(tiny_checkpoint, synthetic_qvh, tmp_path) -> None:
    feat = synthetic_qvh["feat_root"]
    with pytest.raises(CorpusIndexError, match="empty library"):
        build_index(tiny_checkpoint, tmp_path / "no_features", tmp_path / "a")
    with pytest.raises(FeatureError, match="not found"):
        build_index(tiny_checkpoint, feat, tmp_path / "b", videos=["no_such_video"])
    with pytest.raises(CorpusIndexError, match="not a corpus index"):
        CorpusSearcher.open(tmp_path / "nothing_here")

    vids = _val_videos(synthetic_qvh)[:2]
    idx = build_index(tiny_checkpoint, feat, tmp_path / "idx", videos=vids)
    # another checkpoint (other weights) and another feature pipeline are refused
    state = torch.load(tiny_checkpoint, weights_only=True)
    other = tmp_path / "other.ckpt"
    state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, other)
    with pytest.raises(CorpusIndexError, match="stale"):
        CorpusSearcher.open(idx, other)
    with pytest.raises(CorpusIndexError, match="stale"):
        build_index(other, feat, idx, videos=vids)
    state["features"] = {**state["features"], "clip_len": 1.0}
    torch.save(state, other)
    with pytest.raises(CorpusIndexError, match="clip_len"):
        CorpusSearcher.open(idx, other)

    gen = idx / (idx / "CURRENT").read_text().strip()
    (gen / "index.faiss").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CorpusIndexError, match="corrupt faiss index"):
        CorpusSearcher.open(idx)
    (gen / "vectors.npy").write_bytes(b"")
    with pytest.raises(CorpusIndexError, match=r"vectors\.npy"):
        CorpusSearcher.open(idx)


def test_hnsw_and_ivfpq_options_search_the_same_vectors() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat, hnsw = build_faiss(x, "flat"), build_faiss(x, "hnsw")
    recall = []
    for q in x[:20]:
        exact = set(faiss_search(flat, q, 10)[1].tolist())
        approx = faiss_search(hnsw, q, 10)[1]
        assert approx[0] in exact
        recall.append(len(exact & set(approx.tolist())) / 10)
    assert np.mean(recall) >= 0.9  # 600 points: HNSW is all but exact
    with pytest.raises(CorpusIndexError, match="ivfpq needs"):
        build_faiss(x, "ivfpq")
    with pytest.raises(CorpusIndexError, match="unknown index kind"):
        build_faiss(x, "lsh")


def test_scale_benchmark_rows_report_memory_and_recall() -> None:
    from sadetr.corpus.bench import scale_rows

    rows = scale_rows((300, 600), dim=8, kinds=("flat", "hnsw", "ivfpq"), k=10, queries=5)
    assert [(r["windows"], r["kind"]) for r in rows] == [
        (300, "flat"),
        (300, "hnsw"),
        (600, "flat"),
        (600, "hnsw"),
    ]
    assert rows[0]["recall@10_vs_flat"] == 1.0 and rows[2]["index_bytes"] > rows[0]["index_bytes"]
    assert all(r["query_ms"] > 0 for r in rows)


def test_set_alpha_commits_the_manifest_and_keeps_the_faiss_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording alpha is a new generation with the same vectors and the same faiss index, which is
    written as it is, not rebuilt (an HNSW build of a large library takes minutes)."""
    from sadetr.corpus import store
    from sadetr.corpus.index import set_alpha

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = store.WindowTable()
    for i in range(300):
        table.append(f"v{i // 10}", i % 10, 1, 2.0, 20.0)
    table.videos = {f"v{k}": {"feat_root": "/f", "n_clips": 10, "duration": 20.0} for k in range(30)}
    before = store.write_state(tmp_path, store.IndexState(toy_manifest(kind="hnsw", dim=16), vectors, table))
    faiss_bytes = (before / "index.faiss").read_bytes()

    def no_rebuild(*_: object) -> None:
        raise AssertionError("set_alpha rebuilt the faiss index")

    monkeypatch.setattr(store, "build_faiss", no_rebuild)
    set_alpha(tmp_path, 7.5)
    after = store.current_generation(tmp_path)
    assert after is not None and after != before and not before.exists()
    assert (after / "index.faiss").read_bytes() == faiss_bytes
    state, index = read_state(tmp_path)
    assert state.manifest["alpha"] == 7.5 and index.ntotal == 300
    np.testing.assert_array_equal(state.vectors, vectors)


def test_the_demo_corpus_step_runs_again_after_the_model_is_retrained(
    tiny_checkpoint, synthetic_qvh, tmp_path
) -> None:
    """`make demo` twice: the second demo retrains, and its corpus step must replace the first demo's
    index (built with the old checkpoint, which an index refuses) instead of failing."""
    from sadetr.core.safe_load import load_weights
    from sadetr.corpus.demo import corpus_demo

    data_root = Path(synthetic_qvh["config"]).parent
    first = corpus_demo(tiny_checkpoint, data_root, tmp_path / "corpus", n_show=0)
    state = load_weights(tiny_checkpoint, "checkpoint")
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] + 0.5  # another model: another checkpoint hash
    retrained = tmp_path / "retrained.ckpt"
    torch.save(state, retrained)
    second = corpus_demo(retrained, data_root, tmp_path / "corpus", n_show=0)
    assert set(first) == set(second)
    manifest = json.loads((tmp_path / "corpus" / "metrics.json").read_text())
    assert manifest["metrics"] == second
