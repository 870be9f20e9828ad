"""The Gradio app: "One video" (moments, timeline, saliency, a player that seeks) and "Library" (index).

All model work goes through the service's queue (`MomentService.call`), shared with nothing else
in this process. Offline: system fonts only, no share link, no analytics, no server-side rendering
(no Node), no hub. The player seeks in the browser: a click on a moment sets `currentTime` of the
`<video>` in `#sadetr-player` (One video) or, after loading the hit's video, in `#sadetr-library-player`.
A tab is shown only when this configuration can answer it (`plan.AppPlan`), and the page says at the
top what the app can and cannot do. On the synthetic demo
(`--demo`) the Library takes the demo's own sentences (typed or picked) and plays a placeholder video.
The web server may serve only the exact video files the app shows (`media.allowed_videos`).
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr

from sadetr.core.errors import SadetrError
from sadetr.inference.viz import figure_png, thumbnails
from sadetr.serve.service import MomentService
from sadetr.webapp.media import browser_playable
from sadetr.webapp.placeholder import placeholder_video
from sadetr.webapp.plan import AppPlan
from sadetr.webapp.render import CSS, hits_html, moments_html

log = logging.getLogger(__name__)

PLAYER_ID, LIBRARY_PLAYER_ID = "sadetr-player", "sadetr-library-player"

# a click on an element with data-start seeks the One-video player there
SEEK_ON_CLICK = f"""
element.addEventListener('click', (event) => {{
  const m = event.target.closest('[data-start]');
  const v = document.querySelector('#{PLAYER_ID} video');
  if (!m || !v) return;
  const t = parseFloat(m.dataset.start);
  const seek = () => {{ v.currentTime = t; }};
  if (v.readyState >= 1) seek(); else v.addEventListener('loadedmetadata', seek, {{ once: true }});
  element.querySelectorAll('.active').forEach((x) => x.classList.remove('active'));
  m.classList.add('active');
}});
"""

# a click on a hit tells the server which one (it loads that video into the library player)
HIT_ON_CLICK = """
element.addEventListener('click', (event) => {
  const h = event.target.closest('[data-hit]');
  if (h) trigger('click', { hit: h.dataset.hit });
});
"""

# after the library player got its video: seek to `t` once it has metadata
SEEK_LIBRARY = f"""
(t) => {{
  let tries = 0;
  const go = () => {{
    const v = document.querySelector('#{LIBRARY_PLAYER_ID} video');
    if (v && v.readyState >= 1) {{ v.currentTime = t; return; }}
    if (tries++ < 100) setTimeout(go, 100);
  }};
  setTimeout(go, 150);
  return t;
}}
"""


def offline_theme() -> gr.themes.Base:
    """Gradio's base theme with system fonts only (the default theme would fetch fonts)."""
    return gr.themes.Base(
        font=("ui-sans-serif", "system-ui", "sans-serif"), font_mono=("ui-monospace", "monospace")
    )


