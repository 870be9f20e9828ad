"""Typed configuration of training (`TrainConfig`): optimiser, schedule, seeds, evaluation, logging.

Defaults are the paper's QVHighlights setting (section 4.2, appendix A.2, Table 9); what the paper
does not give (weight decay, gradient clipping) is from the Moment-DETR / QD-DETR code (docs/readings.md).
Only the engine's `build_*` functions read this object.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of one training run."""

    epochs: int = 200
    batch_size: int = 32  # global batch: split evenly over the processes of a distributed run
    lr: float = 1e-4
    weight_decay: float = 1e-4  # AdamW
    grad_clip: float = 0.1  # max gradient L2 norm; 0 disables clipping
    # constant | cosine | constant_cosine (constant for `lr_constant_epochs`, then cosine to 0 by the
    # last epoch: the QVHighlights schedule of appendix A.2)
    lr_schedule: str = "constant_cosine"
    lr_constant_epochs: int = 40
    seed: int = 2018
    deterministic: bool = False  # torch.use_deterministic_algorithms(True)
    eval_every: int = 1  # evaluate on `eval_split` every N epochs (and after the last one); 0 = never
    eval_split: str = "val"
    selection_metric: str = "MR-full-mAP"  # key of metrics["brief"] that picks best.ckpt (higher is better)
    num_workers: int = -1  # DataLoader workers per training process; -1 = auto (4 on CUDA, 0 on CPU)
    bf16: bool = False  # bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX)
    compile: bool = False  # torch.compile the model's training forward (dynamic shapes; docs/training.md)
    checkpoint_every_steps: int = 0  # also write last.ckpt every N optimiser steps (0 = epoch ends only)
    log_every_steps: int = 10  # TensorBoard / metrics.jsonl interval for training losses
    tensorboard: bool = True
    progress: bool = True  # progress bar with loss and samples/s
    device: str = "auto"  # auto | cpu | cuda | cuda:N
