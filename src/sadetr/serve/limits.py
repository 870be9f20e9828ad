"""Request limits of the service and the browser app: upload size, video length, query length, time."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from sadetr.core import ranges

# each limit's range (`sadetr.core.ranges`) and its flag on `sadetr serve` / `sadetr app`
LIMIT_RANGES: dict[str, tuple[ranges.Range, str]] = {
    "max_upload_mb": (ranges.UPLOAD_MB, "--max-upload-mb"),
    "max_video_s": (ranges.VIDEO_S, "--max-video-s"),
    "max_query_chars": (ranges.QUERY_CHARS, "--max-query-chars"),
    "timeout_s": (ranges.TIMEOUT_S, "--timeout-s"),
    "max_pending": (ranges.PENDING, "--max-pending"),
}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything beyond gets a 4xx (413 size, 422 content, 503/504 load).

    Every limit is checked against its range on construction (NaN, infinities and non-positive values
    are refused with a `ConfigError` naming the limit).
    """

    max_upload_mb: float = 200.0  # one uploaded file (video or features)
    max_video_s: float = 1800.0  # video duration (or clips x clip_len of uploaded features)
    max_query_chars: int = 500
    timeout_s: float = 120.0  # queue wait + compute of one request
    max_pending: int = 32  # requests waiting for the model; more are refused with 503

    def __post_init__(self) -> None:
        for f in fields(self):
            LIMIT_RANGES[f.name][0].check(getattr(self, f.name), f.name)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
