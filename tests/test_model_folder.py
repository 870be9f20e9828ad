"""Portable model folders (`sadetr export`) and the onnxruntime backend on a trained model: the folder
round-trips to a fresh process without the run directory and without unpickling; `predict --backend onnx`
writes the torch backend's top-1 windows; the long-video path and corpus search give the same answers
with either backend; `predict --feat-root/--set` run a model on other features without a YAML."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sadetr.cli.main import main
from sadetr.inference.predictor import Predictor

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# Run in a fresh interpreter: anything that unpickles (pickle, torch.load) fails the load.
FRESH = r"""
import json, pickle, sys
import numpy as np
import torch

def refuse(*args, **kwargs):
    raise AssertionError("a model folder must load without unpickling")

pickle.load = pickle.loads = torch.load = refuse
pickle.Unpickler = refuse
from sadetr.inference.predictor import Predictor

folder, feats, text, backend = sys.argv[1:5]
p = Predictor.from_checkpoint(folder, device="cpu", backend=backend)
out = p.predict("q", np.load(feats), text_features=np.load(text))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def folder(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint's run copied, exported with --int8, and the copy deleted."""
    root = tmp_path_factory.mktemp("folder")
    run = shutil.copytree(tiny_checkpoint.parent, root / "run")
    assert main(["export", "--checkpoint", str(run), "--out", str(root / "model"), "--int8"]) == 0
    shutil.rmtree(run)
    return root / "model"


def _features(n_clips: int, seed: int, dims: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_clips, dims[0])).astype(np.float32), rng.normal(size=(7, dims[1])).astype(
        np.float32
    )


def test_the_folder_round_trips_in_a_fresh_process(
    folder: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    card = (folder / "README.md").read_text()
    assert "## Metrics" in card and "MR-full-mAP" in card and "model.onnx" in card
    reference = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    feats, text = _features(160, 0, (sum(reference.video_dims), reference.text_dim))  # 4 windows
    np.save(tmp_path / "feats.npy", feats)
    np.save(tmp_path / "text.npy", text)
    expected = reference.predict("q", feats, text_features=text)
    assert expected["num_windows"] == 4
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "model")
    for backend in ("torch", "onnx"):
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                FRESH,
                str(moved),
                str(tmp_path / "feats.npy"),
                str(tmp_path / "text.npy"),
                backend,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path / "elsewhere",
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            check=False,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        got = json.loads(run.stdout.strip().splitlines()[-1])
        assert [w[:2] for w in got["pred_relevant_windows"]] == [
            w[:2] for w in expected["pred_relevant_windows"]
        ]
        np.testing.assert_allclose(got["pred_saliency_scores"], expected["pred_saliency_scores"], atol=1e-3)
        if backend == "torch":  # the same weights, the same code: the same numbers
            assert got == expected


