"""PyAV decoding: probe a video, and read the frames shown at explicit timestamps.

Frames are chosen by time, never by index, so that a 25, 29.97 or 60 fps video gives the same clip
layout: the frame for timestamp t is the last frame whose presentation time is <= t (the frame on
screen at t); before the first frame that is the first frame, past the end the last one. Frames are
resized (shortest side to `size`, bicubic, as ffmpeg's `scale` filter) and centre-cropped to
`size` x `size` while decoding, so a long video never sits in memory at full resolution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sadetr.core.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a video: seconds, average frames per second, frame size."""

    path: str
    duration: float
    fps: float
    width: int
    height: int


def _open(path: str | Path):
    import av

    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise DataError(f"cannot open video: {err}", path=path) from err


def probe(path: str | Path) -> VideoInfo:
    """Duration (s), fps and frame size of the first video stream; `DataError` if unreadable."""
    if not Path(path).is_file():
        raise DataError("video file not found", path=path)
    with _open(path) as container:
        if not container.streams.video:
            raise DataError("no video stream", path=path)
        stream = container.streams.video[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        if not duration and container.duration:
            duration = container.duration / 1_000_000  # av.time_base is microseconds
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        if not duration and stream.frames and fps:
            duration = stream.frames / fps
        if not duration or duration <= 0:
            raise DataError("cannot determine the video's duration", path=path)
        width, height = stream.codec_context.width, stream.codec_context.height
    return VideoInfo(str(path), float(duration), fps, int(width), int(height))


def resize_crop_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Size after scaling the shortest side to `size`, keeping the aspect ratio.

    >>> resize_crop_size(640, 360, 224)
    (398, 224)
    """
    if width <= height:
        return size, max(size, round(height * size / width))
    return max(size, round(width * size / height)), size


def _to_array(frame, size: int | None) -> np.ndarray:
    """RGB uint8 [H, W, 3]; shortest side scaled to `size` and centre-cropped when `size` is set."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    new_w, new_h = resize_crop_size(frame.width, frame.height, size)
    rgb = frame.reformat(width=new_w, height=new_h, format="rgb24", interpolation="BICUBIC").to_ndarray()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def iter_frames_at(
    path: str | Path, timestamps: Iterable[float], size: int | None = 224
) -> Iterator[np.ndarray]:
    """Yield one RGB frame [size, size, 3] (uint8) per timestamp (s, non-decreasing), in one decode pass."""
    times = [float(t) for t in timestamps]
    if any(b < a for a, b in itertools.pairwise(times)):
        raise ValueError("timestamps must be non-decreasing")
    if not times:
        return
    import av

    j = 0
    prev_frame, prev_array = None, None
    try:
        with _open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            for index, frame in enumerate(container.decode(stream)):
                shown_at = frame.time if frame.time is not None else index / rate
                # every timestamp before this frame's time belongs to the previous frame
                while j < len(times) and times[j] < shown_at - 1e-6:
                    if prev_array is None:
                        prev_frame = prev_frame if prev_frame is not None else frame
                        prev_array = _to_array(prev_frame, size)
                    yield prev_array
                    j += 1
                if j == len(times):
                    return
                prev_frame, prev_array = frame, None
    except av.FFmpegError as err:
        raise DataError(f"cannot decode video: {err}", path=path) from err
    if prev_frame is None:
        raise DataError("the video has no decodable frame", path=path)
    if prev_array is None:
        prev_array = _to_array(prev_frame, size)
    for _ in range(j, len(times)):
        yield prev_array


def num_clips(duration: float, clip_len: float) -> int:
    """Clips of `clip_len` s covering the video; a last partial clip counts (150 s / 2 s -> 75).

    >>> num_clips(150.0, 2.0), num_clips(151.0, 2.0), num_clips(0.5, 2.0)
    (75, 76, 1)
    """
    return max(1, math.ceil(duration / clip_len - 1e-6))
