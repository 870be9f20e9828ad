"""What the browser app can do with its configuration: which tabs work, what the page says, what is refused.

No Gradio here, so that `sadetr app` refuses a configuration that could answer nothing before Gradio is
imported. "One video" needs the video backbones and a text encoder; "Library" needs an index and either
a text encoder or the synthetic demo's own sentences.
"""

from __future__ import annotations

from sadetr.core.errors import ConfigError
from sadetr.serve.service import MomentService
from sadetr.webapp.render import SCORE_NOTE


class AppPlan:
    """The tabs of the app on `service` and the words that say what it can and cannot do."""

    def __init__(self, service: MomentService) -> None:
        self.service = service
        self.demo = service.demo

    @property
    def can_analyse(self) -> bool:
        """The One-video tab works: videos can be read and sentences encoded."""
        return self.service.accepts_video and self.service.accepts_text

    @property
    def can_search(self) -> bool:
        """The Library tab works: an index, and sentences it can encode (CLIP, or the demo's own)."""
        return self.service.searcher is not None and (self.service.accepts_text or self.demo is not None)

    def backbone_flags(self) -> str:
        """The flags that would let this checkpoint read videos: `--clip` (and `--slowfast`)."""
        slowfast = "slowfast_features" in self.service.predictor.video_sources
        return " and ".join(["--clip"] + (["--slowfast"] if slowfast else []))

    def check_usable(self) -> None:
        """`ConfigError` (one line) when no tab of this app could answer anything."""
        if not (self.can_analyse or self.can_search):
            raise ConfigError(
                f"this app could answer nothing: without {self.backbone_flags()} it reads no video and no "
                "sentence, and it has no index it could search with them; give the weights, or try "
                "`--demo` (the synthetic demo of `make demo`, no weights needed)",
                key="app",
            )

    def intro(self) -> str:
        """What this app can and cannot do, for the top of the page and the log (Markdown)."""
        lines = []
        if self.demo is not None:
            lines.append(
                f"**{self.demo.describe()}** The player shows a placeholder for each of them (the video id "
                "and a clock), since the demo's videos exist only as features."
            )
        if self.can_analyse:
            lines.append("**One video**: upload a video (or choose one) and type a sentence.")
        else:
            lines.append(
                f"**One video** is off: without CLIP weights ({self.backbone_flags()}) this app cannot read "
                "a video or encode a new sentence."
            )
        searcher = self.service.searcher
        if self.can_search and searcher is not None:
            how = "one of the demo's sentences (type it, or pick it)" if self.demo else "a sentence"
            lines.append(
                f"**Library**: search the {len(searcher.videos)} videos of the index with {how}. {SCORE_NOTE}"
            )
        elif searcher is not None:
            lines.append("**Library** is off: searching with sentences needs --clip.")
        return "\n\n".join(lines)
