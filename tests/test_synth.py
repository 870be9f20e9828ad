"""Synthetic dataset generator: layout, per-preset shapes, determinism, signal, and the `synth` command."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from sadetr.cli.main import main
from sadetr.data import Annotation, DataConfig, build_dataset, collate, read_annotations
from sadetr.data.synth import NOUNS, VERBS, World, generate_synthetic


@pytest.fixture(scope="module")
def qvh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_synthetic(tmp_path_factory.mktemp("qvh"), "qvhighlights", n_train=24, n_val=8, seed=5)


def load_npz(path: Path, key: str) -> np.ndarray:
    with np.load(path) as npz:
        return npz[key].astype(np.float32)


def test_qvh_layout_and_labels(qvh: dict[str, Path]) -> None:
    train, val = read_annotations(qvh["train"]), read_annotations(qvh["val"])
    assert (len(train), len(val)) == (24, 8)
    assert not {a.vid for a in train} & {a.vid for a in val}
    assert len({a.qid for a in train + val}) == 32 and all(isinstance(a.qid, int) for a in train)
    for ann in train + val:
        assert ann.duration in range(120, 151, 2)
        assert 1 <= len(ann.windows) <= 3
        assert all(s % 2 == 0 and e % 2 == 0 for s, e in ann.windows)  # on 2-s clip boundaries
        clips = sorted(c for s, e in ann.windows for c in range(int(s) // 2, int(e) // 2))
        assert list(ann.relevant_clip_ids) == clips
        assert all(len(row) == 3 and all(0 <= x <= 4 for x in row) for row in ann.saliency_scores)
        sf = load_npz(qvh["feat_root"] / "slowfast_features" / f"{ann.vid}.npz", "features")
        clip = load_npz(qvh["feat_root"] / "clip_features" / f"{ann.vid}.npz", "features")
        text = load_npz(qvh["feat_root"] / "clip_text_features" / f"qid{ann.qid}.npz", "last_hidden_state")
        assert sf.shape == (ann.duration / 2, 2304) and clip.shape == (ann.duration / 2, 512)
        assert text.shape[1] == 512 and text.shape[0] == len(ann.query.rstrip(".").split()) + 2


def test_several_queries_per_video_point_to_different_moments(qvh: dict[str, Path]) -> None:
    by_vid = defaultdict(list)
    for ann in read_annotations(qvh["train"]):
        by_vid[ann.vid].append(ann)
    multi = [anns for anns in by_vid.values() if len(anns) > 1]
    assert len(multi) >= len(by_vid) // 2
    for anns in multi:
        spans = [set(a.windows) for a in anns]
        assert all(not (spans[i] & spans[j]) for i in range(len(spans)) for j in range(i))
        assert len({a.query for a in anns}) == len(anns)


def _concept_scores(paths: dict[str, Path], seed: int) -> Iterator[tuple[Annotation, np.ndarray, np.ndarray]]:
    """Per training query of a dataset generated with `seed`: (annotation, the query's concept read back
    from its video's CLIP features [L], mask of its relevant clips [L])."""
    world = World(seed)
    back = np.linalg.pinv(world.proj_clip.astype(np.float64))  # [512, 64]
    for ann in read_annotations(paths["train"]):
        words = ann.query.rstrip(".").split()
        verb = next(VERBS.index(w) for w in words if w in VERBS)
        noun = next(NOUNS.index(w) for w in words if w in NOUNS)
        clip = load_npz(paths["feat_root"] / "clip_features" / f"{ann.vid}.npz", "features")
        score = (clip @ back) @ world.concept[noun, verb]  # [L]
        rel = np.zeros(len(score), dtype=bool)
        rel[list(ann.relevant_clip_ids)] = True
        yield ann, score, rel


def test_features_carry_the_query_concept(qvh: dict[str, Path]) -> None:
    """Map CLIP video features back to the latent space: the query's concept is stronger in its windows,
    and the annotators' saliency follows it."""
    inside, outside, corr = [], [], []
    for ann, score, rel in _concept_scores(qvh, 5):
        inside.append(score[rel].mean())
        outside.append(score[~rel].mean())
        levels = np.array([sum(r) for r in ann.saliency_scores])
        if levels.std() > 0 and len(levels) > 3:
            corr.append(np.corrcoef(levels, score[rel])[0, 1])
    assert np.mean(np.array(inside) - np.array(outside)) > 0.5
    assert np.mean(np.array(inside) > np.array(outside)) > 0.9
    assert np.mean(corr) > 0.3


@pytest.mark.parametrize("preset", ["charades", "tacos"])
def test_other_presets(tmp_path: Path, preset: str) -> None:
    paths = generate_synthetic(tmp_path, preset, n_train=20, n_val=5, seed=1)
    anns = read_annotations(paths["train"])
    assert len(anns) == 20
    assert all(len(a.windows) == 1 and not a.has_saliency for a in anns)
    cfg = yaml.safe_load(paths["config"].read_text())["data"]
    clip_len = cfg["clip_len"]
    if preset == "charades":
        assert clip_len == 1.0 and all(12 <= a.duration <= 60 for a in anns)
        assert all(isinstance(a.qid, int) for a in anns)
    else:
        assert clip_len == 2.0 and all(80 <= a.duration <= 700 for a in anns)
        assert all(isinstance(a.qid, str) and a.qid.startswith(a.vid + "_") for a in anns)
        assert len(anns) / len({a.vid for a in anns}) >= 3  # many queries per video
    for ann in anns:
        n = load_npz(paths["feat_root"] / "slowfast_features" / f"{ann.vid}.npz", "features").shape[0]
        assert n == math.ceil(ann.duration / clip_len - 1e-9)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate_synthetic(tmp_path / "a", "charades", n_train=10, n_val=4, seed=7)
    b = generate_synthetic(tmp_path / "b", "charades", n_train=10, n_val=4, seed=7)
    c = generate_synthetic(tmp_path / "c", "charades", n_train=10, n_val=4, seed=8)
    files = sorted(p.relative_to(a["root"]) for p in a["root"].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b["root"]) for p in b["root"].rglob("*") if p.is_file())
    assert not any(".tmp" in str(f) for f in files)
    for rel in files:
        text_a, text_b = (a["root"] / rel).read_bytes(), (b["root"] / rel).read_bytes()
        if rel.name == "dataset.yaml":
            text_a = text_a.replace(str(a["root"]).encode(), b"ROOT")
            text_b = text_b.replace(str(b["root"]).encode(), b"ROOT")
        assert text_a == text_b, rel
    assert a["train"].read_bytes() != c["train"].read_bytes()


