"""Pictures of one prediction: a PNG (saliency over time + ranked moments + ground truth) and a
self-contained HTML page (the figure and one thumbnail per moment embedded as base64 PNG).

Input is a submission-format record (`pred_relevant_windows` [[start, end, score], ...] ranked,
`pred_saliency_scores` one per clip) plus the clip length; matplotlib runs headless (Agg).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sadetr.core.atomic import atomic_write_bytes
from sadetr.video.decode import iter_frames_at


def figure_png(
    pred: dict[str, Any],
    clip_len: float,
    gt_windows: Sequence[Sequence[float]] | None = None,
    top_k: int = 5,
    title: str | None = None,
) -> bytes:
    """PNG bytes: saliency curve (top) and the top-k moments as score-labelled bars (bottom)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    saliency = np.asarray(pred.get("pred_saliency_scores") or [], dtype=float)
    windows = list(pred.get("pred_relevant_windows") or [])[:top_k]
    duration = float(pred.get("duration") or max([len(saliency) * clip_len] + [w[1] for w in windows]))
    fig = Figure(figsize=(10, 4.2), dpi=100, layout="constrained")
    ax_s, ax_m = fig.subplots(2, 1, sharex=True, height_ratios=[1.4, 1])
    t = (np.arange(len(saliency)) + 0.5) * clip_len  # clip centres, seconds
    for s, e in gt_windows or []:
        for ax in (ax_s, ax_m):
            ax.axvspan(s, e, color="tab:green", alpha=0.15, lw=0)
    ax_s.plot(t, saliency, color="tab:blue", lw=1.5)
    if len(saliency):
        ax_s.fill_between(t, saliency, saliency.min(), color="tab:blue", alpha=0.15)
    ax_s.set_ylabel("saliency")
    ax_s.grid(alpha=0.3)
    scores = [w[2] for w in windows]
    cmap = matplotlib.colormaps["viridis"]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    for rank, (s, e, score) in enumerate(windows):
        y = len(windows) - rank  # best moment on top
        color = cmap(0.25 + 0.7 * ((score - lo) / (hi - lo) if hi > lo else 1.0))
        ax_m.barh(y, e - s, left=s, height=0.7, color=color, edgecolor="black", lw=0.5)
        ax_m.text(e + duration * 0.005, y, f"#{rank + 1}  {score:.3g}", va="center", fontsize=8)
    ax_m.set_yticks([])
    ax_m.set_ylim(0.3, len(windows) + 0.7)
    ax_m.set_ylabel(f"top {len(windows)} moments")
    ax_m.set_xlabel("time (s)" + ("   green: ground truth" if gt_windows else ""))
    ax_m.set_xlim(0, duration * 1.08)
    ax_s.set_title(title if title is not None else str(pred.get("query", "")), fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_plot(
    path: str | Path,
    pred: dict[str, Any],
    clip_len: float,
    gt_windows: Sequence[Sequence[float]] | None = None,
    top_k: int = 5,
) -> Path:
    """Write the figure of `figure_png` to `path` (atomically)."""
    atomic_write_bytes(path, figure_png(pred, clip_len, gt_windows, top_k))
    return Path(path)


def thumbnails(video: str | Path, windows: Sequence[Sequence[float]], size: int = 160) -> list[bytes]:
    """PNG bytes of the frame at the middle of each window (shortest side `size`, centre crop)."""
    from matplotlib.image import imsave

    mids = [(w[0] + w[1]) / 2 for w in windows]
    order = np.argsort(mids, kind="stable")
    frames = list(iter_frames_at(video, [mids[i] for i in order], size=size))
    out: list[bytes] = [b""] * len(windows)
    for i, frame in zip(order, frames):
        buf = io.BytesIO()
        imsave(buf, frame, format="png")
        out[int(i)] = buf.getvalue()
    return out


def _fmt_time(seconds: float) -> str:
    m, s = divmod(float(seconds), 60)
    return f"{int(m)}:{s:05.2f}"


def render_html(
    pred: dict[str, Any],
    clip_len: float,
    video: str | Path | None = None,
    gt_windows: Sequence[Sequence[float]] | None = None,
    top_k: int = 5,
) -> str:
    """A self-contained HTML page: query, the figure, and a table of moments with thumbnails."""
    fig = base64.b64encode(figure_png(pred, clip_len, gt_windows, top_k)).decode("ascii")
    windows = list(pred.get("pred_relevant_windows") or [])[:top_k]
    thumbs = thumbnails(video, windows) if video is not None and windows else [b""] * len(windows)
    rows = []
    for rank, ((s, e, score), thumb) in enumerate(zip(windows, thumbs), start=1):
        img = (
            f'<img class="thumb" alt="moment {rank}" src="data:image/png;base64,'
            f'{base64.b64encode(thumb).decode("ascii")}">'
            if thumb
            else ""
        )
        rows.append(
            f"<tr><td>{rank}</td><td>{_fmt_time(s)}</td><td>{_fmt_time(e)}</td>"
            f"<td>{e - s:.1f} s</td><td>{score:.3f}</td><td>{img}</td></tr>"
        )
    query = html.escape(str(pred.get("query", "")))
    source = html.escape(str(video)) if video is not None else "features"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sadetr: {query}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}} img.fig{{max-width:100%}}
img.thumb{{height:90px}}</style></head>
<body><h1>{query}</h1><p>video: {source} &middot; duration {_fmt_time(float(pred.get("duration", 0)))}
&middot; {clip_len:g} s clips</p>
<img class="fig" alt="saliency and moments" src="data:image/png;base64,{fig}">
<table><tr><th>#</th><th>start</th><th>end</th><th>length</th><th>score</th><th>frame</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


def write_html(
    path: str | Path,
    pred: dict[str, Any],
    clip_len: float,
    video: str | Path | None = None,
    gt_windows: Sequence[Sequence[float]] | None = None,
    top_k: int = 5,
) -> Path:
    """Write `render_html` to `path` (atomically)."""
    atomic_write_bytes(path, render_html(pred, clip_len, video, gt_windows, top_k).encode("utf-8"))
    return Path(path)
