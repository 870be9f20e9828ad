"""`serve` on the onnxruntime backend with its dynamic batcher: 8 concurrent clients get the answers the
torch backend gives them one by one, in fewer forward passes than requests (reported in /healthz)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sadetr.cli.main import main
from sadetr.inference.tiny import save_tiny_clip_checkpoint
from sadetr.serve.app import create_app
from sadetr.serve.limits import Limits
from sadetr.serve.service import MomentService
from sadetr.video.tiny import TINY_CLIP_VIDEO_DIM

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _npy(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, its model folder with model.onnx) of an untrained clip-feature SA-DETR (max 20 clips)."""
    root = tmp_path_factory.mktemp("serve_onnx")
    ckpt = save_tiny_clip_checkpoint(root / "m.ckpt", "data.max_v_l=20")
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(root / "model")]) == 0
    return ckpt, root / "model"


def test_eight_concurrent_clients_get_the_torch_answers_in_merged_runs(model) -> None:
    ckpt, folder = model
    rng = np.random.default_rng(0)
    requests = [
        (
            rng.normal(size=(int(rng.integers(5, 50)), TINY_CLIP_VIDEO_DIM)).astype(np.float32),
            rng.normal(size=(int(rng.integers(2, 12)), 64)).astype(np.float32),
        )
        for _ in range(16)
    ]
    reference = MomentService.load(ckpt, limits=Limits(max_video_s=600))
    onnx = MomentService.load(folder, limits=Limits(max_video_s=600), backend="onnx", max_wait_ms=50.0)
    try:
        expected = [reference.predictor.predict("q", f, text_features=t) for f, t in requests]
        with TestClient(create_app(onnx)) as client:
            barrier = threading.Barrier(8)

            def ask(i: int) -> dict:
                if i < 8:
                    barrier.wait()  # the first 8 arrive together
                feats, text = requests[i]
                resp = client.post(
                    "/v1/moments",
                    data={"query": "q"},
                    files={"features": ("f.npy", _npy(feats)), "text_features": ("t.npy", _npy(text))},
                )
                assert resp.status_code == 200, resp.text
                return resp.json()

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(ask, range(len(requests))))
            health = client.get("/healthz").json()
    finally:
        reference.close()
        onnx.close()
    for got, want in zip(answers, expected):
        assert [w[:2] for w in got["pred_relevant_windows"]] == [w[:2] for w in want["pred_relevant_windows"]]
        np.testing.assert_allclose(
            [w[2] for w in got["pred_relevant_windows"]],
            [w[2] for w in want["pred_relevant_windows"]],
            atol=1e-3,
        )
        np.testing.assert_allclose(got["pred_saliency_scores"], want["pred_saliency_scores"], atol=1e-3)
    assert health["backend"] == "onnx"
    stats = health["batching"]
    assert stats["max_batch"] == 16 and stats["requests"] == len(requests)
    assert stats["runs"] < stats["requests"] and stats["max_rows_per_run"] > 1


def test_serve_refuses_an_onnx_backend_without_a_model_folder(model, capsys) -> None:
    ckpt, _ = model
    assert main(["serve", "--checkpoint", str(ckpt), "--backend", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert "sadetr export" in err and "\n" not in err
    assert main(["serve", "--checkpoint", str(ckpt), "--max-batch", "0"]) == 2
    assert "--max-batch" in capsys.readouterr().err
