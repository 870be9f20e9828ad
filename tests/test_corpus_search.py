"""Two-stage corpus search (`sadetr.corpus.search`), Parquet shards and the corpus commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sadetr.cli.main import main
from sadetr.core.errors import CheckpointError, DataError
from sadetr.corpus import CorpusSearcher, SearchHit, build_index
from sadetr.corpus.evaluate import query_features
from sadetr.corpus.search import fuse
from sadetr.corpus.shards import export_shards, read_shards
from sadetr.corpus.store import read_state
from sadetr.inference.sliding import temporal_iou


@pytest.fixture(scope="module")
def index_dir(tiny_checkpoint: Path, synthetic_qvh: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    vids = sorted({json.loads(x)["vid"] for x in synthetic_qvh["val"].read_text().splitlines()})
    out = tmp_path_factory.mktemp("corpus") / "idx"
    return build_index(tiny_checkpoint, synthetic_qvh["feat_root"], out, videos=vids, window=20, stride=10)


@pytest.fixture(scope="module")
def searcher(index_dir: Path) -> CorpusSearcher:
    return CorpusSearcher.open(index_dir)


def _queries(data: dict, n: int) -> list[dict]:
    return [json.loads(x) for x in data["val"].read_text().splitlines()][:n]


def test_two_stage_with_all_windows_equals_exhaustive(searcher, synthetic_qvh) -> None:
    n = searcher.num_windows
    for g in _queries(synthetic_qvh, 3):
        feats = query_features(searcher, synthetic_qvh["feat_root"], g["qid"])
        two = searcher.search(query_feats=feats, top=30, k_windows=n)
        ref = searcher.search_exhaustive(query_feats=feats, top=30)
        assert [(h.video, h.start, h.end) for h in two] == [(h.video, h.start, h.end) for h in ref]
        np.testing.assert_allclose([h.score for h in two], [h.score for h in ref], rtol=1e-5)
        # fewer windows: the hits are a re-ranking of moments from the top windows only
        few = searcher.search(query_feats=feats, top=30, k_windows=5)
        assert len({h.video for h in few}) <= 5


def test_hits_are_fused_ranked_and_nms_per_video(searcher, synthetic_qvh) -> None:
    g = _queries(synthetic_qvh, 1)[0]
    feats = query_features(searcher, synthetic_qvh["feat_root"], g["qid"])
    hits = searcher.search(query_feats=feats, top=50, k_windows=40)
    assert all(isinstance(h, SearchHit) for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    for h in hits:
        assert h.score == pytest.approx(
            float(fuse(np.array([h.retrieval_score]), np.array([h.quality]), searcher.alpha)[0])
        )
        assert 0 <= h.start < h.end <= searcher.duration(h.video) + 1e-6
    qvec = searcher.query_embedding(query_feats=feats)[1]
    t0, t1 = np.asarray(searcher.table.t0), np.asarray(searcher.table.t1)
    for h in hits[:10]:  # s = the best cosine of the video's retrieval windows that overlap the moment
        over = [
            i
            for i, v in enumerate(searcher.table.video)
            if v == h.video and min(h.end, t1[i]) > max(h.start, t0[i])
        ]
        assert h.retrieval_score == pytest.approx(float(np.max(searcher.vectors[over] @ qvec)), abs=1e-5)
    for i, a in enumerate(hits):
        for b in hits[i + 1 :]:
            if a.video == b.video:
                assert temporal_iou((a.start, a.end), (b.start, b.end)) < 0.7
    own = searcher.search_video(g["vid"], query_feats=feats, top=5)
    assert own and {h.video for h in own} == {g["vid"]}


def test_bad_queries_and_k_larger_than_the_index(searcher, synthetic_qvh) -> None:
    from sadetr.corpus.search import check_k

    with pytest.raises(DataError, match="embeds to zero"):
        searcher.search(query_feats=np.zeros((5, searcher.model.text_dim), np.float32))
    with pytest.raises(DataError, match="L_t > 0"):
        searcher.search(query_feats=np.ones((5, 7), np.float32))
    with pytest.raises(CheckpointError, match="CLIP"):
        searcher.search("a dog opens the door")  # a text query needs CLIP weights (clip_dir)
    with pytest.raises(DataError, match="index holds"):
        check_k(searcher.num_windows + 1, searcher)
    feats = query_features(searcher, synthetic_qvh["feat_root"], _queries(synthetic_qvh, 1)[0]["qid"])
    assert searcher.search(query_feats=feats, top=5, k_windows=10**6)  # the API clamps K to the index


def test_parquet_shards_hold_the_index(index_dir, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = export_shards(index_dir, tmp_path / "shards", rows_per_shard=25)
    state, _ = read_state(index_dir)
    n, d = state.vectors.shape
    assert len(paths) == -(-n // 25)
    schema = pq.read_schema(paths[0])
    assert schema.names == ["id", "video_id", "t0", "t1", "vector"]
    assert schema.field("vector").type == pa.list_(pa.float32(), d)
    assert schema.field("id").type == pa.int64()
    ids, vids, t0, t1, vecs = read_shards(tmp_path / "shards")
    np.testing.assert_array_equal(ids, np.arange(n))
    assert vids == state.table.video
    np.testing.assert_allclose(t0, state.table.t0)
    np.testing.assert_allclose(t1, state.table.t1)
    np.testing.assert_array_equal(vecs, state.vectors)
    manifest = json.loads((tmp_path / "shards" / "_manifest.json").read_text())
    assert manifest["checkpoint_sha256"] == state.manifest["checkpoint_sha256"]


def test_commands_end_to_end(tiny_checkpoint, synthetic_qvh, index_dir, tmp_path, capsys) -> None:
    feat = synthetic_qvh["feat_root"]
    qid = _queries(synthetic_qvh, 1)[0]["qid"]
    idx = tmp_path / "idx"
    assert (
        main(["index", "--checkpoint", str(tiny_checkpoint), "--features", str(feat), "--out", str(idx)]) == 0
    )
    assert "windows" in capsys.readouterr().out
    qf = str(feat / "clip_text_features" / f"qid{qid}.npz")
    assert (
        main(["search", "--index", str(idx), "--query-features", qf, "--top", "3", "--format", "jsonl"]) == 0
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["rank"] for x in lines] == [1, 2, 3] and lines[0]["score"] >= lines[1]["score"]
    tvr = tmp_path / "tvr.json"
    assert (
        main(["search", "--index", str(idx), "--query-features", qf, "--format", "tvr", "-o", str(tvr)]) == 0
    )
    sub = json.loads(tvr.read_text())
    assert set(sub) == {"video2idx", "VCMR", "VR"} and len(sub["VCMR"][0]["predictions"][0]) == 4
    out = tmp_path / "m.json"
    args = ["evaluate-corpus", "--index", str(index_dir), "--annotations", str(synthetic_qvh["val"])]
    args += ["--text-features", str(feat), "--k-windows", "10", "--out", str(out), "--tune-alpha"]
    assert main(args) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert {"VCMR-R@10-IoU=0.5", "SVMR-R@1-IoU=0.7", "VR-R@100"} <= set(metrics)
    assert all(0.0 <= v <= 100.0 for v in metrics.values())
    capsys.readouterr()
    # bad input: one line on stderr, exit code 2
    assert main(["search", "--index", str(idx), "--query-features", qf, "--k-windows", "100000"]) == 2
    assert main(["search", "--index", str(tmp_path / "missing"), "--query-features", qf]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "index holds" in err[0] and "not a corpus index" in err[1]


def test_cut_exports_the_frames_of_a_moment(tmp_path, capsys) -> None:
    from sadetr.video.decode import iter_frames_at, probe
    from sadetr.video.tiny import write_test_video

    video = write_test_video(tmp_path / "v.mp4", n_frames=45, fps=10)  # frame k shows level(k)
    clip = tmp_path / "clip.mp4"
    assert main(["cut", str(video), "--start", "1.0", "--end", "2.5", "-o", str(clip)]) == 0
    info = probe(clip)
    assert info.duration == pytest.approx(1.5, abs=0.11) and (info.width, info.height) == (64, 48)
    first = next(iter(iter_frames_at(clip, [0.0], size=None)))
    assert round((float(first.mean()) - 5) / 5) == 10  # the frame shown at 1.0 s of the source
    assert main(["cut", str(video), "--start", "9", "--end", "10", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "past the end" in capsys.readouterr().err


@pytest.mark.parametrize("alpha", [0.0, 7.5])
def test_a_stored_alpha_is_the_searchers_default(index_dir: Path, tmp_path: Path, alpha: float) -> None:
    """Every value `tune_alpha` can choose, 0 (rank by moment quality alone) included, is what the
    reopened index searches with; an index without one uses DEFAULT_ALPHA."""
    import shutil

    from sadetr.corpus.index import set_alpha
    from sadetr.corpus.search import DEFAULT_ALPHA

    copy = tmp_path / "idx"
    shutil.copytree(index_dir, copy)
    assert read_state(copy)[0].manifest["alpha"] is None
    assert CorpusSearcher.open(copy).alpha == DEFAULT_ALPHA
    set_alpha(copy, alpha)
    assert CorpusSearcher.open(copy).alpha == alpha
