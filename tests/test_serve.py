"""HTTP service (`sadetr serve`): schemas, limits and 4xx answers in-process; a load test on a real server.

The model is a tiny untrained SA-DETR on tiny CLIP features (16-d video, 64-d text) with a tiny CLIP
that really encodes the uploaded test videos; `tiny_model_files` is reused by the browser test.
Tests marked `corpus` need `sadetr.corpus` (the search engine) and build a real index.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the sadetr[serve] extra")

from fastapi.testclient import TestClient

from sadetr.cli.main import main
from sadetr.serve.app import create_app
from sadetr.serve.limits import Limits
from sadetr.serve.service import MomentService, ServiceBusy, ServiceTimeout
from sadetr.video.tiny import TINY_CLIP_VIDEO_DIM

VIDEO_DIM = TINY_CLIP_VIDEO_DIM


def tiny_model_files(root: Path, video_format: str = "mp4") -> dict[str, Path]:
    """An untrained clip-only SA-DETR checkpoint, a tiny CLIP folder and a 5 s test video under `root`."""
    from sadetr.inference.tiny import save_tiny_clip_checkpoint
    from sadetr.video.tiny import make_tiny_clip, write_test_video

    save_tiny_clip_checkpoint(root / "m.ckpt")
    clip = make_tiny_clip(root / "clip", full_vocab=True)
    if video_format == "webm":
        video = write_webm(root / "paint.webm", seconds=5.0)
    else:
        video = write_test_video(root / "paint.mp4", n_frames=50, fps=10)  # 5 s -> 3 clips of 2 s
    return {"checkpoint": root / "m.ckpt", "clip": clip, "video": video}


def write_webm(path: Path, seconds: float, fps: int = 10, size: tuple[int, int] = (64, 48)) -> Path:
    """A VP8 WebM (playable in Chromium) whose frames fade from dark to light."""
    from fractions import Fraction

    import av

    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        n = round(seconds * fps)
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(
                np.full((h, w, 3), 20 + 200 * k // n, np.uint8), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return tiny_model_files(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def service(files) -> MomentService:
    svc = MomentService.load(files["checkpoint"], clip=files["clip"], limits=Limits(max_video_s=60))
    yield svc
    svc.close()


@pytest.fixture()
def client(service, tmp_path, monkeypatch) -> TestClient:
    """A client whose server writes its temp files under `tmp_path/tmp` (checked empty afterwards)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        yield c
    assert list(tmp.iterdir()) == [], "uploads must be deleted after use"


def post_video(client: TestClient, video: Path, query: str = "the dog", **data) -> object:
    with open(video, "rb") as fh:
        return client.post(
            "/v1/moments", data={"query": query, **data}, files={"video": (video.name, fh, "video/mp4")}
        )


def one_line_error(resp, status: int, *fragments: str) -> str:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    for f in fragments:
        assert f in detail, detail
    return detail


# ---------------------------------------------------------------- answers


