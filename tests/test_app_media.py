"""The browser app (`sadetr app`) serves only the media it shows, and refuses at start what it cannot do.

A real app runs in a subprocess (Gradio's own file route, no browser needed) with `--videos DIR` and
`--video FILE` beside files it must never hand out: a text file in DIR, a video in a subfolder of DIR,
a symlink in DIR to a folder outside it, an `id_rsa` beside FILE. Each is fetched as an attacker would
(`GET /gradio_api/file=<absolute path>`) and must be refused; the videos it shows must be served.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="needs the sadetr[app] extra")

from sadetr.cli.main import main
from test_serve import tiny_model_files, write_webm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    files = tiny_model_files(root)
    videos, outside, single = root / "videos", root / "outside", root / "single"
    for d in (videos, videos / "sub", outside, single):
        d.mkdir()
    paths = {
        **files,
        "videos": videos,
        "shown": write_webm(videos / "a.webm", seconds=2.0),
        "notes": videos / "notes.txt",
        "nested": write_webm(videos / "sub" / "b.webm", seconds=2.0),
        "outside_video": write_webm(outside / "x.webm", seconds=2.0),
        "outside_secret": outside / "secret.txt",
        "link": videos / "link.webm",
        "single": write_webm(single / "c.webm", seconds=2.0),
        "id_rsa": single / "id_rsa",
        "tmp": root / "tmp",
    }
    paths["notes"].write_text("private notes\n")
    paths["outside_secret"].write_text("secret\n")
    paths["id_rsa"].write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    paths["link"].symlink_to(paths["outside_video"])
    paths["tmp"].mkdir()
    return paths


class RunningApp:
    """`sadetr app` in a subprocess: its URL, its log, and `stop()` (SIGTERM, as a service manager)."""

    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path) -> None:
        self.proc, self.url, self.log_path = proc, url, log_path

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.returncode


@pytest.fixture(scope="module")
def app(layout):
    """`sadetr app --videos DIR --video FILE` with its temp folder in layout/tmp (TMPDIR)."""
    import httpx

    port = _free_port()
    args = ["--checkpoint", str(layout["checkpoint"]), "--clip", str(layout["clip"])]
    args += ["--videos", str(layout["videos"]), "--video", str(layout["single"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(layout["tmp"])}
    log_path = layout["tmp"].parent / "app.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sadetr", "app", *args, "--port", str(port), "--threads", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    running = RunningApp(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(running.url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "app did not start: " + log_path.read_text()[-2000:]
            time.sleep(0.5)
        yield running
    finally:
        running.stop()


def _get(url: str, path: Path) -> int:
    import httpx

    return httpx.get(f"{url}/gradio_api/file={path}", timeout=10).status_code


@pytest.mark.parametrize("name", ["notes", "nested", "outside_video", "outside_secret", "link", "id_rsa"])
def test_the_app_refuses_every_file_it_does_not_show(app, layout, name):
    assert layout[name].exists()
    assert _get(app.url, layout[name]) == 403


def test_the_app_serves_the_videos_it_shows_and_offers_no_escaping_link(app, layout):
    import httpx

    assert _get(app.url, layout["shown"]) == 200
    assert _get(app.url, layout["single"]) == 200
    config = httpx.get(f"{app.url}/config", timeout=10).json()
    choices = [c for comp in config["components"] for c in (comp.get("props") or {}).get("choices") or []]
    offered = {c[0] if isinstance(c, list) else c for c in choices}
    assert {"a", "c"} <= offered and "link" not in offered and "b" not in offered
    assert "skipped" in app.log_path.read_text() and "link.webm" in app.log_path.read_text()


def test_the_app_keeps_its_files_in_its_own_temp_folder_and_removes_it_when_stopped(app, layout):
    """Runs last of the app's tests (file order): it stops the app."""
    own = [p for p in layout["tmp"].iterdir() if p.name.startswith("sadetr-app-")]
    assert len(own) == 1 and (own[0] / ".lock").is_file()
    assert app.stop() == 0
    assert not own[0].exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([], "this app could answer nothing: without --clip"),
        (["--index", "INDEX"], "this app could answer nothing"),
    ],
)
def test_an_app_that_could_answer_nothing_is_refused_at_start(layout, tmp_path, capsys, extra, fragment):
    if extra:
        from test_serve import build_tiny_index

        extra = ["--index", str(build_tiny_index(layout, tmp_path))]
    argv = ["app", "--checkpoint", str(layout["checkpoint"]), "--port", str(_free_port()), *extra]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err, err
