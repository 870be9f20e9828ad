"""HTML of the ranked moments (a timeline + a clickable list) and of corpus search hits.

Every clickable element carries `data-start` (seconds; moments) or `data-hit` (an index into the
hits; library), read by the small scripts in `ui.py`. Pure string building, escaped, no Gradio.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

CSS = """
.sadetr-timeline { position: relative; height: 28px; background: #eef0f3; border-radius: 4px;
  margin: 6px 0 10px; }
.sadetr-timeline .sadetr-moment { position: absolute; top: 3px; height: 22px; border-radius: 3px;
  background: #2f6fde; cursor: pointer; border: 1px solid #1b3f80; min-width: 3px; }
.sadetr-list { list-style: none; padding: 0; margin: 0; }
.sadetr-list li { margin: 3px 0; }
.sadetr-list button, .sadetr-hit button { cursor: pointer; font: inherit; padding: 3px 8px;
  border-radius: 4px; border: 1px solid #9aa4b2; background: #fff; }
.sadetr-moment.active, .sadetr-hit.active button { outline: 2px solid #e0801b; }
.sadetr-hit { display: flex; gap: 10px; align-items: center; margin: 6px 0; }
.sadetr-hit img { width: 96px; height: 72px; object-fit: cover; border-radius: 3px; }
"""


SCORE_NOTE = (
    "Each hit shows its **log score** = α(s − 1) + ln q ≤ 0 (0 is a perfect match; each unit lower is a "
    "factor e less), the **cosine** s of the sentence and the video window, and the **quality** q in "
    "[0, 1], the model's estimate of the moment's overlap with the truth."
)


def fmt_time(seconds: float) -> str:
    """m:ss.s

    >>> fmt_time(75.25)
    '1:15.2'
    """
    m, s = divmod(float(seconds), 60)
    return f"{int(m)}:{s:04.1f}"


def moments_html(pred: dict[str, Any], top_k: int = 10) -> str:
    """The top-k moments of a submission record: bars on a timeline of the video, then a ranked list."""
    windows = list(pred.get("pred_relevant_windows") or [])[:top_k]
    if not windows:
        return '<p class="sadetr-empty">No moments.</p>'
    duration = float(pred.get("duration") or max(w[1] for w in windows)) or 1.0
    scores = [w[2] for w in windows]
    lo, hi = min(scores), max(scores)
    bars, items = [], []
    for rank, (s, e, score) in enumerate(windows, start=1):
        label = f"#{rank} {fmt_time(s)}–{fmt_time(e)} score {score:.3f}"
        opacity = 0.35 + 0.65 * ((score - lo) / (hi - lo) if hi > lo else 1.0)
        bars.append(
            f'<div class="sadetr-moment" data-start="{s:.3f}" data-end="{e:.3f}" '
            f'title="{html.escape(label)}" '
            f'style="left:{100 * s / duration:.3f}%;width:{100 * (e - s) / duration:.3f}%;'
            f'opacity:{opacity:.2f}"></div>'
        )
        items.append(
            f'<li><button class="sadetr-moment" data-rank="{rank}" data-start="{s:.3f}" '
            f'data-end="{e:.3f}">{html.escape(label)}</button></li>'
        )
    return (
        f'<div class="sadetr-timeline" title="0 – {fmt_time(duration)}">{"".join(bars)}</div>'
        f'<ol class="sadetr-list">{"".join(items)}</ol>'
    )


def hit_scores(hit: Any) -> str:
    """The readable scores of a corpus hit (docs/corpus.md "Score fusion").

    >>> from types import SimpleNamespace as H
    >>> hit_scores(H(log_score=-61.234, retrieval_score=0.4, quality=0.8))
    'log score -61.2 · cosine 0.40 · quality 0.80'
    """
    return f"log score {hit.log_score:.1f} · cosine {hit.retrieval_score:.2f} · quality {hit.quality:.2f}"


def hits_html(hits: Sequence[Any], thumbs: Sequence[bytes] = ()) -> str:
    """Corpus hits (`SearchHit`s): thumbnail, video id, time range, readable scores, Play."""
    if not hits:
        return '<p class="sadetr-empty">No hits.</p>'
    rows = []
    for i, hit in enumerate(hits):
        thumb = thumbs[i] if i < len(thumbs) else b""
        img = (
            f'<img alt="" src="data:image/png;base64,{base64.b64encode(thumb).decode("ascii")}">'
            if thumb
            else ""
        )
        rows.append(
            f'<div class="sadetr-hit" data-hit="{i}" data-video="{html.escape(str(hit.video))}" '
            f'data-start="{hit.start:.3f}">{img}<div><b>{html.escape(str(hit.video))}</b> '
            f"{fmt_time(hit.start)}–{fmt_time(hit.end)} · {html.escape(hit_scores(hit))}<br>"
            f'<button data-hit="{i}">Play</button></div></div>'
        )
    return "".join(rows)
