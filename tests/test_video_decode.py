"""PyAV decoding by timestamp and the per-clip sampling layout (`sadetr.video.decode`, `.sampling`)."""

from __future__ import annotations

import numpy as np
import pytest

from sadetr.core.errors import DataError
from sadetr.video.decode import iter_frames_at, num_clips, probe, resize_crop_size
from sadetr.video.sampling import clip_centre_times, fast_times, slow_indices
from sadetr.video.tiny import level, write_test_video


def frame_index(frame: np.ndarray) -> int:
    """Invert `level`: the painted gray level survives lossy encoding to within +-2."""
    return round((float(frame.mean()) - 5) / 5)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    # 45 frames at 10 fps: frame k is shown during [k/10, (k+1)/10)
    return write_test_video(tmp_path_factory.mktemp("v") / "v.mp4", n_frames=45, fps=10)


def test_probe_reads_duration_fps_and_size(video):
    info = probe(video)
    assert info.duration == pytest.approx(4.5, abs=0.11)
    assert info.fps == pytest.approx(10.0)
    assert (info.width, info.height) == (64, 48)


def test_frames_are_the_ones_on_screen_at_each_timestamp(video):
    times = [0.0, 0.05, 0.15, 0.99, 1.01, 2.55, 4.45]
    frames = list(iter_frames_at(video, times, size=None))
    assert [frame_index(f) for f in frames] == [int(t * 10) for t in times]
    assert frames[0].shape == (48, 64, 3)


def test_timestamps_past_the_end_give_the_last_frame(video):
    frames = list(iter_frames_at(video, [4.4, 7.0, 100.0], size=None))
    assert [frame_index(f) for f in frames] == [44, 44, 44]


def test_resize_shortest_side_and_centre_crop(video):
    (frame,) = iter_frames_at(video, [1.25], size=24)
    assert frame.shape == (24, 24, 3) and frame.dtype == np.uint8
    assert frame_index(frame) == 12
    assert resize_crop_size(64, 48, 24) == (32, 24)
    assert resize_crop_size(48, 64, 24) == (24, 32)


def test_timestamps_must_be_sorted(video):
    with pytest.raises(ValueError, match="non-decreasing"):
        list(iter_frames_at(video, [1.0, 0.5]))


def test_missing_and_corrupt_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        probe(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(DataError) as err:
        probe(bad)
    assert str(bad) in str(err.value)


def test_clip_layout_centres_fast_and_slow_frames():
    assert num_clips(150.0, 2.0) == 75
    assert num_clips(4.5, 2.0) == 3
    assert clip_centre_times(3, 2.0, 4.5) == [1.0, 3.0, pytest.approx(4.499)]
    fast = fast_times(2, 2.0, 100.0)  # clip [4, 6): 32 instants 1/16 s apart, centred in sub-intervals
    assert len(fast) == 32
    assert fast[0] == pytest.approx(4 + 1 / 32) and fast[-1] == pytest.approx(6 - 1 / 32)
    assert np.allclose(np.diff(fast), 1 / 16)
    assert slow_indices(32, 4) == [0, 4, 8, 13, 17, 22, 26, 31]


def test_level_encoding_is_distinguishable():
    assert len({level(k) for k in range(50)}) == 50 and max(level(k) for k in range(50)) <= 255
