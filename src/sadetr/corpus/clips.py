"""Cutting a moment out of a video file into its own clip (PyAV re-encode, video stream only).

Frames whose presentation time lies in [start, end) are decoded and re-encoded (H.264 when the PyAV build
has an encoder for it, else MPEG-4 Part 2) at the source frame rate and size; the output is written
atomically. Re-encoding, not stream copy, so that the cut is frame-exact rather than keyframe-aligned.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from sadetr.atomic import atomic_path
from sadetr.errors import DataError
from sadetr.video.decode import probe


def _encoder() -> str:
    import av

    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises several types for an unknown codec
            continue
    raise DataError("this PyAV build has no H.264 or MPEG-4 encoder", field="codec")


def cut_clip(video: Path, start: float, end: float, out: Path) -> int:
    """Write [start, end) seconds of `video` to `out` (.mp4); returns the number of frames written."""
    import av

    info = probe(video)  # DataError if missing/unreadable
    if not 0 <= start < end:
        raise DataError(f"need 0 <= start < end, got start {start}, end {end}", field="--start/--end")
    if start >= info.duration:
        raise DataError(f"start {start} s is past the end of the video ({info.duration:.2f} s)", path=video)
    rate = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
    frames = 0
    with atomic_path(out) as tmp:
        with av.open(str(video)) as src, av.open(str(tmp), "w", format="mp4") as dst:
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
                new = frame.reformat(format="yuv420p")
                new.pts = frames
                new.time_base = 1 / rate
                for packet in s_out.encode(new):
                    dst.mux(packet)
                frames += 1
            for packet in s_out.encode():
                dst.mux(packet)
        if frames == 0:
            raise DataError(f"no frame in [{start}, {end}) s", path=video)
    return frames


def find_video(video_root: Path, video: str) -> Path:
    """The file `<video_root>/<video>.<ext>` of a video id (first known video suffix)."""
    from sadetr.video.decode import VIDEO_SUFFIXES

    for suffix in VIDEO_SUFFIXES:
        path = Path(video_root) / f"{video}{suffix}"
        if path.is_file():
            return path
    raise DataError(f"no video file for {video!r} under {video_root}", field="--video-root")
