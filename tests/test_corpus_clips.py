"""`sadetr cut` on careless and unlucky input: the container its suffix names, an existing folder only, a
window with no frame, an end past the video, and a temp file left by a killed earlier cut."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sadetr.cli.main import main
from sadetr.video.tiny import write_test_video


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("cut") / "v.mp4", n_frames=45, fps=10)  # 4.5 s


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("suffix", "container"), [(".avi", "avi"), (".mkv", "matroska"), (".mov", "mov")])
def test_the_output_container_is_the_one_its_suffix_names(
    suffix: str, container: str, video: Path, tmp_path: Path
) -> None:
    import av

    out = tmp_path / f"clip{suffix}"
    assert main(["cut", str(video), "--start", "1", "--end", "2", "-o", str(out)]) == 0
    with av.open(str(out)) as probe:
        assert container in probe.format.name.split(",")
        assert probe.streams.video[0].frames in (0, 10)  # some containers do not count frames
        assert sum(1 for _ in probe.decode(video=0)) == 10


@pytest.mark.parametrize("name", ["clip.webm", "clip.gif", "clip", "clip.txt"])
def test_an_output_suffix_without_a_container_is_refused(
    name: str, video: Path, tmp_path: Path, capsys
) -> None:
    one_line_error(
        capsys, ["cut", str(video), "--start", "1", "--end", "2", "-o", str(tmp_path / name)], "--output"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_missing_output_folder_is_refused_and_not_created(video: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "no" / "such" / "clip.mp4"
    one_line_error(
        capsys, ["cut", str(video), "--start", "1", "--end", "2", "-o", str(out)], "does not exist"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("start", "end"), [("1.01", "1.05"), ("4.41", "4.49")])
def test_a_window_with_no_frame_is_an_error_and_writes_nothing(
    start: str, end: str, video: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "clip.mp4"
    one_line_error(capsys, ["cut", str(video), "--start", start, "--end", end, "-o", str(out)], "no frame in")
    assert list(tmp_path.iterdir()) == []  # neither the clip nor a temp file


@pytest.mark.parametrize(("start", "end"), [("nan", "2"), ("1", "inf"), ("2", "1"), ("-1", "2")])
def test_bad_start_and_end_are_refused(start: str, end: str, video: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "clip.mp4"
    one_line_error(capsys, ["cut", str(video), "--start", start, "--end", end, "-o", str(out)], "start")
    assert list(tmp_path.iterdir()) == []


def test_an_end_past_the_video_reports_the_end_really_cut(video: Path, tmp_path: Path, capsys) -> None:
    from sadetr.video.decode import probe

    out = tmp_path / "clip.mp4"
    assert main(["cut", str(video), "--start", "3", "--end", "20", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "15 frames, 3-4.5 s" in said and "ends before 20 s" in said, said
    assert probe(out).duration == pytest.approx(1.5, abs=0.11)
    assert main(["cut", str(video), "--start", "1", "--end", "2", "-o", str(out)]) == 0
    assert "ends before" not in capsys.readouterr().out


def test_a_temp_file_of_a_killed_cut_is_removed_by_the_next_one(video: Path, tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)  # a process that has exited: what kill -9 leaves behind
    out = tmp_path / "clip.mp4"
    stale = tmp_path / f".clip.mp4.{pid}-k9x2m4q7.tmp"
    stale.write_bytes(b"half a clip")
    assert main(["cut", str(video), "--start", "1", "--end", "2", "-o", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