class App:
    """State of one app process: the service, the videos to choose from, a cache of encoded videos."""

    def __init__(self, service: MomentService, videos: dict[str, Path], cache_dir: Path, top_k: int = 10):
        self.service = service
        self.videos = videos
        self.cache_dir = cache_dir
        self.top_k = top_k
        self.demo = service.demo
        self.plan = AppPlan(service)
        self._features: OrderedDict[tuple[str, int], Any] = OrderedDict()  # touched on the model thread only

    def _encode(self, path: Path) -> Any:
        key = (str(path), path.stat().st_mtime_ns)
        if key not in self._features:
            self._features[key] = self.service.predictor.encode_video(path)
            while len(self._features) > 8:
                self._features.popitem(last=False)
        self._features.move_to_end(key)
        return self._features[key]

    def _analyse(self, path: Path, query: str) -> dict[str, Any]:  # on the model thread
        return self.service.moments(query, features=self._encode(path))

    def video_file(self, video_id: str) -> Path | None:
        """The file to play for a library video: one of the app's videos, the demo's placeholder, or None."""
        if video_id in self.videos:
            return self.videos[video_id]
        searcher = self.service.searcher
        if self.demo is not None and searcher is not None and video_id in searcher.videos:
            return placeholder_video(video_id, searcher.duration(video_id), self.cache_dir)
        return None

    # ------------------------------------------------------------------ handlers

    def playable(self, video: str | None) -> str | None:
        return None if not video else str(browser_playable(video, self.cache_dir))

    def choose(self, name: str | None) -> str | None:
        return self.playable(str(self.videos[name])) if name in self.videos else None

    def find(self, video: str | None, query: str) -> tuple[str, Any, str]:
        from PIL import Image

        if not video:
            raise gr.Error("Upload or choose a video first.")
        try:
            query = self.service.check_query(query)
            self.service.check_video(Path(video))
            if not self.service.accepts_video:
                raise SadetrError("this app cannot read videos: start it with --clip (and --slowfast)")
            pred = self.service.call(self._analyse, Path(video), query)
        except SadetrError as err:
            raise gr.Error(str(err)) from None
        png = figure_png(pred, self.service.predictor.clip_len, top_k=min(5, self.top_k))
        n = len(pred["pred_relevant_windows"])
        status = f"{min(n, self.top_k)} of {n} moments in {pred['duration']:.1f} s · click one to jump there"
        return moments_html(pred, self.top_k), Image.open(io.BytesIO(png)), status

    def search(self, query: str) -> tuple[str, list[tuple[str, float]]]:

        try:
            query = self.service.check_query(query)
            hits = self.service.call(self.service.search, query, top=self.top_k)
        except SadetrError as err:
            raise gr.Error(str(err)) from None
        thumbs = []
        for hit in hits:
            path = self.videos.get(hit.video)  # the demo's placeholders have nothing to show
            try:
                thumbs.append(thumbnails(path, [(hit.start, hit.end)])[0] if path else b"")
            except Exception:  # a thumbnail is decoration: an unreadable file shows none
                log.warning("no thumbnail for %s", hit.video, exc_info=True)
                thumbs.append(b"")
        return hits_html(hits, thumbs), [(h.video, float(h.start)) for h in hits]

    def play(self, state: list[tuple[str, float]], evt: gr.EventData) -> tuple[str | None, float]:
        index = int(getattr(evt, "hit", -1))
        if not 0 <= index < len(state):
            raise gr.Error("no such hit")
        video_id, start = state[index]
        path = self.video_file(video_id)
        if path is None:
            raise gr.Error("this video's file is not in --videos")
        return self.playable(str(path)), start

    def pick(self, query: str | None) -> tuple[str, str, list[tuple[str, float]]]:
        """A demo sentence picked from the list: it fills the search box and is searched."""
        if not query:
            return "", "", []
        return (query, *self.search(query))

    # ------------------------------------------------------------------ layout

    def blocks(self) -> gr.Blocks:
        # uploads in Gradio's cache are deleted an hour after upload (checked every 30 min)
        with gr.Blocks(title="sadetr", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
            gr.Markdown("## sadetr: find moments in videos")
            gr.Markdown(self.plan.intro(), elem_id="sadetr-intro")
            with gr.Tabs():
                if self.plan.can_analyse:
                    with gr.Tab("One video"):
                        self._one_video_tab()
                if self.plan.can_search:
                    with gr.Tab("Library"):
                        self._library_tab()
        return demo

    def _one_video_tab(self) -> None:
        with gr.Row():
            with gr.Column(scale=1):
                player = gr.Video(label="Video", sources=["upload"], elem_id=PLAYER_ID, format=None)
                if self.videos:
                    choice = gr.Dropdown(
                        choices=list(self.videos),
                        value=None,
                        label="or choose a video",
                        elem_id="sadetr-choose",
                    )
                    choice.change(self.choose, inputs=choice, outputs=player)
                query = gr.Textbox(
                    label="Sentence", placeholder="a man opens the door", elem_id="sadetr-query"
                )
                go = gr.Button("Find moments", variant="primary", elem_id="sadetr-find")
            with gr.Column(scale=1):
                status = gr.Markdown(elem_id="sadetr-status")
                moments = gr.HTML("", elem_id="sadetr-moments", js_on_load=SEEK_ON_CLICK)
                plot = gr.Image(
                    label="Saliency per clip", type="pil", elem_id="sadetr-saliency", interactive=False
                )
        player.upload(self.playable, inputs=player, outputs=player)
        for event in (go.click, query.submit):
            event(self.find, inputs=[player, query], outputs=[moments, plot, status])

    def _library_tab(self) -> None:
        state = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                label = "Search all videos" + (
                    " (one of the synthetic demo's sentences)" if self.demo else ""
                )
                query = gr.Textbox(label=label, elem_id="sadetr-library-query")
                if self.demo is not None:
                    sentences = list(dict.fromkeys(q.query for q in self.demo.queries))
                    pick = gr.Dropdown(
                        choices=sentences, value=None, label="or pick one", elem_id="sadetr-demo-query"
                    )
                go = gr.Button("Search", variant="primary")
                hits = gr.HTML("", elem_id="sadetr-hits", js_on_load=HIT_ON_CLICK)
            with gr.Column(scale=1):
                player = gr.Video(label="Hit", elem_id=LIBRARY_PLAYER_ID, interactive=False, format=None)
                start = gr.Number(visible="hidden", value=0.0)
        for event in (go.click, query.submit):
            event(self.search, inputs=query, outputs=[hits, state])
        if self.demo is not None:
            pick.input(self.pick, inputs=pick, outputs=[query, hits, state])
        hits.click(self.play, inputs=state, outputs=[player, start]).then(
            None, inputs=start, outputs=None, js=SEEK_LIBRARY
        )


def launch(
    service: MomentService,
    *,
    videos: dict[str, Path],
    cache_dir: Path,
    host: str = "127.0.0.1",
    port: int = 7860,
    top_k: int = 10,
) -> None:
    """Build and serve the app until interrupted (blocking); `videos` (`media.allowed_videos`) are the
    only files of the machine the web server may hand out, besides what the app itself makes."""
    app = App(service, videos, cache_dir, top_k)
    app.plan.check_usable()
    print(app.plan.intro().replace("**", ""), flush=True)
    app.blocks().queue(default_concurrency_limit=4).launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        theme=offline_theme(),
        css=CSS,
        allowed_paths=sorted(str(p) for p in videos.values()),
        max_file_size=service.limits.max_upload_bytes,
        footer_links=[],
        show_error=True,
    )
