"""Request limits of the service and the browser app: upload size, video length, query length, time."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything beyond gets a 4xx (413 size, 422 content, 503/504 load)."""

    max_upload_mb: float = 200.0  # one uploaded file (video or features)
    max_video_s: float = 1800.0  # video duration (or clips x clip_len of uploaded features)
    max_query_chars: int = 500
    timeout_s: float = 120.0  # queue wait + compute of one request
    max_pending: int = 32  # requests waiting for the model; more are refused with 503

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
