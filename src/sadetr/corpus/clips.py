"""Cutting a moment out of a video file into its own clip (PyAV re-encode, video stream only).

Frames whose presentation time lies in [start, end) are decoded and re-encoded (H.264 when the PyAV build
has an encoder for it, else MPEG-4 Part 2) at the source frame rate and size, in the container the
output's suffix names (`CONTAINERS`; another suffix is refused). Re-encoding, not stream copy, so that the
cut is frame-exact rather than keyframe-aligned. The output is written atomically into an existing folder
(a missing one is refused); a temp file left by a killed earlier cut of the same output is removed.
A window that holds no frame is an error; an end past the video is reported as the end really cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from sadetr.core.atomic import atomic_path
from sadetr.core.errors import ConfigError, DataError
from sadetr.core.paths import safe_child
from sadetr.video.decode import VIDEO_SUFFIXES, probe

# output suffix -> PyAV (FFmpeg) container; each takes H.264 and MPEG-4 Part 2
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


@dataclass(frozen=True)
class Cut:
    """What `cut_clip` wrote: `frames` frames covering [start, end) seconds of the source."""

    frames: int
    start: float
    end: float


def container_of(out: Path) -> str:
    """The container of an output file from its suffix; an unknown suffix is a `ConfigError`."""
    fmt = CONTAINERS.get(Path(out).suffix.lower())
    if fmt is None:
        known = ", ".join(CONTAINERS)
        raise ConfigError(
            f"{out}: unknown video suffix {Path(out).suffix!r} (one of {known})", key="--output"
        )
    return fmt


def _encoder() -> str:
    import av

    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises several types for an unknown codec
            continue
    raise DataError("this PyAV build has no H.264 or MPEG-4 encoder", field="codec")


def cut_clip(video: Path, start: float, end: float, out: Path) -> Cut:
    """Write [start, end) seconds of `video` to `out` (container from its suffix); returns what was cut
    (an `end` past the video is clamped to its last frame)."""
    import av

    out = Path(out)
    fmt = container_of(out)
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: the folder {out.parent} does not exist", key="--output")
    if out.is_dir():
        raise ConfigError(f"{out} is an existing folder; give a file name", key="--output")
    info = probe(video)  # DataError if missing/unreadable
    if not 0 <= start < end < float("inf"):
        raise DataError(f"need 0 <= start < end, got start {start}, end {end}", field="--start/--end")
    if start >= info.duration:
        raise DataError(f"start {start} s is past the end of the video ({info.duration:.2f} s)", path=video)
    rate = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
    frames, first, last = 0, None, None
    with atomic_path(out, clean_stale=True) as tmp:
        with av.open(str(video)) as src, av.open(str(tmp), "w", format=fmt) as dst:
            s_in = src.streams.video[0]
            s_out: Any = dst.add_stream(_encoder(), rate=rate)
            s_out.width, s_out.height = s_in.codec_context.width, s_in.codec_context.height
            s_out.pix_fmt = "yuv420p"
            if s_in.time_base is not None:
                src.seek(int(max(0.0, start - 1.0) / s_in.time_base), stream=s_in, backward=True)
            for frame in src.decode(s_in):
                if frame.pts is None or frame.time is None:
                    continue
                if frame.time < start:
                    continue
                if frame.time >= end:
                    break
                first = frame.time if first is None else first
                last = frame.time
                new = frame.reformat(format="yuv420p")
                new.pts = frames
                new.time_base = 1 / rate
                for packet in s_out.encode(new):
                    dst.mux(packet)
                frames += 1
            for packet in s_out.encode():
                dst.mux(packet)
        if frames == 0 or first is None or last is None:
            raise DataError(f"no frame in [{start:g}, {end:g}) s; nothing written", path=video)
    return Cut(frames, float(start), float(min(end, last + 1 / rate)))


def find_video(video_root: Path, video: str) -> Path:
    """The file `<video_root>/<video>.<ext>` of a video id (first known video suffix); a video id (from
    an index) or a symlink leading out of `video_root` is a `DataError`."""

    for suffix in VIDEO_SUFFIXES:
        path = safe_child(video_root, f"{video}{suffix}", field="video")
        if path.is_file():
            return path
    raise DataError(f"no video file for {video!r} under {video_root}", field="--video-root")
