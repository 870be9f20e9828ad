"""Videos for the browser: which files the app may show, and making them playable.

`allowed_videos` is the app's allow-list: the exact video files it was given, resolved; nothing else
of their folders. `browser_playable` keeps what Chromium/Firefox play and transcodes the rest to VP8
WebM (PyAV: no ffmpeg binary is needed). Audio is dropped on transcoding: the app shows moments, it is
not a media player.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from sadetr.core.atomic import atomic_path
from sadetr.core.errors import ConfigError
from sadetr.video.decode import VIDEO_SUFFIXES

log = logging.getLogger(__name__)

PLAYABLE = {(".mp4", "h264"), (".mp4", "av1"), (".webm", "vp8"), (".webm", "vp9"), (".webm", "av1"),
            (".ogg", "theora")}  # fmt: skip


def allowed_videos(folder: Path | None = None, files: Sequence[Path] = ()) -> dict[str, Path]:
    """The videos the app may show, by file stem (an index's video ids are stems), as resolved paths.

    From `folder`: its video files (by suffix, not its subfolders) whose resolved path stays inside
    the resolved folder; a symlink that leads out of it is skipped with a warning, so that it cannot
    make another folder's file servable. `files` (named one by one, e.g. `--video`) are taken as
    resolved; a missing one is a `ConfigError`. Only these exact files are handed to the web server,
    never their folders.
    """
    found: dict[str, Path] = {}
    if folder is not None:
        root = folder.resolve()
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in VIDEO_SUFFIXES:
                continue
            real = p.resolve()
            if not real.is_relative_to(root):
                log.warning("skipped %s: a link to %s, outside %s", p, real, folder)
                continue
            if real.is_file():
                found[p.stem] = real
    for f in files:
        if not Path(f).is_file():
            raise ConfigError(f"no such file {f}", key="--video")
        found[Path(f).stem] = Path(f).resolve()
    return found


def video_codec(path: Path) -> str:
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name if container.streams.video else ""


def is_playable(path: Path) -> bool:
    try:
        return (path.suffix.lower(), video_codec(path)) in PLAYABLE
    except Exception:  # unreadable: the prediction reports it, the player just stays blank
        return True


def browser_playable(path: str | Path, cache_dir: Path, max_height: int = 360) -> Path:
    """`path` if a browser plays it, else a VP8 WebM copy in `cache_dir` (made once per file content)."""
    import av
    import numpy as np

    path = Path(path)
    if is_playable(path):
        return path
    digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir / f"{path.stem}-{digest}.webm"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with av.open(str(path)) as src, atomic_path(out) as tmp:
        vin = src.streams.video[0]
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        height = min(max_height, vin.codec_context.height) // 2 * 2
        width = max(2, round(vin.codec_context.width * height / vin.codec_context.height) // 2 * 2)
        with av.open(str(tmp), "w", format="webm") as dst:
            vout = dst.add_stream("libvpx", rate=rate)
            vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
            vout.options = {"deadline": "realtime", "cpu-used": "8", "b": "1M"}
            for n, frame in enumerate(src.decode(vin)):
                img = frame.to_ndarray(width=width, height=height, format="rgb24")
                new = av.VideoFrame.from_ndarray(np.ascontiguousarray(img, dtype=np.uint8), format="rgb24")
                new.pts, new.time_base = n, Fraction(1) / rate
                dst.mux(vout.encode(new))
            dst.mux(vout.encode())
    return out
