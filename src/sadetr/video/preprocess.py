"""Pixel normalisation of decoded frames for each backbone (frames arrive as 224 x 224 RGB uint8).

CLIP: the OpenAI preprocessing mean/std. SlowFast: the Kinetics mean/std used by PySlowFast,
pytorchvideo and the HERO extractor (0.45, 0.225 on all channels), pixels first scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SLOWFAST_MEAN = (0.45, 0.45, 0.45)
SLOWFAST_STD = (0.225, 0.225, 0.225)


def normalize(
    frames: np.ndarray | torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 frames [..., H, W, 3] -> float [..., 3, H, W], (x / 255 - mean) / std per channel."""
    x = torch.as_tensor(np.asarray(frames)).float() / 255.0  # [..., H, W, 3]
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.movedim(-1, -3)  # [..., 3, H, W]
