"""The browser app (`sadetr app`) in a real headless Chromium (Debian's, driven by Playwright).

The app runs as a subprocess on a tiny model and a generated MPEG-4 test video (which Chromium cannot
play, so the app's transcoding to WebM is exercised too). The browser uploads the video, types a
query, sees the moments and the saliency plot, clicks moments and reads the player's currentTime, then
chooses another video from the app's list.
Without /usr/bin/chromium this test FAILS (install it: `make browser`); it never downloads a browser.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):  # pytest-playwright's hook: Debian's Chromium
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)"
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": CHROMIUM_ARGS,
        "headless": True,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(root: Path, args: list[str]) -> Iterator[str]:
    """`sadetr app ARGS` in a subprocess on a free port; yields its URL once it answers."""
    import httpx

    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "sadetr", "app", *args, "--port", str(port), "--threads", "1"]
    log_path = root / "app.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "app did not start: " + log_path.read_text()[-2000:]
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def offline_recorder(page) -> list[str]:
    """Collects every URL the page requests off this machine."""
    outside: list[str] = []

    def record(request) -> None:
        host = urlparse(request.url).hostname
        if request.url.startswith(("http:", "https:", "ws:", "wss:")) and host not in (
            "127.0.0.1",
            "localhost",
        ):
            outside.append(request.url)

    page.on("request", record)
    return outside


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`sadetr app` on the tiny model; yields (url, files)."""
    from sadetr.inference.tiny import save_tiny_clip_checkpoint
    from test_serve import tiny_model_files, write_webm

    root = tmp_path_factory.mktemp("app")
    files = tiny_model_files(root)  # paint.mp4: MPEG-4 part 2, not playable in Chromium
    # The untrained model's 4 spans all round to the same clips of this 3-clip video (one moment after
    # de-duplication); unrounded they are 4 distinct moments, which the list and click tests need.
    save_tiny_clip_checkpoint(files["checkpoint"], "model.round_to_clip=false")
    files["other"] = write_webm(root / "other.webm", seconds=3.0)
    args = [
        "--checkpoint",
        str(files["checkpoint"]),
        "--clip",
        str(files["clip"]),
        "--video",
        str(files["other"]),
    ]
    with running_app(root, args) as url:
        yield url, files


def test_query_shows_moments_and_plot_and_a_click_seeks_the_player(app_url, page):
    url, files = app_url
    outside = offline_recorder(page)
    page.goto(url)
    page.locator("#sadetr-player input[type=file]").set_input_files(str(files["video"]))
    video = page.locator("#sadetr-player video")
    video.wait_for(timeout=60_000)
    page.wait_for_function(  # the app transcoded it for the browser
        "document.querySelector('#sadetr-player video').src.endsWith('.webm')", timeout=60_000
    )
    page.wait_for_function("document.querySelector('#sadetr-player video').readyState >= 1", timeout=30_000)
    assert video.evaluate("v => v.duration") == pytest.approx(5.0, abs=0.2)

    page.locator("#sadetr-query textarea").fill("the dog")
    page.locator("#sadetr-find").click()
    moments = page.locator("#sadetr-moments button.sadetr-moment")
    moments.first.wait_for(timeout=60_000)
    assert moments.count() >= 2
    assert moments.first.inner_text().startswith("#1 ")
    assert page.locator("#sadetr-moments .sadetr-timeline .sadetr-moment").count() == moments.count()
    plot = page.locator("#sadetr-saliency img")
    plot.wait_for(timeout=30_000)
    assert plot.evaluate("img => img.complete && img.naturalWidth") > 100
    assert "moments in 5.0 s" in page.locator("#sadetr-status").inner_text()

    for k in (1, 0):  # two different moments: the player follows each click
        target = moments.nth(k)
        start = float(target.get_attribute("data-start"))
        assert 0.0 <= start < 5.0
        target.click()
        page.wait_for_function(
            f"Math.abs(document.querySelector('#sadetr-player video').currentTime - {start}) < 0.05",
            timeout=10_000,
        )
        assert "active" in (target.get_attribute("class") or "")
    assert video.evaluate("v => v.currentTime") == pytest.approx(
        float(moments.nth(0).get_attribute("data-start"))
    )

    page.locator("#sadetr-query textarea").fill("")
    page.locator("#sadetr-find").click()
    page.get_by_text("query: must not be empty").first.wait_for(timeout=30_000)  # an error toast, no crash

    page.locator("#sadetr-choose input").click()  # or choose a video the app was given (--video)
    page.get_by_role("option", name="other").click()
    page.wait_for_function("document.querySelector('#sadetr-player video').src.endsWith('other.webm')")
    page.wait_for_function("document.querySelector('#sadetr-player video').readyState >= 1", timeout=30_000)
    assert video.evaluate("v => v.duration") == pytest.approx(3.0, abs=0.2)
    assert outside == [], f"the app must work offline, but the page requested {outside}"


