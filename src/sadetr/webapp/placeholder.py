"""A stand-in video for a library video that exists only as features (the synthetic demo's).

The demo's videos were generated as feature files; there is no picture to show. So that a hit can still
be played and its moment seen, the app renders a silent VP8 WebM of the video's length: the video id,
the words "synthetic demo: no real video" and a running clock on a dark background (PyAV + Pillow).
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

from sadetr.core.atomic import atomic_path

WIDTH, HEIGHT = 320, 180


def _frame(video_id: str, t: float, duration: float):  # -> PIL.Image.Image
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (WIDTH, HEIGHT), (24, 28, 36))
    draw = ImageDraw.Draw(img)
    draw.text((12, 12), video_id[:40], fill=(235, 235, 235))
    draw.text((12, 34), "synthetic demo: no real video", fill=(240, 170, 80))
    m, s = divmod(t, 60)
    draw.text((12, 80), f"{int(m)}:{s:04.1f} / {duration:.0f} s", fill=(235, 235, 235))
    bar = int((WIDTH - 24) * min(1.0, t / duration))  # progress bar: where in the video this frame is
    draw.rectangle((12, 150, 12 + bar, 162), fill=(47, 111, 222))
    return img


def placeholder_video(video_id: str, duration: float, cache_dir: Path, fps: int = 2) -> Path:
    """`cache_dir/placeholder-<hash>.webm` of `duration` seconds for `video_id` (rendered once)."""
    import av
    import numpy as np

    digest = hashlib.sha256(f"{video_id}:{duration:.3f}:{fps}".encode()).hexdigest()[:16]
    out = cache_dir / f"placeholder-{digest}.webm"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps)
    with atomic_path(out) as tmp, av.open(str(tmp), "w", format="webm") as dst:
        stream = dst.add_stream("libvpx", rate=rate)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8", "b": "200k"}
        for n in range(max(1, round(duration * fps))):
            img = np.asarray(_frame(video_id, n / fps, duration), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = n, 1 / rate
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode())
    return out
