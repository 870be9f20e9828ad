"""Inference backends: what runs the eval model on one padded batch.

A backend is called like the model, `backend(video_feat, video_mask, text_feat, text_mask)` (tensors
[B, Lv, Dv], [B, Lv] bool, [B, Lt, Dt], [B, Lt] bool), and returns at least `pred_spans` [B, Nq, 2]
(center, width), `pred_quality` [B, Nq], `saliency_scores` [B, Lv] and `video_mask` [B, Lv] as CPU or
device tensors: the input of the one post-processing (`sadetr.model.postprocess`).

- `TorchBackend`: the eager PyTorch model (`--backend torch`).
- `OnnxBackend`: an onnxruntime session over a graph written by `sadetr export` (`--backend onnx`, and
  `onnx-int8` for its dynamically quantised copy); the CPU provider, or CUDA's where onnxruntime has it
  and the device asks for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from sadetr.core.errors import CheckpointError, ConfigError
from sadetr.inference import BACKENDS

log = logging.getLogger(__name__)


INPUT_NAMES = ("video_feat", "video_mask", "text_feat", "text_mask")
OUTPUT_NAMES = ("pred_spans", "pred_quality", "saliency_scores")
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
# onnxruntime graph fusions left off on the CPU provider, each measured slower than the nodes it replaces:
# SkipLayerNormalization (residual Add + LayerNorm) at d = 256 took about 3x the time of the two nodes on
# their own (onnxruntime 1.30 and 1.32, one thread, AVX2); without it the batch-1 SA-DETR graph runs ~8 %
# faster and batch 32 ~7 % faster, with the same outputs to 4e-7 (docs/research/speed.md).
CPU_DISABLED_FUSIONS = ("SkipLayerNormFusion",)


class Backend(Protocol):
    """Runs the eval model on one padded batch (module docstring)."""

    name: str

    def __call__(
        self, video_feat: Tensor, video_mask: Tensor, text_feat: Tensor, text_mask: Tensor
    ) -> dict[str, Tensor]: ...


class TorchBackend:
    """The eager PyTorch model in eval mode, without autograd."""

    name = "torch"

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu") -> None:
        self.model = model.eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(
        self, video_feat: Tensor, video_mask: Tensor, text_feat: Tensor, text_mask: Tensor
    ) -> dict[str, Tensor]:
        return self.model(video_feat, video_mask, text_feat, text_mask)


def check_backend(name: str) -> str:
    """`name` if it is a known backend, else a `ConfigError` naming --backend."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r} (one of {', '.join(BACKENDS)})", key="--backend")
    return name


def onnx_providers(device: str | torch.device) -> list[str]:
    """onnxruntime execution providers for `device`: CUDA first when asked and available, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        log.warning("onnxruntime has no CUDA provider here (%s); running on the CPU", ", ".join(available))
    return ["CPUExecutionProvider"]


class OnnxBackend:
    """An onnxruntime session over an exported eval model (`sadetr.inference.export`).

    Inputs longer than the lengths the graph was exported for (`max_v_l` clips, `max_q_l` tokens) are
    refused: the export traced the model only up to them.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_v_l: int = 0,
        max_q_l: int = 0,
        device: str | torch.device = "cpu",
        threads: int = 0,
        name: str = "onnx",
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no ONNX graph here (write one with sadetr export --format onnx)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no warnings about unused initialisers
        providers = onnx_providers(device)
        disabled = list(CPU_DISABLED_FUSIONS) if providers == ["CPUExecutionProvider"] else []
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=providers, disabled_optimizers=disabled
            )
        except Exception as err:  # onnxruntime raises its own exception types for a corrupt graph
            raise CheckpointError(f"{path}: not a loadable ONNX graph ({type(err).__name__})") from None
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUT_NAMES:
            raise CheckpointError(f"{path}: graph inputs {names}, expected {INPUT_NAMES}")
        self.path = path
        self.name = name
        self.max_v_l, self.max_q_l = int(max_v_l), int(max_q_l)

    def __call__(
        self, video_feat: Tensor, video_mask: Tensor, text_feat: Tensor, text_mask: Tensor
    ) -> dict[str, Tensor]:
        if self.max_v_l > 0 and video_feat.shape[1] > self.max_v_l:
            raise ValueError(f"{video_feat.shape[1]} clips exceed the exported maximum {self.max_v_l}")
        if self.max_q_l > 0 and text_feat.shape[1] > self.max_q_l:
            raise ValueError(f"{text_feat.shape[1]} tokens exceed the exported maximum {self.max_q_l}")
        feeds: dict[str, Any] = {
            "video_feat": _numpy(video_feat, np.float32),
            "video_mask": _numpy(video_mask, np.bool_),
            "text_feat": _numpy(text_feat, np.float32),
            "text_mask": _numpy(text_mask, np.bool_),
        }
        spans, quality, saliency = self.session.run(list(OUTPUT_NAMES), feeds)
        return {
            "pred_spans": torch.from_numpy(spans),  # (B, Nq, 2)
            "pred_quality": torch.from_numpy(quality),  # (B, Nq)
            "saliency_scores": torch.from_numpy(saliency),  # (B, Lv)
            "video_mask": torch.from_numpy(feeds["video_mask"]),  # (B, Lv)
        }


def _numpy(x: Tensor, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=dtype)
