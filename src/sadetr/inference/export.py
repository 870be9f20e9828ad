"""ONNX export of the eval model (`sadetr export --format onnx`), and its int8 dynamic quantisation.

The unchanged eval model (SA-DETR, QD-DETR or Moment-DETR) is traced by `torch.onnx.export(dynamo=True)`
with a dynamic batch and dynamic video / query lengths up to the pipeline's `max_v_l` / `max_q_l`. Its
inputs are the model's (`video_feat`, `video_mask`, `text_feat`, `text_mask`), its outputs the three
tensors the post-processing reads (`pred_spans`, `pred_quality`, `saliency_scores`). Every export is
checked at once against the eager model on a padded batch; a graph that disagrees is not written.
`quantize_int8` writes a copy with int8 weights (onnxruntime dynamic quantisation: activations are
quantised on the fly), offered with its measured accuracy (docs/deploy.md).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sadetr.core.atomic import atomic_path
from sadetr.core.errors import CheckpointError
from sadetr.data.pipeline import FeaturePipeline
from sadetr.inference.backend import INPUT_NAMES, OUTPUT_NAMES, OnnxBackend

PARITY_TOL = 1e-4  # the largest |ONNX - eager| an export may show on its check batch
QUIET_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir", "torch._dynamo", "root")


class EvalGraph(nn.Module):
    """The eval model with the outputs the post-processing needs, as a tuple (what ONNX exports)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, video_feat: Tensor, video_mask: Tensor, text_feat: Tensor, text_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(video_feat, video_mask, text_feat, text_mask)
        return out["pred_spans"], out["pred_quality"], out["saliency_scores"]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and warnings (e.g. 'torchvision is not installed') silenced."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def check_batch(pipeline: FeaturePipeline, seed: int = 0) -> tuple[Tensor, ...]:
    """A padded batch of 3 random inputs within the exported lengths (the second video and the third
    query padded): (video_feat [3, Lv, Dv], video_mask [3, Lv], text_feat [3, Lt, Dt], text_mask [3, Lt])."""
    g = torch.Generator().manual_seed(seed)
    lv = min(pipeline.max_v_l, 24) if pipeline.max_v_l > 0 else 24
    lt = min(pipeline.max_q_l, 9) if pipeline.max_q_l > 0 else 9
    video = torch.nn.functional.normalize(torch.randn(3, lv, pipeline.video_dim, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(3, lt, pipeline.text_dim, generator=g), dim=-1)
    video_mask = torch.ones(3, lv, dtype=torch.bool)
    text_mask = torch.ones(3, lt, dtype=torch.bool)
    video_mask[1, max(1, lv // 2) :] = False
    text_mask[2, max(1, lt // 2) :] = False
    return video, video_mask, text, text_mask


def export_onnx(model: nn.Module, pipeline: FeaturePipeline, path: str | Path) -> dict[str, Any]:
    """Write the eval model of `model` as ONNX to `path` (atomically); returns its export settings (the
    dynamic dims, versions, the parity check's largest difference). `CheckpointError` if the exported
    graph disagrees with the eager model by more than `PARITY_TOL`."""
    import onnxruntime

    path = Path(path)
    graph = EvalGraph(model.eval())
    example = check_batch(pipeline, seed=1)
    batch = torch.export.Dim("batch", min=1)
    clips = torch.export.Dim("clips", min=1, max=pipeline.max_v_l) if pipeline.max_v_l > 0 else None
    tokens = torch.export.Dim("tokens", min=1, max=pipeline.max_q_l) if pipeline.max_q_l > 0 else None
    clips = clips if clips is not None else torch.export.Dim("clips", min=1)
    tokens = tokens if tokens is not None else torch.export.Dim("tokens", min=1)
    dynamic = ({0: batch, 1: clips}, {0: batch, 1: clips}, {0: batch, 1: tokens}, {0: batch, 1: tokens})
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            verbose=False,
        )
    with atomic_path(path) as tmp:
        assert program is not None  # dynamo=True always returns the program
        program.save(str(tmp))
        diff = parity(graph, tmp, pipeline)
        if diff > PARITY_TOL:
            raise CheckpointError(f"{path}: the exported graph differs from the eager model by {diff:.2e}")
    return {
        "batch": ">= 1",
        "clips": f"1..{pipeline.max_v_l}" if pipeline.max_v_l > 0 else ">= 1",
        "tokens": f"1..{pipeline.max_q_l}" if pipeline.max_q_l > 0 else ">= 1",
        "torch": torch.__version__.split("+")[0],
        "onnxruntime": onnxruntime.__version__,
        "parity_max_abs_diff": float(f"{diff:.3g}"),
    }


def parity(graph: nn.Module, onnx_path: str | Path, pipeline: FeaturePipeline) -> float:
    """Largest |onnxruntime - eager| over the outputs of `check_batch` (padded)."""
    inputs = check_batch(pipeline)
    with torch.no_grad():
        eager = graph(*inputs)
    ort = OnnxBackend(onnx_path, max_v_l=pipeline.max_v_l, max_q_l=pipeline.max_q_l)(*inputs)
    return max(float((ort[k] - e).abs().max()) for k, e in zip(OUTPUT_NAMES, eager))


def quantize_int8(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """onnxruntime dynamic quantisation of `src` (int8 weights of MatMul/Gemm, activations quantised at run
    time) into `dst`, atomically; returns its settings."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    del model.graph.value_info[:]  # the exporter's shape annotations trip the quantiser's shape inference
    with atomic_path(Path(dst)) as tmp, _quiet():
        staged = tmp.with_name(tmp.name + ".fp32.onnx")
        try:
            onnx.save(model, str(staged))
            quantize_dynamic(str(staged), str(tmp), weight_type=QuantType.QInt8)
        finally:
            staged.unlink(missing_ok=True)
    return {"quantization": "onnxruntime dynamic, int8 weights (QInt8)", "from": Path(src).name}