@pytest.mark.corpus
def test_library_tab_searches_the_index_and_plays_a_hit(tmp_path, page):
    pytest.importorskip("sadetr.corpus", reason="needs sadetr.corpus (the corpus search engine)")
    build_index = pytest.importorskip("sadetr.corpus.index").build_index
    import numpy as np

    from sadetr.inference.predictor import Predictor
    from test_serve import tiny_model_files, write_webm

    files = tiny_model_files(tmp_path)
    videos = tmp_path / "videos"
    videos.mkdir()
    feat_root = tmp_path / "features"
    (feat_root / "clip_features").mkdir(parents=True)
    predictor = Predictor.from_checkpoint(files["checkpoint"], device="cpu", clip=files["clip"])
    for k in range(3):
        path = write_webm(videos / f"vid{k}.webm", seconds=6.0 + 2 * k)
        feats = predictor.encode_video(path).feats
        np.savez(feat_root / "clip_features" / f"vid{k}.npz", features=feats.astype(np.float32))
    index = build_index(files["checkpoint"], feat_root, tmp_path / "index")
    args = ["--checkpoint", str(files["checkpoint"]), "--clip", str(files["clip"])]
    with running_app(tmp_path, [*args, "--index", str(index), "--videos", str(videos)]) as url:
        outside = offline_recorder(page)
        page.goto(url)
        page.get_by_role("tab", name="Library").click()
        page.locator("#sadetr-library-query textarea").fill("the dog")
        page.locator("#sadetr-library-query textarea").press("Enter")
        hits = page.locator("#sadetr-hits .sadetr-hit")
        hits.first.wait_for(timeout=60_000)
        assert hits.count() >= 1
        assert hits.first.locator("img").evaluate("img => img.naturalWidth") > 0  # a thumbnail
        video_id, start = (
            hits.first.get_attribute("data-video"),
            float(hits.first.get_attribute("data-start")),
        )
        hits.first.locator("button").click()
        player = "document.querySelector('#sadetr-library-player video')"
        page.wait_for_function(f"{player} && {player}.src.includes('{video_id}')", timeout=30_000)
        page.wait_for_function(f"Math.abs({player}.currentTime - {start}) < 0.05", timeout=30_000)
        assert outside == []


@pytest.mark.corpus
def test_demo_app_searches_by_a_typed_demo_sentence_and_plays_a_hit(tmp_path_factory, tmp_path, page):
    """First contact without weights: `sadetr demo` (small), then the README's `sadetr app --demo DIR`;
    the page says it is synthetic and what needs CLIP, a typed demo sentence finds hits with readable
    scores, and Play loads the hit's placeholder video at the hit's start."""
    from test_demo_inputs import make_mini_demo

    demo = make_mini_demo(tmp_path_factory)
    sentence = json.loads((demo / "data" / "annotations" / "val.jsonl").read_text().splitlines()[0])["query"]
    with running_app(tmp_path, ["--demo", str(demo)]) as url:
        outside = offline_recorder(page)
        page.goto(url)
        intro = page.locator("#sadetr-intro").inner_text()
        assert "SYNTHETIC DEMO" in intro and "One video is off" in intro and "--clip" in intro
        assert page.get_by_role("tab", name="One video").count() == 0  # nothing it could answer there
        page.get_by_role("tab", name="Library").click()
        page.locator("#sadetr-library-query textarea").fill(sentence.upper())  # typed, not picked
        page.locator("#sadetr-library-query textarea").press("Enter")
        hits = page.locator("#sadetr-hits .sadetr-hit")
        hits.first.wait_for(timeout=60_000)
        text = hits.first.inner_text()
        log_score = float(re.search(r"log score (-?[\d.]+)", text).group(1))
        assert log_score <= 0 and "cosine" in text and "quality" in text and "score 0.000" not in text
        video_id, start = (
            hits.first.get_attribute("data-video"),
            float(hits.first.get_attribute("data-start")),
        )
        hits.first.locator("button").click()
        player = "document.querySelector('#sadetr-library-player video')"
        page.wait_for_function(f"{player} && {player}.readyState >= 1", timeout=60_000)
        page.wait_for_function(f"Math.abs({player}.currentTime - {start}) < 0.05", timeout=30_000)
        duration = page.evaluate(f"{player}.duration")
        expected = next(
            json.loads(line)["duration"]
            for line in (demo / "data" / "annotations" / "val.jsonl").read_text().splitlines()
            if json.loads(line)["vid"] == video_id
        )
        assert duration == pytest.approx(expected, abs=1.0)  # the hit's video, at its length

        page.locator("#sadetr-library-query textarea").fill("a man opens the door")
        page.locator("#sadetr-library-query textarea").press("Enter")
        page.get_by_text("is not one of the 12 queries").first.wait_for(timeout=30_000)
        assert outside == []
