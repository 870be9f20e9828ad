"""The demo of `sadetr demo` as an input of `search`, `serve` and `app` (`--demo DIR`), without weights.

`mini_demo` is a real `sadetr demo` run at a small size (12 val queries, 1 epoch: seconds), shared by
the browser test (tests/test_webapp_browser.py). Also here: optional packages checked first (a missing
faiss ends `sadetr index` before any work and makes the demo skip its corpus step).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import _once
from sadetr.cli.main import main
from sadetr.core.errors import ConfigError, DataError
from sadetr.corpus.demo_library import DemoLibrary

MINI_DEMO = ["--n-train", "32", "--n-val", "12", "--set", "train.epochs=1"]


def make_mini_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sadetr demo --out DIR` at a small size, once per session."""
    pytest.importorskip("faiss", reason="the demo's corpus step needs faiss (sadetr[search])")

    def build(out: Path) -> None:
        assert main(["demo", "--out", str(out), *MINI_DEMO]) == 0

    return _once(tmp_path_factory, "mini_demo", build)


@pytest.fixture(scope="session")
def mini_demo(tmp_path_factory) -> Path:
    return make_mini_demo(tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the query catalogue


@pytest.mark.corpus
def test_a_typed_demo_sentence_maps_to_its_own_query_features(mini_demo):
    from sadetr.data.features import TEXT_KEY, load_feature_file

    demo = DemoLibrary.open(mini_demo)
    assert len(demo.queries) == 12 and "SYNTHETIC" in demo.describe()
    q = demo.queries[3]
    stored = load_feature_file(
        mini_demo / "data" / "features" / "clip_text_features" / f"qid{q.qid}.npz", TEXT_KEY, 512
    )
    first = next(x for x in demo.queries if x.query == q.query)  # equal sentences: the first one's features
    if first is not q:
        stored = load_feature_file(
            mini_demo / "data" / "features" / "clip_text_features" / f"qid{first.qid}.npz", TEXT_KEY, 512
        )
    for typed in (
        q.query,
        q.query.upper(),
        "  " + q.query.rstrip(".") + "  ",
        q.query.replace(" ", "\u200b "),
    ):
        np.testing.assert_array_equal(demo.features(typed), stored)
    with pytest.raises(DataError, match="is not one of the 12 queries of this synthetic demo"):
        demo.features("a man opens the door")


def test_a_missing_demo_says_how_to_make_it(tmp_path):
    with pytest.raises(ConfigError, match=r"--demo: no demo in .*missing checkpoint.*run `make demo`"):
        DemoLibrary.open(tmp_path / "nothing")


# ---------------------------------------------------------------- search --demo


@pytest.mark.corpus
def test_search_on_the_demo_by_a_typed_sentence_equals_search_by_its_features(mini_demo, capsys):
    demo = DemoLibrary.open(mini_demo)
    q = demo.queries[0]
    assert main(["search", "--demo", str(mini_demo), "--query", q.query.upper(), "--format", "jsonl"]) == 0
    captured = capsys.readouterr()
    typed = [json.loads(line) for line in captured.out.splitlines()]
    assert "SYNTHETIC DEMO" in captured.err
    qfile = mini_demo / "data" / "features" / "clip_text_features" / f"qid{q.qid}.npz"
    argv = ["search", "--index", str(mini_demo / "corpus" / "index"), "--query-features", str(qfile)]
    assert main([*argv, "--format", "jsonl"]) == 0
    direct = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert typed == direct and 1 <= len(typed) <= 10
    for h in typed:  # readable: log_score = alpha (s - 1) + ln q, by hand
        assert h["log_score"] <= 0 and h["score"] == pytest.approx(np.exp(h["log_score"]), rel=1e-9)

    assert main(["search", "--demo", str(mini_demo), "--query", q.query]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["rank", "video", "start_s", "end_s", "log_score", "cosine", "quality"]
    assert float(table[1].split()[4]) == pytest.approx(typed[0]["log_score"], abs=0.006)

    assert main(["search", "--demo", str(mini_demo), "--query", "a man opens the door"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not one of the 12 queries" in err.splitlines()[-1]


@pytest.mark.corpus
def test_after_make_demo_search_without_an_index_runs_on_the_demo(mini_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sentence = DemoLibrary.open(mini_demo).queries[1].query
    assert main(["search", "--query", sentence]) == 2  # no runs/demo yet: an error, one line
    assert "give exactly one of --index and --demo" in capsys.readouterr().err
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(mini_demo)  # where `make demo` writes it
    assert main(["search", "--query", sentence, "--format", "jsonl"]) == 0
    default = capsys.readouterr().out
    assert main(["search", "--demo", str(mini_demo), "--query", sentence, "--format", "jsonl"]) == 0
    assert default == capsys.readouterr().out and default


# ---------------------------------------------------------------- serve --demo, as curl would


@pytest.mark.corpus
def test_serve_on_the_demo_answers_a_typed_sentence_over_http(mini_demo, tmp_path):
    import httpx

    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "sadetr", "serve", "--demo", str(mini_demo), "--port", str(port)]
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen([*cmd, "--threads", "1"], stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
            assert time.monotonic() < deadline
        health = httpx.get(f"{base}/healthz").json()
        assert health["demo"]["synthetic"] and health["demo"]["queries"] == 12 and not health["accepts_text"]
        listed = httpx.get(f"{base}/v1/demo/queries").json()
        assert "SYNTHETIC" in listed["note"] and len(listed["queries"]) == 12
        sentence = listed["queries"][0]["query"]
        resp = httpx.post(f"{base}/v1/search", json={"query": sentence.upper(), "top": 5}, timeout=60)
        assert resp.status_code == 200, resp.text
        hits = resp.json()["hits"]
        assert len(hits) == 5 and resp.json()["query"] == sentence.upper()
        windows = [(h["video"], h["start"], h["end"]) for h in hits]
        assert len(set(windows)) == len(windows)  # no window twice
        assert all(h["log_score"] <= 0 and 0 <= h["quality"] <= 1 for h in hits)
        bad = httpx.post(f"{base}/v1/search", json={"query": "a man opens the door"}, timeout=60)
        assert bad.status_code == 422 and "not one of the 12 queries" in bad.json()["detail"]
        # /v1/moments on one demo video's features (its sources concatenated) and a demo sentence
        vid = listed["queries"][0]["vid"]
        parts = [
            np.load(mini_demo / "data" / "features" / s / f"{vid}.npz")["features"]
            for s in health["video_sources"]
        ]
        feats = np.concatenate(parts, axis=1).astype(np.float32)
        buf = io.BytesIO()
        np.save(buf, feats)
        resp = httpx.post(
            f"{base}/v1/moments",
            data={"query": sentence},
            files={"features": ("f.npy", buf.getvalue())},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        moments = resp.json()
        assert len(moments["pred_saliency_scores"]) == len(feats)
        assert all(
            0 <= s < e <= moments["duration"] + 1e-6 and 0 <= c <= 1
            for s, e, c in moments["pred_relevant_windows"]
        )
        assert "SYNTHETIC DEMO" in (tmp_path / "serve.log").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------- optional packages, checked first


def test_index_without_faiss_stops_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if not installed: find_spec -> None
    argv = ["index", "--checkpoint", str(tmp_path / "nowhere.ckpt"), "--features", str(tmp_path)]
    assert main([*argv, "--out", str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err
    assert err == "sadetr index: error: sadetr index needs faiss: pip install 'sadetr[search]'\n"
    assert not (tmp_path / "idx").exists()  # (a checkpoint error would have come first otherwise)


@pytest.mark.parametrize(
    ("command", "module", "extra"),
    [
        (["search", "--index", "IDX", "--query-features", "q.npz"], "faiss", "search"),
        (
            ["evaluate-corpus", "--index", "I", "--annotations", "a", "--text-features", "t"],
            "faiss",
            "search",
        ),
        (["cut", "v.mp4", "--start", "0", "--end", "1", "-o", "c.mp4"], "av", "video"),
        (["serve", "--checkpoint", "m.ckpt"], "fastapi", "serve"),
        (["app", "--checkpoint", "m.ckpt"], "gradio", "app"),
    ],
)
def test_commands_name_the_extra_of_a_missing_package(command, module, extra, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"needs {module}: pip install 'sadetr[{extra}]'" in err, err


def test_the_demo_reports_and_skips_its_corpus_step_without_faiss(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)
    out = tmp_path / "demo"
    assert (
        main(["demo", "--out", str(out), "--n-train", "16", "--n-val", "4", "--set", "train.epochs=1"]) == 0
    )
    printed = capsys.readouterr().out
    assert printed.index("faiss is not installed") < printed.index("[1/4]")  # said first
    assert "corpus search skipped: needs faiss" in printed
    assert (out / "run" / "best.ckpt").is_file() and not (out / "corpus").exists()


def test_the_demo_trains_the_paper_recipe_and_tuned_on_request(mini_demo, tmp_path, monkeypatch, capsys):
    from sadetr.engine.checkpoint import load_checkpoint

    stored = load_checkpoint(mini_demo / "run" / "best.ckpt")["config"]["model"]
    assert stored["recipe"] == "paper" and stored["gate_scale"] is False  # eq 3 unscaled, as written

    monkeypatch.setitem(sys.modules, "faiss", None)  # no corpus step: seconds
    out = tmp_path / "tuned"
    args = ["demo", "--out", str(out), "--recipe", "tuned", "--n-train", "16", "--n-val", "4"]
    assert main([*args, "--set", "train.epochs=1"]) == 0
    assert "tuned recipe" in capsys.readouterr().out
    stored = load_checkpoint(out / "run" / "best.ckpt")["config"]["model"]
    assert stored["recipe"] == "tuned" and stored["gate_scale"] is True
