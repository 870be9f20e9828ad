"""PNG and HTML pictures of a prediction (`sadetr.inference.viz`)."""

from __future__ import annotations

import base64
import re
import struct

import numpy as np

from sadetr.inference.viz import write_html, write_plot
from sadetr.video.tiny import write_test_video

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def prediction(n_clips: int = 30, clip_len: float = 2.0) -> dict:
    t = (np.arange(n_clips) + 0.5) * clip_len
    return {
        "query": "a man <opens> the door",
        "duration": n_clips * clip_len,
        "pred_relevant_windows": [[20.0, 30.0, 0.91], [4.0, 8.0, 0.55], [40.0, 52.0, 0.32], [0.0, 2.0, 0.1]],
        "pred_saliency_scores": np.exp(-(((t - 25) / 5) ** 2)).round(4).tolist(),
    }


def test_plot_writes_a_png_of_the_expected_size(tmp_path):
    out = write_plot(tmp_path / "sub" / "plot.png", prediction(), 2.0, gt_windows=[[22, 30]], top_k=3)
    data = out.read_bytes()
    assert png_size(data) == (1000, 420)  # figsize (10, 4.2) at 100 dpi
    assert len(data) > 10_000  # a real drawing, not an empty canvas
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_html_embeds_the_figure_and_one_thumbnail_per_moment(tmp_path):
    video = write_test_video(tmp_path / "v.mp4", n_frames=50, fps=10)  # 5 s
    pred = {
        "query": "a man <opens> the door",
        "duration": 5.0,
        "pred_relevant_windows": [[1.0, 2.0, 0.9], [3.0, 4.8, 0.4], [0.0, 0.5, 0.2]],
        "pred_saliency_scores": [0.1, 0.8, 0.3],
    }
    page = write_html(tmp_path / "p.html", pred, 2.0, video=video).read_text()
    assert "a man &lt;opens&gt; the door" in page  # escaped
    images = re.findall(r'<img class="(fig|thumb)"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert [kind for kind, _ in images] == ["fig", "thumb", "thumb", "thumb"]
    sizes = [png_size(base64.b64decode(b64)) for _, b64 in images]
    assert sizes[0] == (1000, 420) and sizes[1:] == [(160, 160)] * 3
    # the thumbnail of moment 1 is the frame at its middle (1.5 s -> frame 15, gray level 80)
    from io import BytesIO

    from matplotlib.image import imread

    thumb = imread(BytesIO(base64.b64decode(images[1][1])))
    assert abs(thumb[..., :3].mean() * 255 - 80) < 4
    assert 'src="http' not in page and "<script" not in page  # self-contained


def test_html_without_video_has_no_thumbnails(tmp_path):
    page = write_html(tmp_path / "p.html", prediction(), 2.0, top_k=2).read_text()
    assert page.count('class="thumb"') == 0 and page.count('class="fig"') == 1
    assert page.count("<tr>") == 3  # header + 2 moments