def test_dataset_yaml_loads_into_a_batch(qvh: dict[str, Path]) -> None:
    cfg = DataConfig(**yaml.safe_load(qvh["config"].read_text())["data"])
    ds = build_dataset(cfg, "val")
    batch = collate([ds[i] for i in range(4)])
    assert batch["video_feat"].shape[2] == cfg.video_feat_dim == 2818
    assert batch["video_mask"].sum(1).tolist() == [m["duration"] / 2 for m in batch["meta"]]
    assert batch["text_feat"].shape[2] == 512
    assert batch["saliency"].max() <= 12 and batch["relevant"].any(dim=1).all()
    assert [json.dumps(r) for r in ds.ground_truth()] == qvh["val"].read_text().splitlines()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    assert main(["synth", "--out", str(out), "--preset", "charades", "--n-train", "6", "--n-val", "2"]) == 0
    assert len((out / "annotations" / "train.jsonl").read_text().splitlines()) == 6
    assert (out / "dataset.yaml").is_file()
    assert main(["synth", "--out", str(out), "--n-train", "0"]) == 2
    assert "--n-train: must be >= 1" in capsys.readouterr().err


def _concept_gap(paths: dict[str, Path], seed: int) -> float:
    """Mean (inside − outside) of the query concept read back from the CLIP features, over the queries."""
    return float(
        np.mean([score[rel].mean() - score[~rel].mean() for _, score, rel in _concept_scores(paths, seed)])
    )


def test_hard_preset_has_qvh_shapes_and_a_weaker_signal(tmp_path: Path) -> None:
    """The convergence benchmark's preset: QVHighlights' layout, more distractors, a weaker concept."""
    easy = generate_synthetic(tmp_path / "easy", "qvhighlights", n_train=40, n_val=4, seed=3)
    hard = generate_synthetic(tmp_path / "hard", "qvhighlights_hard", n_train=40, n_val=4, seed=3)
    for ann in read_annotations(hard["train"]):
        assert ann.duration in range(120, 151, 2)
        assert all(s % 2 == 0 and e % 2 == 0 for s, e in ann.windows)
    gap_easy, gap_hard = _concept_gap(easy, 3), _concept_gap(hard, 3)
    assert 0.1 < gap_hard < 0.8 * gap_easy
