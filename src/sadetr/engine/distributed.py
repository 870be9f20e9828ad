"""Multi-process data parallel: process-group setup, deterministic batch sharding, result gathering.

Under `torchrun` (RANK/WORLD_SIZE/LOCAL_RANK in the environment) training runs one process per device
with `DistributedDataParallel` (nccl on CUDA, gloo on CPU). `train.batch_size` is the GLOBAL batch: each
optimiser step takes the next `batch_size` indices of the epoch's permutation and rank r trains on the
r-th contiguous chunk, so a run on k processes sees exactly the batches of a 1-process run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from sadetr.core.devices import resolve_device as resolve
from sadetr.core.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(pref: str, local_rank: int = 0, key: str = "train.device") -> torch.device:
    """`auto` -> cuda:local_rank when CUDA is available, else cpu; see
    `sadetr.core.devices.resolve_device`."""

    return resolve(pref, key, local_rank)


def init_distributed(device_pref: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group described by torchrun's environment (if any); pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_pref)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank), device


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The epoch's sample order, a pure function of (seed, epoch): identical on every rank and resume."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


class ShardedBatchSampler:
    """Batches of this rank's share of each global batch, in a deterministic per-epoch order.

    Global batch s = perm[s*B : (s+1)*B]; rank r gets chunk r of `np.array_split(batch, world)`.
    With k ranks, a final global batch smaller than k is dropped (every rank must take part in a step).
    `set_epoch(e)` picks the order; `start_step` skips batches already consumed (mid-epoch resume).
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if global_batch < world_size:
            raise ConfigError(
                f"global batch {global_batch} smaller than {world_size} processes", key="train.batch_size"
            )
        self.num_samples, self.global_batch, self.seed = num_samples, global_batch, seed
        self.rank, self.world_size, self.shuffle, self.drop_last = rank, world_size, shuffle, drop_last
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def num_steps(self) -> int:
        """Optimiser steps per epoch."""
        full, rest = divmod(self.num_samples, self.global_batch)
        keep_rest = rest > 0 and not self.drop_last and rest >= self.world_size
        return full + int(keep_rest)

    def __len__(self) -> int:
        return max(0, self.num_steps() - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        perm = epoch_permutation(self.num_samples, self.seed, self.epoch, self.shuffle)
        for step in range(self.start_step, self.num_steps()):
            batch = perm[step * self.global_batch : (step + 1) * self.global_batch]
            yield np.array_split(batch, self.world_size)[self.rank].tolist()


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Contiguous, non-padded shard of `range(n)` for evaluation (gathered back in order)."""
    return np.array_split(np.arange(n), world_size)[rank].tolist()


def gather_lists(items: list[Any], info: DistInfo) -> list[Any]:
    """Concatenate every rank's list in rank order (all ranks get the result)."""
    if not info.is_distributed:
        return items
    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.is_distributed:
        dist.barrier()
