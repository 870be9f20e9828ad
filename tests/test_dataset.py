"""MomentDataset + collate: targets on hand-computable samples, long videos, pairs, batch contract."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sadetr.core.errors import DataError, FeatureError
from sadetr.data import DataConfig, MomentDataset, build_dataset, collate
from sadetr.data.dataset import SkippedSample

QVH = {
    "qid": 1,
    "query": "a man opens the door",
    "duration": 20,
    "vid": "va",
    "relevant_clip_ids": [2, 3, 4],
    "saliency_scores": [[1, 2, 3], [4, 4, 4], [0, 0, 1]],
    "relevant_windows": [[4, 10]],
}
CHA = {"qid": 2, "query": "person sits down", "duration": 10.5, "vid": "vb", "relevant_windows": [[2.5, 5.2]]}


def make_data(
    tmp_path: Path,
    records: list[dict[str, Any]],
    lengths: dict[str, int],
    n_tokens: int = 5,
    **cfg_changes: Any,
) -> DataConfig:
    """Annotations + small random features (sf: 3 dims, clip: 2 dims, text: 4 dims) under tmp_path."""
    rng = np.random.default_rng(0)
    for src, dim in (("sf", 3), ("clip", 2)):
        (tmp_path / src).mkdir(exist_ok=True)
        for vid, n in lengths.items():
            np.savez(tmp_path / src / f"{vid}.npz", features=rng.uniform(0.1, 1.0, (n, dim)))
    (tmp_path / "txt").mkdir(exist_ok=True)
    for rec in records:
        np.savez(tmp_path / "txt" / f"qid{rec['qid']}.npz", last_hidden_state=rng.normal(size=(n_tokens, 4)))
    path = tmp_path / "ann.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = DataConfig(
        train_path=str(path),
        val_path=str(path),
        test_path=str(path),
        feat_root=str(tmp_path),
        video_sources=["sf", "clip"],
        video_dims=[3, 2],
        text_source="txt",
        text_dim=4,
        clip_len=2.0,
        max_v_l=75,
        max_q_l=32,
    )
    for key, value in cfg_changes.items():
        setattr(cfg, key, value)
    return cfg


def test_qvh_sample_targets(tmp_path: Path) -> None:
    cfg = make_data(tmp_path, [QVH], {"va": 10})
    s = build_dataset(cfg, "train")[0]
    assert s["video_feat"].shape == (10, cfg.video_feat_dim) == (10, 7)
    np.testing.assert_allclose(s["video_feat"][:, :3].norm(dim=1), np.ones(10), rtol=1e-5)  # per source
    np.testing.assert_allclose(s["video_feat"][:, 3:5].norm(dim=1), np.ones(10), rtol=1e-5)
    np.testing.assert_allclose(s["video_feat"][3, 5:], [0.3, 0.4])  # TEF of clip 3 of 10
    np.testing.assert_allclose(s["spans"], [[0.35, 0.3]])  # [4, 10] s over 10 clips x 2 s
    assert s["saliency"].tolist() == [0, 0, 6, 12, 1, 0, 0, 0, 0, 0]  # sum of the 3 annotators
    assert s["relevant"].nonzero().flatten().tolist() == [2, 3, 4]
    pos, neg = s["saliency_pos_idx"].tolist(), s["saliency_neg_idx"].tolist()
    assert pos[0] == 3 and neg[0] == 4  # hard pair: highest / lowest scored relevant clip
    assert pos[1] in (2, 3, 4) and neg[1] not in (2, 3, 4)  # easy pair
    assert s["meta"] == {
        "qid": 1,
        "vid": "va",
        "query": "a man opens the door",
        "duration": 20.0,
        "clip_sec": 2.0,
        "num_clips": 10,
    }


def test_sample_without_saliency_uses_windows(tmp_path: Path) -> None:
    cfg = make_data(tmp_path, [CHA], {"vb": 11}, clip_len=1.0)
    s = build_dataset(cfg, "train")[0]
    # clip centres 0.5, 1.5, ...: 2.5, 3.5, 4.5 lie in [2.5, 5.2]
    assert s["relevant"].nonzero().flatten().tolist() == [2, 3, 4]
    assert s["saliency"].tolist() == [float(i in (2, 3, 4)) for i in range(11)]
    np.testing.assert_allclose(s["spans"], [[(2.5 + 5.2) / 2 / 11, 2.7 / 11]], rtol=1e-6)
    pos, neg = s["saliency_pos_idx"].tolist(), s["saliency_neg_idx"].tolist()
    assert set(pos) <= {2, 3, 4} and pos[0] != pos[1]
    assert not set(neg) & {2, 3, 4} and neg[0] != neg[1]


def test_short_window_marks_its_clip_and_max_q_l(tmp_path: Path) -> None:
    rec = {**CHA, "relevant_windows": [[3.1, 3.4]]}
    cfg = make_data(tmp_path, [rec], {"vb": 11}, n_tokens=40, clip_len=1.0, max_q_l=32)
    s = build_dataset(cfg, "train")[0]
    assert s["relevant"].nonzero().flatten().tolist() == [3]
    assert s["saliency_pos_idx"].tolist() == [3, 3]  # one positive clip: repeated
    assert s["text_feat"].shape == (32, 4)
    np.testing.assert_allclose(s["text_feat"].norm(dim=1), np.ones(32), rtol=1e-5)


def test_long_video_truncate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = {**QVH, "relevant_windows": [[4, 10], [12, 14]]}
    cfg = make_data(tmp_path, [rec], {"va": 10}, max_v_l=4)
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(cfg, "train")
    assert "1 queries on videos longer than max_v_l * clip_len = 8 s are truncated" in caplog.text
    s = ds[0]
    assert s["meta"]["num_clips"] == 4 and s["meta"]["clip_sec"] == 2.0
    # [4, 10] clipped to [4, 8] of 8 s; [12, 14] dropped
    np.testing.assert_allclose(s["spans"], [[0.75, 0.5]])
    assert s["saliency"].tolist() == [0, 0, 6, 12]  # clip 4 is cut off
    np.testing.assert_allclose(s["video_feat"][:, 5:], [[0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]])


def test_long_video_all_windows_cut_is_error_or_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = {**CHA, "relevant_windows": [[8.0, 10.0]]}
    cfg = make_data(tmp_path, [rec], {"vb": 11}, clip_len=1.0, max_v_l=6)
    with pytest.raises(DataError, match="all GT windows start after the first 6 clips") as info:
        build_dataset(cfg, "train")[0]
    assert info.value.line == 1
    cfg.on_bad_sample = "skip"
    with caplog.at_level(logging.WARNING):
        skipped = build_dataset(cfg, "train")[0]
        assert isinstance(skipped, SkippedSample) and skipped.where.endswith(":1")
    assert "skipping sample 0" in caplog.text


def test_long_video_resample(tmp_path: Path) -> None:
    cfg = make_data(tmp_path, [QVH], {"va": 10}, max_v_l=4, long_video="resample")
    ds = build_dataset(cfg, "train")
    s = ds[0]
    assert s["meta"]["num_clips"] == 4 and s["meta"]["clip_sec"] == 5.0  # 20 s over 4 clips
    np.testing.assert_allclose(s["spans"], [[0.35, 0.3]])  # same seconds, same normalised span
    # clips 2, 3, 4 fall in bin 1 of the bins [0, 2), [2, 5), [5, 7), [7, 10): the max level, 12
    assert s["saliency"].tolist() == [0, 12, 0, 0]
    raw = ds.store.video("va")  # [10, 5], normalised per source
    bin1 = raw[2:5].mean(axis=0)
    expected = np.concatenate([bin1[:3] / np.linalg.norm(bin1[:3]), bin1[3:] / np.linalg.norm(bin1[3:])])
    np.testing.assert_allclose(s["video_feat"][1, :5], expected, rtol=1e-5)


def test_test_split_without_windows(tmp_path: Path) -> None:
    rec = {k: v for k, v in CHA.items() if k != "relevant_windows"}
    cfg = make_data(tmp_path, [rec], {"vb": 11}, clip_len=1.0)
    batch = collate([build_dataset(cfg, "test")[0]])
    assert batch["spans"][0].shape == (0, 2)
    assert not batch["relevant"].any() and not batch["saliency"].any()
    assert batch["saliency_pos_idx"].tolist() == [[0, 0]]


def test_collate_batch_contract(tmp_path: Path) -> None:
    recs = [QVH, {**QVH, "qid": 5, "query": "a dog runs"}, {**CHA, "vid": "vb"}]
    cfg = make_data(tmp_path, recs, {"va": 10, "vb": 6})
    ds = build_dataset(cfg, "train")
    b = collate([ds[2], ds[0], None, ds[1]])  # a skipped (None) sample is dropped
    assert b["video_feat"].shape == (3, 10, 7) and b["video_feat"].dtype == torch.float32
    assert b["video_mask"].tolist() == [[True] * 6 + [False] * 4, [True] * 10, [True] * 10]
    assert not b["video_feat"][0, 6:].any()
    assert b["text_feat"].shape == (3, 5, 4) and b["text_mask"].all()
    assert b["saliency"].shape == b["relevant"].shape == (3, 10) and b["relevant"].dtype == torch.bool
    assert not b["relevant"][0, 6:].any()
    assert b["saliency_pos_idx"].shape == b["saliency_neg_idx"].shape == (3, 2)
    assert b["saliency_pos_idx"].dtype == torch.long
    assert b["vid_index"].tolist() == [0, 1, 1]  # samples 2 and 3 share video "va"
    assert [m["qid"] for m in b["meta"]] == [2, 1, 5]
    assert [s.shape for s in b["spans"]] == [(1, 2)] * 3
    assert set(b) == {
        "video_feat",
        "video_mask",
        "text_feat",
        "text_mask",
        "spans",
        "saliency",
        "relevant",
        "saliency_pos_idx",
        "saliency_neg_idx",
        "vid_index",
        "meta",
        "skipped",
    }
    assert b["skipped"] == []
    with pytest.raises(DataError, match="every sample of this batch was skipped"):
        collate([None])


def pairs(ds: MomentDataset, order: list[int]) -> dict[int, list[int]]:
    return {i: ds[i]["saliency_pos_idx"].tolist() + ds[i]["saliency_neg_idx"].tolist() for i in order}


def test_pair_sampling_reproducible_per_seed_epoch_index(tmp_path: Path) -> None:
    recs = [{**CHA, "qid": q, "duration": 60.0, "relevant_windows": [[10.0, 30.0]]} for q in range(4)]
    cfg = make_data(tmp_path, recs, {"vb": 60}, clip_len=1.0)
    ds = MomentDataset(cfg, "train", seed=3)
    ds.set_epoch(2)
    forward = pairs(ds, [0, 1, 2, 3])
    assert pairs(ds, [3, 1, 0, 2]) == forward  # independent of access order
    other = MomentDataset(cfg, "train", seed=3)
    other.set_epoch(2)
    assert pairs(other, [2, 3, 0, 1]) == forward  # a fresh (resumed) dataset sees the same samples
    ds.set_epoch(3)
    assert pairs(ds, [0, 1, 2, 3]) != forward
    assert pairs(MomentDataset(cfg, "train", seed=4), [0, 1, 2, 3]) != pairs(ds, [0, 1, 2, 3])
    loader = DataLoader(other, batch_size=2, num_workers=2, collate_fn=collate)
    via_workers = torch.cat([b["saliency_pos_idx"] for b in loader])
    assert via_workers.tolist() == [forward[i][:2] for i in range(4)]


def test_missing_and_corrupt_features(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recs = [QVH, {**QVH, "qid": 5}, {**CHA, "qid": 6}]
    cfg = make_data(tmp_path, recs, {"va": 10, "vb": 6})
    (tmp_path / "txt" / "qid5.npz").unlink()
    with pytest.raises(FeatureError) as info:
        build_dataset(cfg, "train")
    assert info.value.path == str(tmp_path / "txt" / "qid5.npz") and "ann.jsonl:2" in str(info.value)
    (tmp_path / "clip" / "vb.npz").write_bytes(b"corrupt")
    cfg.on_bad_sample = "skip"
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(cfg, "train")
    assert "skipped 1 of 3 queries with missing feature files" in caplog.text
    assert [a.qid for a in ds.annotations] == [1, 6]
    assert [s.where.rsplit(":", 1)[1] for s in ds.skipped] == ["2"]  # qid 5's text file is missing
    skipped = ds[1]  # corrupt file found when loading
    assert isinstance(skipped, SkippedSample) and "not an .npz" in skipped.reason
    assert "clip/vb.npz" in caplog.text
    cfg.on_bad_sample = "error"
    np.savez(tmp_path / "txt" / "qid5.npz", last_hidden_state=np.ones((3, 4)))
    with pytest.raises(FeatureError, match=r"unreadable feature file \(not an \.npz archive\)"):
        MomentDataset(cfg, "train", path=tmp_path / "ann.jsonl")[2]


def test_bad_config_values(tmp_path: Path) -> None:
    cfg = make_data(tmp_path, [QVH], {"va": 10})
    with pytest.raises(DataError, match="unknown split"):
        build_dataset(cfg, "dev")
    cfg.long_video = "crop"
    with pytest.raises(DataError, match=r"truncate \| resample"):
        build_dataset(cfg, "train")


def test_feature_length_must_match_duration(tmp_path: Path) -> None:
    cfg = make_data(tmp_path, [QVH], {"va": 10}, clip_len=1.0)  # 10 clips x 1 s for a 20 s video
    message = r"10 clips x clip_len 1 s = 10 s does not match the duration 20 s"
    with pytest.raises(FeatureError, match=message):
        build_dataset(cfg, "train")[0]
    cfg.clip_len = 2.2  # 22 s: within max(2 clips, 10 %) of 20 s
    assert build_dataset(cfg, "train")[0]["meta"]["clip_sec"] == 2.2
