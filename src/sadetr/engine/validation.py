"""Prediction over a split (batched forward passes -> submission records) and its scoring via
`sadetr.eval`: the trainer's validation and `sadetr predict` on a split."""

from __future__ import annotations

from collections.abc import Callable, Sequence, Sized
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sadetr.engine.distributed import DistInfo, gather_lists, shard_indices
from sadetr.eval import evaluate
from sadetr.model.postprocess import to_submission

# What predicts a batch: the model, or an inference backend with the same call (e.g. an onnxruntime
# session, `sadetr.inference.backend`): (video_feat, video_mask, text_feat, text_mask) -> outputs.
BatchModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], dict[str, Any]]


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors (and lists of tensors) of a collated batch onto `device`; `meta` stays as is."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            out[key] = value.to(device, non_blocking=True)
        elif isinstance(value, list) and value and torch.is_tensor(value[0]):
            out[key] = _move_list(value, device)
        else:
            out[key] = value
    return out


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX, as oneDNN reports it)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _move_list(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """A list of tensors (e.g. each sample's GT spans) onto `device` in one copy when they share dtype and
    trailing shape (concatenated, moved, split into views); one copy per tensor otherwise."""
    first = tensors[0]
    if (
        first.device == device
        or first.dim() == 0
        or any(t.dtype != first.dtype or t.shape[1:] != first.shape[1:] for t in tensors)
    ):
        return [t.to(device, non_blocking=True) for t in tensors]
    moved = torch.cat(tensors).to(device, non_blocking=True)
    return list(moved.split([int(t.shape[0]) for t in tensors]))


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast when asked, on CUDA and on a CPU with native bf16 (elsewhere emulated bf16 would be
    slower than fp32); a no-op context otherwise."""
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and native)


def to_float32(obj: Any) -> Any:
    """Floating tensors inside nested dicts/lists as float32 (after bf16 autocast; scipy/numpy need it)."""
    if torch.is_tensor(obj):
        return obj.float() if obj.is_floating_point() and obj.dtype != torch.float32 else obj
    if isinstance(obj, dict):
        return {k: to_float32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_float32(v) for v in obj)
    return obj


@torch.no_grad()
def predict_dataset(
    model: nn.Module | BatchModel,
    dataset: Dataset,
    collate_fn: Any,
    device: torch.device,
    batch_size: int = 32,
    num_workers: int = 0,
    bf16: bool = False,
    dist_info: DistInfo | None = None,
    indices: Sequence[int] | None = None,
    round_to_clip: bool = True,
) -> list[dict[str, Any]]:
    """Submission records for `dataset` (every rank predicts its shard; all ranks get the full list).

    model: the model being trained / evaluated, or an inference backend (`sadetr.inference.backend`:
    the same call, e.g. an onnxruntime session).
    round_to_clip: snap windows to the clip grid, >= 1 clip wide (`model.round_to_clip`; the field's
    protocol, `sadetr.model.postprocess.snap_to_clip_grid`)."""

    info = dist_info or DistInfo()
    if indices is None:
        # cast: torch's Dataset type leaves out __len__, which every map-style dataset has
        indices = shard_indices(len(cast(Sized, dataset)), info.rank, info.world_size)
    batches = [list(indices[i : i + batch_size]) for i in range(0, len(indices), batch_size)]
    # An own generator: creating the loader must not draw from (and so shift) the training RNG stream.
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate_fn,
        num_workers=num_workers,
        generator=torch.Generator(),
    )
    module = model if isinstance(model, nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    records: list[dict[str, Any]] = []
    try:
        for batch in loader:
            b = move_batch(batch, device)
            with autocast(device, bf16):
                out = model(b["video_feat"], b["video_mask"], b["text_feat"], b["text_mask"])
            out = to_float32(out)
            records.extend(to_submission(out, batch["meta"], round_to_clip=round_to_clip))
    finally:
        if module is not None:
            module.train(was_training)
    return gather_lists(records, info)


def score(submission: list[dict[str, Any]], ground_truth: list[dict[str, Any]]) -> dict[str, Any]:
    """`sadetr.eval.evaluate` of a submission against the split's annotation records."""

    return evaluate(submission, ground_truth)