def _preds(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_predict_with_the_onnx_backend_writes_the_same_top1_windows(
    folder: Path, tiny_checkpoint: Path, synthetic_qvh: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from sadetr.eval import evaluate, load_jsonl

    common = ["--data", str(synthetic_qvh["val"]), "--device", "cpu"]
    assert (
        main(["predict", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "t.jsonl"), *common])
        == 0
    )
    for backend in ("onnx", "onnx-int8"):
        out = tmp_path / f"{backend}.jsonl"
        args = ["predict", "--checkpoint", str(folder), "--backend", backend, "--out", str(out), *common]
        assert main(args) == 0
    capsys.readouterr()
    torch_preds, onnx_preds = _preds(tmp_path / "t.jsonl"), _preds(tmp_path / "onnx.jsonl")
    assert len(torch_preds) == len(onnx_preds) == 24
    assert [p["pred_relevant_windows"][0][:2] for p in onnx_preds] == [
        p["pred_relevant_windows"][0][:2] for p in torch_preds
    ]
    gt = load_jsonl(synthetic_qvh["val"])
    m_torch, m_onnx = evaluate(torch_preds, gt)["brief"], evaluate(onnx_preds, gt)["brief"]
    assert all(abs(m_onnx[k] - m_torch[k]) <= 0.1 for k in m_torch)
    assert len(_preds(tmp_path / "onnx-int8.jsonl")) == 24  # its accuracy is measured in docs/deploy.md


def test_predict_runs_on_other_features_with_feat_root_and_set(
    tiny_checkpoint: Path, synthetic_qvh: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    moved = shutil.copytree(synthetic_qvh["feat_root"], tmp_path / "moved_features")
    ann = shutil.copy(synthetic_qvh["val"], tmp_path / "queries.jsonl")
    base = ["predict", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    assert main([*base, "--data", str(synthetic_qvh["val"]), "--out", str(tmp_path / "a.jsonl")]) == 0
    assert (
        main([*base, "--data", str(ann), "--feat-root", str(moved), "--out", str(tmp_path / "b.jsonl")]) == 0
    )
    # the checkpoint's own data config, its val split moved by --set
    sets = ["--set", f"data.val_path={ann}", "--set", f"data.feat_root={moved}"]
    assert main([*base, *sets, "--out", str(tmp_path / "c.jsonl")]) == 0
    assert _preds(tmp_path / "a.jsonl") == _preds(tmp_path / "b.jsonl") == _preds(tmp_path / "c.jsonl")
    capsys.readouterr()
    assert (
        main(
            [
                *base,
                "--data",
                str(ann),
                "--feat-root",
                str(tmp_path / "nowhere"),
                "--out",
                str(tmp_path / "d.jsonl"),
            ]
        )
        == 2
    )
    assert "feature file not found" in capsys.readouterr().err


def test_cli_refusals_are_one_line(folder: Path, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = ["--out", str(tmp_path / "p.jsonl")]
    cases = [
        (["predict", "--checkpoint", str(tiny_checkpoint), "--backend", "onnx", *out], "sadetr export"),
        (["predict", "--checkpoint", str(folder), "--set", "model.hidden_dim=8", *out], "data.* and model."),
        (["predict", "--checkpoint", str(folder), "--set", "data.nope=1", *out], "data.nope"),
        (["export", "--checkpoint", str(folder), "--format", "safetensors", "--int8", *out], "--int8"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err and "Traceback" not in err


def test_long_videos_and_corpus_search_agree_across_backends(
    folder: Path, synthetic_qvh: dict, tmp_path: Path
) -> None:
    from sadetr.corpus import CorpusSearcher, build_index

    torch_p = Predictor.from_checkpoint(folder, device="cpu")
    onnx_p = Predictor.from_checkpoint(folder, device="cpu", backend="onnx")
    feats, text = _features(301, 1, (sum(torch_p.video_dims), torch_p.text_dim))
    a, b = (p.predict("q", feats, text_features=text) for p in (torch_p, onnx_p))
    assert a["num_windows"] == b["num_windows"] == 8
    assert [w[:2] for w in a["pred_relevant_windows"]] == [w[:2] for w in b["pred_relevant_windows"]]
    np.testing.assert_allclose(a["pred_saliency_scores"], b["pred_saliency_scores"], atol=1e-3)

    vids = sorted({json.loads(x)["vid"] for x in synthetic_qvh["val"].read_text().splitlines()})[:3]
    index = build_index(
        folder, synthetic_qvh["feat_root"], tmp_path / "idx", videos=vids, window=20, stride=10
    )
    hits = []
    for backend in ("torch", "onnx"):
        searcher = CorpusSearcher.open(index, folder, backend=backend)
        hits.append(searcher.search(query_feats=text, top=5, k_windows=6))
    assert [(h.video, h.start, h.end) for h in hits[0]] == [(h.video, h.start, h.end) for h in hits[1]]
    np.testing.assert_allclose([h.score for h in hits[0]], [h.score for h in hits[1]], rtol=1e-3)
