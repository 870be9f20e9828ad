"""Which instants of a video each extractor sees: explicit timestamps per clip.

Clip i covers [i * clip_len, (i + 1) * clip_len). CLIP sees one frame, at the clip centre.
SlowFast R50 8x8 sees T_fast = 32 frames evenly spaced over the clip (at the centres of 32 equal
sub-intervals: 16 fps for 2 s clips) and its slow pathway the 8 of them picked by
`linspace(0, 31, 8).long()` = [0, 4, 8, 13, 17, 22, 26, 31], as the HERO/Moment-DETR extractor
packs its pathways (alpha = 4). Timestamps past the end of the video are clamped to it.
"""

from __future__ import annotations

import torch

FAST_FRAMES = 32  # T of SlowFast 8x8 (fast pathway)
SLOWFAST_ALPHA = 4  # fast/slow frame-rate ratio


def clip_centre_times(n_clips: int, clip_len: float, duration: float) -> list[float]:
    """One timestamp per clip, at its centre: (i + 0.5) * clip_len.

    >>> clip_centre_times(3, 2.0, 5.0)
    [1.0, 3.0, 4.999]
    """
    return [min((i + 0.5) * clip_len, _last_instant(duration)) for i in range(n_clips)]


def fast_times(clip_index: int, clip_len: float, duration: float, n: int = FAST_FRAMES) -> list[float]:
    """`n` timestamps evenly spread over clip `clip_index`: start + (k + 0.5) * clip_len / n.

    >>> fast_times(1, 2.0, 10.0, n=4)
    [2.25, 2.75, 3.25, 3.75]
    """
    start = clip_index * clip_len
    return [min(start + (k + 0.5) * clip_len / n, _last_instant(duration)) for k in range(n)]


def slow_indices(n_fast: int = FAST_FRAMES, alpha: int = SLOWFAST_ALPHA) -> list[int]:
    """Indices into the fast frames that form the slow pathway (pytorchvideo/HERO PackPathway).

    >>> slow_indices(32, 4)
    [0, 4, 8, 13, 17, 22, 26, 31]
    """
    return torch.linspace(0, n_fast - 1, n_fast // alpha).long().tolist()


def _last_instant(duration: float) -> float:
    return max(0.0, duration - 1e-3)