def test_healthz_describes_model_and_limits(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["checkpoint"] == "m.ckpt"
    assert body["video_sources"] == ["clip_features"] and body["feature_dim"] == VIDEO_DIM
    assert body["accepts_video"] and body["accepts_text"] and body["index"] is None
    assert body["limits"]["max_video_s"] == 60


def test_moments_of_an_uploaded_video_equal_the_predictor(client, service, files):
    resp = post_video(client, files["video"], qid="7", vid="paint")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    direct = service.predictor.predict("the dog", files["video"])
    assert body["qid"] == "7" and body["vid"] == "paint" and body["query"] == "the dog"
    assert body["pred_relevant_windows"] == direct["pred_relevant_windows"]
    assert body["pred_saliency_scores"] == direct["pred_saliency_scores"]
    assert len(body["pred_saliency_scores"]) == 3 and body["duration"] == pytest.approx(5.0, abs=0.11)
    scores = [w[2] for w in body["pred_relevant_windows"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= e <= body["duration"] + 1e-6 for s, e, _ in body["pred_relevant_windows"])


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_moments_of_uploaded_features_equal_the_predictor(client, service, kind):
    feats = np.random.default_rng(0).normal(size=(30, VIDEO_DIM)).astype(np.float32)
    data = npy_bytes(feats) if kind == "npy" else npz_bytes(features=feats)
    text = np.random.default_rng(1).normal(size=(6, 64)).astype(np.float32)
    resp = client.post(
        "/v1/moments",
        data={"query": "a cat runs", "max_moments": "2"},
        files={"features": (f"f.{kind}", data), "text_features": ("t.npy", npy_bytes(text))},
    )
    assert resp.status_code == 200, resp.text
    direct = service.predictor.predict("a cat runs", feats, text_features=text, max_moments=2)
    assert resp.json()["pred_relevant_windows"] == direct["pred_relevant_windows"]
    assert len(resp.json()["pred_relevant_windows"]) == 2
    assert resp.json()["duration"] == pytest.approx(60.0)  # 30 clips x 2 s


def test_openapi_documents_the_endpoints_and_schemas(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/moments", "/v1/search", "/healthz"} <= set(spec["paths"])
    assert {"Moments", "SearchRequest", "SearchResponse", "Health", "Error"} <= set(
        spec["components"]["schemas"]
    )
    assert "413" in spec["paths"]["/v1/moments"]["post"]["responses"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert "cdn.jsdelivr" not in docs.text and "https://" not in docs.text  # the page works offline
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


# ---------------------------------------------------------------- bad requests: 4xx with one line


def _bad_features() -> dict[str, tuple[bytes, str]]:
    ok = np.ones((5, VIDEO_DIM), np.float32)
    nan = ok.copy()
    nan[2, 3] = np.nan
    return {
        "wrong dim": (npy_bytes(np.ones((5, 7), np.float32)), r"expected shape [L > 0, 16], got [5, 7]"),
        "1-D": (npy_bytes(np.ones(16, np.float32)), "got [16]"),
        "NaN": (npy_bytes(nan), "NaN"),
        "pickle": (npy_bytes(np.array([{"a": 1}], dtype=object)), "never loaded"),
        "garbage": (b"this is not numpy", "not a readable"),
        "npz wrong key": (npz_bytes(a=ok, b=ok), "expected 'features'"),
        "strings": (npy_bytes(np.array([["a"] * 16])), "numeric"),
    }


@pytest.mark.parametrize("case", list(_bad_features()))
def test_bad_feature_files_get_422_naming_the_problem(client, case):
    data, fragment = _bad_features()[case]
    resp = client.post("/v1/moments", data={"query": "q"}, files={"features": ("f.npy", data)})
    one_line_error(resp, 422, "features", fragment)


def test_bad_queries_and_inputs_get_4xx(client, files):
    ok = npy_bytes(np.ones((5, VIDEO_DIM), np.float32))
    one_line_error(client.post("/v1/moments", files={"features": ("f.npy", ok)}), 422, "query")
    one_line_error(
        client.post("/v1/moments", data={"query": "x" * 501}, files={"features": ("f.npy", ok)}),
        422,
        "query",
        "at most 500",
    )
    one_line_error(client.post("/v1/moments", data={"query": "q"}), 422, "exactly one of")
    with open(files["video"], "rb") as fh:
        both = client.post(
            "/v1/moments", data={"query": "q"}, files={"video": ("v.mp4", fh), "features": ("f.npy", ok)}
        )
    one_line_error(both, 422, "exactly one of")
    garbage = client.post(
        "/v1/moments", data={"query": "q"}, files={"video": ("../../etc/passwd", b"not a video" * 100)}
    )
    one_line_error(garbage, 422, "video", "not a readable video")
    one_line_error(
        client.post("/v1/moments", data={"query": "q", "duration": "-3"}, files={"features": ("f.npy", ok)}),
        422,
        "duration",
    )
    one_line_error(client.post("/v1/search", json={"query": "q", "top": 0}), 422, "top")
    one_line_error(
        client.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"}), 422
    )
    one_line_error(client.post("/v1/search", json={"query": "q"}), 404, "--index")


def test_limits_on_size_and_duration(files, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    svc = MomentService.load(
        files["checkpoint"], clip=files["clip"], limits=Limits(max_upload_mb=0.01, max_video_s=4)
    )
    try:
        with TestClient(create_app(svc), raise_server_exceptions=False) as c:
            big = npy_bytes(np.ones((200, VIDEO_DIM), np.float32))  # 12.9 kB > 10.2 kB
            one_line_error(
                c.post("/v1/moments", data={"query": "q"}, files={"features": ("f.npy", big)}), 413, "limit"
            )
            one_line_error(
                c.post("/v1/moments", data={"query": "q"}, files={"features": ("f.npy", b"x" * 3_000_000)}),
                413,
                "limit",
            )
            bomb = io.BytesIO()
            np.savez_compressed(bomb, features=np.zeros((100_000, VIDEO_DIM), np.float32))  # 6.4 MB -> 6 kB
            assert len(bomb.getvalue()) < 2 * 10_485  # the upload itself is small
            one_line_error(
                c.post("/v1/moments", data={"query": "q"}, files={"features": ("f.npz", bomb.getvalue())}),
                413,
                "uncompressed",
            )
            chunked = c.post(  # no Content-Length: counted as it streams
                "/v1/moments",
                content=(b"x" * 65536 for _ in range(40)),
                headers={"content-type": "multipart/form-data; boundary=abc"},
            )
            one_line_error(chunked, 413, "limit")
            one_line_error(post_video(c, files["video"]), 422, "5 s long", "at most 4 s")
            three = npy_bytes(np.ones((3, VIDEO_DIM), np.float32))  # 6 s of clips
            one_line_error(
                c.post("/v1/moments", data={"query": "q"}, files={"features": ("f.npy", three)}),
                422,
                "at most 4 s",
            )
    finally:
        svc.close()
    assert list(tmp_path.iterdir()) == []


def test_a_server_without_backbones_asks_for_features(files):
    svc = MomentService.load(files["checkpoint"])  # no --clip
    try:
        with TestClient(create_app(svc)) as c:
            assert not c.get("/healthz").json()["accepts_video"]
            one_line_error(post_video(c, files["video"]), 422, "send features")
            feats = npy_bytes(np.ones((5, VIDEO_DIM), np.float32))
            one_line_error(
                c.post("/v1/moments", data={"query": "q"}, files={"features": ("f.npy", feats)}),
                422,
                "text_features",
            )
            text = npy_bytes(np.ones((4, 64), np.float32))
            ok = c.post(
                "/v1/moments",
                data={"query": "q"},
                files={"features": ("f.npy", feats), "text_features": ("t", text)},
            )
            assert ok.status_code == 200 and len(ok.json()["pred_saliency_scores"]) == 5
    finally:
        svc.close()


def test_an_internal_error_is_a_500_with_one_line_and_no_traceback(service, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecret traceback line")

    monkeypatch.setattr(service.predictor, "predict", broken)  # fault injection: no real bug to trigger
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        resp = c.post(
            "/v1/moments", data={"query": "q"}, files={"features": ("f.npy", npy_bytes(np.ones((5, 16))))}
        )
    assert one_line_error(resp, 500) == "internal error (logged on the server)"


# ---------------------------------------------------------------- the queue


def test_the_queue_refuses_when_full_and_drops_requests_past_their_deadline(service):
    svc = MomentService(service.predictor, Limits(max_pending=2, timeout_s=0.5))
    gate = threading.Event()
    try:
        first = svc._enqueue(gate.wait, (5,), {})  # occupies the model thread
        second = svc._enqueue(time.monotonic, (), {})  # waits
        with pytest.raises(ServiceBusy, match="2 requests are already waiting"):
            svc.call(time.monotonic)
        with pytest.raises(ServiceBusy):
            import asyncio

            asyncio.run(svc.submit(time.monotonic))
        time.sleep(0.6)
        gate.set()
        assert first.result(5) is True
        with pytest.raises(ServiceTimeout, match="waited longer"):
            second.result(5)  # its deadline passed while it waited: never run
        assert svc.call(lambda: 42) == 42  # the queue drained
        with pytest.raises(ServiceTimeout, match=r"took longer than 0\.5 s"):
            svc.call(time.sleep, 1.0)
    finally:
        svc.close()


def test_cli_refuses_bad_limits_and_paths_with_exit_code_2(files, tmp_path, capsys):
    code = main(["serve", "--checkpoint", str(files["checkpoint"]), "--max-upload-mb", "0"])
    assert code == 2 and "--max-upload-mb: must be a finite number in (0, " in capsys.readouterr().err
    code = main(["app", "--checkpoint", str(files["checkpoint"]), "--videos", str(tmp_path / "nowhere")])
    assert code == 2 and "--videos: no such folder" in capsys.readouterr().err
    code = main(["serve", "--checkpoint", str(files["checkpoint"]), "--index", str(tmp_path / "nowhere")])
    assert code == 2 and "--index: no such index directory" in capsys.readouterr().err
    code = main(["serve", "--checkpoint", str(tmp_path / "missing.ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and "missing.ckpt" in err and "Traceback" not in err


# ---------------------------------------------------------------- corpus search (needs sadetr.corpus)


def build_tiny_index(files: dict[str, Path], root: Path, n_videos: int = 4) -> Path:
    """An index of `n_videos` noisy copies of the test video's CLIP features under `root`."""
    from sadetr.corpus.index import build_index
    from sadetr.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(files["checkpoint"], device="cpu", clip=files["clip"])
    feat_root = root / "features"
    (feat_root / "clip_features").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n_videos):
        feats = predictor.encode_video(files["video"]).feats + rng.normal(0, 0.1, (3, VIDEO_DIM))
        np.savez(feat_root / "clip_features" / f"vid{k}.npz", features=feats.astype(np.float32))
    return build_index(files["checkpoint"], feat_root, root / "index")


@pytest.fixture(scope="module")
def tiny_index(files, tmp_path_factory) -> Path:
    pytest.importorskip("sadetr.corpus", reason="needs sadetr.corpus (the corpus search engine)")
    return build_tiny_index(files, tmp_path_factory.mktemp("index"))


@pytest.mark.corpus
def test_search_endpoint_returns_the_searchers_ranked_hits_with_readable_scores(files, tiny_index):
    from sadetr.corpus import CorpusSearcher

    svc = MomentService.load(files["checkpoint"], clip=files["clip"], index=tiny_index)
    try:
        with TestClient(create_app(svc)) as c:
            assert c.get("/healthz").json()["index"]["videos"] == 4
            resp = c.post("/v1/search", json={"query": "the dog", "top": 3})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            hits = body["hits"]
            searcher = CorpusSearcher.open(tiny_index, files["checkpoint"], clip_dir=files["clip"])
            direct = searcher.search("the dog", top=3)
            assert [(h["video"], h["start"], h["end"]) for h in hits] == [
                (h.video, h.start, h.end) for h in direct
            ]
            assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
            assert body["alpha"] == searcher.alpha
            for h in hits:  # log_score = ln(score) = alpha (s - 1) + ln q, by hand
                expected = body["alpha"] * (h["retrieval_score"] - 1) + np.log(h["quality"])
                assert h["log_score"] == pytest.approx(expected, rel=1e-6, abs=1e-6)
                assert h["score"] == pytest.approx(np.exp(h["log_score"]), rel=1e-9)
                assert h["log_score"] <= 0 and -1 <= h["retrieval_score"] <= 1 and 0 <= h["quality"] <= 1
            one_line_error(c.post("/v1/search", json={"query": "x" * 600}), 422, "query")
    finally:
        svc.close()


@pytest.mark.corpus
def test_search_by_query_features_equals_the_cli_and_needs_no_clip(files, tiny_index, tmp_path, capsys):
    """`/v1/search` with `query_features` on a server without --clip answers what `sadetr search
    --query-features` prints; a sentence there is refused in one line, not a 500."""
    text = np.random.default_rng(3).normal(size=(5, 64)).astype(np.float32)
    np.savez(tmp_path / "q.npz", last_hidden_state=text)
    argv = ["search", "--index", str(tiny_index), "--query-features", str(tmp_path / "q.npz")]
    assert main([*argv, "--top", "3", "--format", "jsonl"]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    svc = MomentService.load(files["checkpoint"], index=tiny_index)  # no --clip
    try:
        with TestClient(create_app(svc)) as c:
            resp = c.post("/v1/search", json={"query_features": text.tolist(), "top": 3})
            assert resp.status_code == 200, resp.text
            hits = resp.json()["hits"]
            assert [(h["video"], h["start"], h["end"]) for h in hits] == [
                (h["video"], h["start"], h["end"]) for h in cli
            ]
            assert [h["log_score"] for h in hits] == pytest.approx([h["log_score"] for h in cli])
            one_line_error(c.post("/v1/search", json={"query": "the dog"}), 422, "query_features", "--clip")
            one_line_error(
                c.post("/v1/search", json={"query": "q", "query_features": text.tolist()}), 422, "exactly one"
            )
            one_line_error(c.post("/v1/search", json={"top": 3}), 422, "exactly one")
            one_line_error(
                c.post("/v1/search", json={"query_features": text[:, :10].tolist()}),
                422,
                "[1 <= L_t <= 1024, 64]",
            )
            one_line_error(
                c.post("/v1/search", json={"query_features": [[1.0, 2.0], [3.0]]}), 422, "query_features"
            )
            nan = b'{"query_features": [[NaN' + b", 0.5" * 63 + b"]]}"
            one_line_error(
                c.post("/v1/search", content=nan, headers={"content-type": "application/json"}), 422, "NaN"
            )
            one_line_error(
                c.post("/v1/search", json={"query_features": text.tolist(), "top": 1001}), 422, "top"
            )
    finally:
        svc.close()


# ---------------------------------------------------------------- load: a real server under 8 clients


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def test_load_8_clients_no_failures_and_stable_memory(files, tmp_path):
    """8 concurrent httpx clients for SADETR_LOAD_SECONDS (default 20) against `sadetr serve` in a subprocess.

    Every 4th request uploads the 5 s video (CLIP runs), the others upload 30 clips of features.
    Latency and throughput are recorded (SADETR_LOAD_REPORT or tmp_path/load.json), not asserted.
    """
    import httpx

    seconds = float(os.environ.get("SADETR_LOAD_SECONDS", "20"))
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "sadetr", "serve", "--checkpoint", str(files["checkpoint"])]
    cmd += ["--clip", str(files["clip"]), "--port", str(port), "--threads", "1"]
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)

        video = files["video"].read_bytes()
        feats = npy_bytes(np.random.default_rng(0).normal(size=(30, VIDEO_DIM)).astype(np.float32))
        results: list[tuple[str, int, float]] = []  # (kind, status, seconds)
        errors: list[str] = []
        rss: list[tuple[float, float]] = []
        t0 = time.monotonic()
        stop = t0 + seconds

        def client_loop(k: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                i = 0
                while time.monotonic() < stop:
                    kind = "video" if (i + k) % 4 == 0 else "features"
                    upload = (
                        {"video": ("v.mp4", video)} if kind == "video" else {"features": ("f.npy", feats)}
                    )
                    start = time.perf_counter()
                    try:
                        r = c.post("/v1/moments", data={"query": f"the dog {i}"}, files=upload)
                        results.append((kind, r.status_code, time.perf_counter() - start))
                        if r.status_code != 200:
                            errors.append(f"{r.status_code} {r.text[:200]}")
                    except httpx.HTTPError as err:
                        errors.append(repr(err))
                    i += 1

        def sample_memory() -> None:
            while time.monotonic() < stop:
                rss.append((time.monotonic() - t0, _rss_mib(server.pid)))
                time.sleep(0.5)

        threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(8)]
        threads.append(threading.Thread(target=sample_memory))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()

    assert not errors, errors[:5]
    assert len(results) >= 16
    lat = sorted(r[2] for r in results)
    report = {
        "clients": 8,
        "seconds": round(wall, 1),
        "requests": len(results),
        "video_requests": sum(r[0] == "video" for r in results),
        "requests_per_s": round(len(results) / wall, 2),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
        "rss_mib_first": round(rss[0][1], 1),
        "rss_mib_max": round(max(m for _, m in rss), 1),
        "rss_mib_last": round(rss[-1][1], 1),
        "rss_mib_every_2s": [round(m) for t, m in rss[::4]],
        "cpu_count": os.cpu_count(),
    }
    out = Path(os.environ.get("SADETR_LOAD_REPORT", tmp_path / "load.json"))
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("load test:", json.dumps(report))
    # memory is stable: after the first third (warm-up: allocator, caches) RSS grows by < 64 MiB
    warm = [m for t, m in rss if t >= wall / 3]
    assert warm and max(warm) - warm[0] < 64, rss


# ---------------------------------------------------------------- hostile inputs (issue 28): 4xx, one line


def _announcing_npy(rows: int, dim: int = VIDEO_DIM) -> bytes:
    """A .npy whose header announces `rows` x `dim` float32 but holds one row of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    return buf.getvalue() + np.ones(dim, np.float32).tobytes()


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_a_header_announcing_2_to_the_40_rows_is_a_422_not_a_500(client, container):
    data = _announcing_npy(2**40)
    if container == "npz":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("features.npy", data)
        data = buf.getvalue()
    resp = client.post("/v1/moments", data={"query": "q"}, files={"features": (f"f.{container}", data)})
    one_line_error(resp, 422, "features", "announces shape [1099511627776, 16]")


def test_a_text_file_is_refused_without_suggesting_to_load_it_unsafely(client):
    resp = client.post(
        "/v1/moments", data={"query": "q"}, files={"features": ("f.npy", b"0.1 0.2 0.3\n0.4 0.5 0.6\n")}
    )
    detail = one_line_error(resp, 422, "features", "not a readable .npy/.npz array")
    assert "pickle" not in detail and "unsafe" not in detail, detail


def test_an_unreadable_video_is_refused_without_showing_a_server_path(client):
    garbage = client.post("/v1/moments", data={"query": "q"}, files={"video": ("v.mp4", b"\x00junk" * 999)})
    detail = one_line_error(garbage, 422, "video", "not a readable video")
    assert tempfile.gettempdir() not in detail and "sadetr-serve" not in detail and "upload.mp4" not in detail


@pytest.mark.parametrize("query", ["\u200b", " \u200b\ufeff ", "\u200d\u2060", "\u00a0"])
def test_a_query_empty_once_normalised_is_refused(client, query):
    ok = npy_bytes(np.ones((5, VIDEO_DIM), np.float32))
    resp = client.post("/v1/moments", data={"query": query}, files={"features": ("f.npy", ok)})
    one_line_error(resp, 422, "query", "must not be empty")


@pytest.mark.parametrize(
    ("duration", "fragment"),
    [
        ("1e6", "does not agree with the features"),  # 30 clips = 60 s of features
        ("120", "does not agree"),
        ("57.9", "does not agree"),
        ("nan", "duration"),
        ("inf", "duration"),
        ("-1", "duration"),
        ("0", "duration"),
    ],
)
def test_a_duration_that_contradicts_the_features_is_refused(client, duration, fragment):
    feats = npy_bytes(np.ones((30, VIDEO_DIM), np.float32))
    resp = client.post(
        "/v1/moments", data={"query": "q", "duration": duration}, files={"features": ("f.npy", feats)}
    )
    one_line_error(resp, 422, fragment)


@pytest.mark.parametrize("duration", ["59", "60", "61.5"])
def test_a_duration_within_one_clip_of_the_features_is_used(client, duration):
    feats = npy_bytes(np.ones((30, VIDEO_DIM), np.float32))
    resp = client.post(
        "/v1/moments", data={"query": "q", "duration": duration}, files={"features": ("f.npy", feats)}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["duration"] == pytest.approx(float(duration))


def test_a_video_duration_must_agree_with_the_video(client, files):
    one_line_error(post_video(client, files["video"], duration="50"), 422, "does not agree with the video")
    assert post_video(client, files["video"], duration="5").status_code == 200


def test_moments_from_query_features_alone(client, service):
    feats = np.random.default_rng(0).normal(size=(10, VIDEO_DIM)).astype(np.float32)
    text = np.random.default_rng(1).normal(size=(6, 64)).astype(np.float32)
    resp = client.post(
        "/v1/moments",
        files={"features": ("f.npy", npy_bytes(feats)), "text_features": ("t.npy", npy_bytes(text))},
    )
    assert resp.status_code == 200, resp.text
    direct = service.predictor.predict("x", feats, text_features=text)
    assert (
        resp.json()["query"] == "" and resp.json()["pred_relevant_windows"] == direct["pred_relevant_windows"]
    )
    nan = text.copy()
    nan[0, 0] = np.nan
    resp = client.post(
        "/v1/moments",
        files={"features": ("f.npy", npy_bytes(feats)), "text_features": ("t.npy", npy_bytes(nan))},
    )
    one_line_error(resp, 422, "text_features", "NaN")


# ---------------------------------------------------------------- start: refused in one line; the address


def test_serve_refuses_backbones_it_cannot_use_before_listening(files, tmp_path, capsys, monkeypatch):
    from sadetr.video.tiny import make_tiny_clip

    monkeypatch.chdir(tmp_path)  # no runs/demo here: `serve` without a model is an error

    wide = make_tiny_clip(tmp_path / "clip32", embed_dim=32, full_vocab=True)
    capsys.readouterr()
    base = ["serve", "--checkpoint", str(files["checkpoint"]), "--port", str(_free_port())]
    cases = [
        (
            ["--clip", str(wide)],
            "--clip: this CLIP gives 32-d image features, the checkpoint was trained on 16-d",
        ),
        (
            ["--clip", str(files["clip"]), "--slowfast", "sf.pyth"],
            "--slowfast: this checkpoint does not use SlowFast",
        ),
        (["--demo", str(tmp_path / "no-demo")], "--demo: "),
        (["--host", "no such host!"], "--host: not an address of this machine"),
    ]
    for extra, fragment in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err  # (transformers' progress bars while CLIP loads come before it)
        last = err.splitlines()[-1]
        assert last.startswith("sadetr serve: error: ") and fragment in last and "Traceback" not in err, err
    assert main(["serve", "--port", "8000"]) == 2
    assert "give --checkpoint CKPT, or --demo" in capsys.readouterr().err


def test_a_non_loopback_address_is_accepted_with_a_warning(caplog):
    from sadetr.cli.commands.serve import check_host

    with caplog.at_level("WARNING"):
        check_host("127.0.0.1", "serve")
        check_host("localhost", "serve")
    assert caplog.records == []
    with caplog.at_level("WARNING"):
        check_host("0.0.0.0", "serve")
    assert len(caplog.records) == 1 and "no authentication" in caplog.records[0].getMessage()


# ---------------------------------------------------------------- uploads of killed servers


def test_stale_upload_folders_are_removed_and_live_ones_kept(tmp_path):
    import fcntl

    from sadetr.serve.tempdirs import ProcessTempDir, remove_stale

    stale = tmp_path / "sadetr-serve-999999-abc"
    stale.mkdir()
    (stale / ".lock").touch()
    (stale / "request-x").mkdir()
    (stale / "request-x" / "upload.mp4").write_bytes(b"client bytes")
    live = tmp_path / "sadetr-serve-1-def"
    live.mkdir()
    with open(live / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a live server holds its lock
        other = tmp_path / "unrelated"
        other.mkdir()
        with ProcessTempDir("sadetr-serve-", base=tmp_path) as mine:
            assert not stale.exists() and live.is_dir() and other.is_dir() and mine.is_dir()
            assert remove_stale("sadetr-serve-", base=tmp_path) == []  # its own folder is locked too
        assert not mine.exists()
    assert remove_stale("sadetr-serve-", base=tmp_path) == [live]  # its server is gone now


def test_after_a_kill_9_the_next_server_removes_the_uploads_left(files, tmp_path):
    """A real `sadetr serve` killed with SIGKILL leaves its folder; the next one removes it at start."""
    import httpx

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}

    def start() -> tuple[subprocess.Popen, str]:
        port = _free_port()
        cmd = [sys.executable, "-m", "sadetr", "serve", "--checkpoint", str(files["checkpoint"])]
        proc = subprocess.Popen(
            [*cmd, "--port", str(port), "--threads", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    return proc, base
            except httpx.TransportError:
                time.sleep(0.3)

    first, _ = start()
    try:
        left = [p for p in tmp.iterdir() if p.name.startswith("sadetr-serve-")]
        assert len(left) == 1
        (left[0] / "request-abc").mkdir()
        (left[0] / "request-abc" / "upload.mp4").write_bytes(b"a client's video")  # a request in flight
    finally:
        first.kill()  # SIGKILL: no cleanup runs
        first.wait(15)
    assert (left[0] / "request-abc" / "upload.mp4").is_file()
    second, _ = start()
    try:
        assert not left[0].exists()
        assert len([p for p in tmp.iterdir() if p.name.startswith("sadetr-serve-")]) == 1  # its own
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(15)
    assert not any(p.name.startswith("sadetr-serve-") for p in tmp.iterdir())  # removed on a normal exit


@pytest.mark.corpus
def test_the_load_check_tool_sends_every_kind_and_finds_no_5xx(tool, capsys):
    """tools/load_check.py (docs/serve.md's figures) at a small size: every kind of request is sent and
    answered with the status it expects; its verdict is the exit status."""
    pytest.importorskip("faiss", reason="its server has an index")
    assert tool("load_check").main(["--clients", "2", "--requests", "13"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["requests"] == summary["answered"] == 26
    assert summary["server_errors_5xx"] == summary["lost"] == summary["unexpected_status"] == 0
    for kind in ("bad: .npy header of 2^40 rows", "bad: upload over the limit", "search: query features"):
        assert kind in out
