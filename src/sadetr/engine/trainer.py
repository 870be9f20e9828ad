"""The training loop: AdamW + schedule, periodic evaluation, best/last checkpoints, exact resume, DDP.

`train(cfg, run_dir, resume=False)` runs one configured training to completion and returns a summary.
Run directory: `config.yaml` (resolved config), `last.ckpt` / `best.ckpt`, `metrics.jsonl`, `tb/`
(TensorBoard), `<split>_preds.jsonl` (predictions of the best model), `best_metrics.json`.

Reproducibility: the epoch's sample order is a pure function of (seed, epoch) (`ShardedBatchSampler`),
the data layer's per-sample randomness of (seed, epoch, index), and the checkpoint stores every RNG
state and the number of batches consumed in the epoch, so a run killed after a checkpoint and resumed
continues with the same batches, dropout masks and noise draws as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from sadetr.config.compose import Config, config_to_dict, save_config, stored_config
from sadetr.core.errors import CheckpointError, ConfigError, DataError, DivergedError
from sadetr.core.jsonio import write_json, write_jsonl
from sadetr.data.dataset import EVAL_NEEDS_WINDOWS, TRAIN_NEEDS_WINDOWS, SkipLog, build_dataset, collate
from sadetr.engine.checkpoint import (
    feature_pipeline,
    first_non_finite,
    load_checkpoint,
    non_finite_entries,
    save_checkpoint,
)
from sadetr.engine.distributed import (
    ShardedBatchSampler,
    barrier,
    broadcast_object,
    gather_lists,
    init_distributed,
)
from sadetr.engine.logger import RunLogger
from sadetr.engine.rng import get_rng_state, seed_everything, set_rng_state
from sadetr.engine.rundir import clear_run
from sadetr.engine.schedule import build_optimizer, build_scheduler
from sadetr.engine.validation import autocast, move_batch, predict_dataset, score, to_float32
from sadetr.eval import evaluate
from sadetr.eval.submission import MAX_DURATION, num_saliency_clips
from sadetr.model.build import build_criterion, build_model
from sadetr.model.losses import mean_over_processes

log = logging.getLogger(__name__)


def validate_config(cfg: Config) -> None:
    """Cross-section consistency that no single dataclass can check (feature widths, batch, epochs)."""
    if cfg.model.video_dim != cfg.data.video_feat_dim:
        raise ConfigError(
            f"{cfg.model.video_dim} != width of the video features ({cfg.data.video_feat_dim} = "
            f"sum(data.video_dims){' + 2 (TEF)' if cfg.data.use_tef else ''})",
            key="model.video_dim",
        )
    if cfg.model.text_dim != cfg.data.text_feat_dim:
        raise ConfigError(
            f"{cfg.model.text_dim} != data.text_dim ({cfg.data.text_feat_dim})", key="model.text_dim"
        )
    for key, value in (("train.epochs", cfg.train.epochs), ("train.batch_size", cfg.train.batch_size)):
        if value < 1:
            raise ConfigError(f"must be >= 1, got {value}", key=key)
    if cfg.train.lr <= 0:
        raise ConfigError(f"must be > 0, got {cfg.train.lr}", key="train.lr")
    if cfg.train.num_workers < -1:
        raise ConfigError(f"must be >= 0, or -1 (auto), got {cfg.train.num_workers}", key="train.num_workers")


# DataLoader workers of `train.num_workers: -1` on CUDA: measured on an H100 (README "On a GPU"), the trainer
# went from 174 to 281 samples/s with 4 workers; on the CPU the workers would take the training's cores.
AUTO_CUDA_WORKERS = 4


def resolve_num_workers(requested: int, device: torch.device) -> int:
    """`train.num_workers` as a count: -1 (auto) is 4 on CUDA, capped at half this machine's CPUs, and 0 on
    the CPU; any other value as given.

    >>> resolve_num_workers(-1, torch.device("cpu")), resolve_num_workers(2, torch.device("cpu"))
    (0, 2)
    """
    if requested >= 0:
        return requested
    if device.type != "cuda":
        return 0
    return max(0, min(AUTO_CUDA_WORKERS, (os.cpu_count() or 1) // 2))


def selection_metric_names(ground_truth: list[dict[str, Any]]) -> list[str]:
    """The `brief` metric names that `score` gives on this ground truth (what `train.selection_metric`
    may name): those of a perfect MR + HD submission, so that length buckets without queries and
    highlight metrics of a split without saliency scores are absent, as they will be after training."""

    submission = [
        {
            "qid": g["qid"],
            "pred_relevant_windows": [[*w, 1.0] for w in g.get("relevant_windows") or []],
            # (a duration beyond MAX_DURATION is the evaluation's DataError, not a huge list here)
            "pred_saliency_scores": [0.0] * max(1, num_saliency_clips(min(g["duration"], MAX_DURATION))),
        }
        for g in ground_truth
    ]
    return list(evaluate(submission, ground_truth)["brief"])


def compile_model(model: nn.Module) -> None:
    """`train.compile`: `torch.compile` (dynamic shapes, in place: the state dict keeps its keys) of every
    child module of the model but the denoiser, whose per-sample GT lists would recompile it at almost
    every batch (measured: a recompile per step). Evaluation runs eager (`eager_eval`)."""
    for name, child in model.named_children():
        if name != "denoiser":
            child.compile(dynamic=True)


def eager_eval(compiled: bool) -> contextlib.AbstractContextManager[Any]:
    """Compiled modules run eager inside (evaluation shapes would compile a second graph)."""
    return torch.compiler.set_stance("force_eager") if compiled else contextlib.nullcontext()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def total_loss(losses: dict[str, torch.Tensor], weight_dict: dict[str, float]) -> torch.Tensor:
    """Eq 10: the weighted sum of every term that has a weight."""
    terms = [weight_dict[k] * v for k, v in losses.items() if k in weight_dict]
    if not terms:
        raise ConfigError("the criterion returned no weighted loss term", key="loss")
    return torch.stack([t.float() for t in terms]).sum()


class Trainer:
    """One training run in `run_dir` (one process of a distributed run, or the only one)."""

    def __init__(
        self, cfg: Config, run_dir: str | Path, resume: bool = False, overwrite: bool = False
    ) -> None:

        validate_config(cfg)
        self.cfg, self.tcfg = cfg, cfg.train
        self.run_dir = Path(run_dir)
        self.info, self.device = init_distributed(cfg.train.device)
        if self.tcfg.batch_size % self.info.world_size:
            raise ConfigError(
                f"global batch {self.tcfg.batch_size} is not divisible by {self.info.world_size} processes",
                key="train.batch_size",
            )
        seed_everything(self.tcfg.seed, self.tcfg.deterministic)
        self.collate = collate
        train_windows = None if cfg.data.allow_empty_windows else TRAIN_NEEDS_WINDOWS
        self.train_set = build_dataset(cfg.data, "train", seed=self.tcfg.seed, require_windows=train_windows)
        self.eval_set = (
            build_dataset(
                cfg.data, self.tcfg.eval_split, seed=self.tcfg.seed, require_windows=EVAL_NEEDS_WINDOWS
            )
            if self.tcfg.eval_every > 0
            else None
        )
        self._preflight()
        self.skips = SkipLog()  # samples left out under on_bad_sample=skip, reported at the end
        for dataset in (self.train_set, self.eval_set):
            if dataset is not None:
                self.skips.add_dataset(dataset)
        self.sampler = ShardedBatchSampler(
            len(self.train_set), self.tcfg.batch_size, self.tcfg.seed, self.info.rank, self.info.world_size
        )
        self.steps_per_epoch = self.sampler.num_steps()
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"the train split has {len(self.train_set)} samples, fewer than the "
                f"{self.info.world_size} processes",
                key="train.batch_size",
            )

        model = build_model(cfg.model).to(self.device)
        self.criterion = build_criterion(cfg.model, cfg.loss).to(self.device)
        if self.info.is_distributed:
            # Divide the losses by the GLOBAL counts (#GT spans, #noise positives, #valid clips) / world
            # size, so that DDP's gradient average equals one process on the global batch (losses.py).
            self.criterion.count_reducer = mean_over_processes
        self.optimizer = build_optimizer(model, self.tcfg)
        if self.info.is_distributed:  # same initial weights everywhere, then own dropout/noise draws per rank
            seed_everything(self.tcfg.seed + self.info.rank, self.tcfg.deterministic)
        self.scheduler = build_scheduler(self.optimizer, self.tcfg, self.steps_per_epoch)
        if self.info.is_distributed:
            model = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.model = model
        if self.tcfg.compile:
            compile_model(unwrap(model))
        self.num_workers = resolve_num_workers(self.tcfg.num_workers, self.device)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.train_cpu_s = 0.0  # process CPU seconds spent in training epochs (evaluation excluded)
        self.best_value = -math.inf
        self.best_metrics: dict[str, Any] | None = None
        self.last_good: Path | None = None  # the last checkpoint written (always with finite weights)
        if resume:
            self._resume()
        if self.info.is_main:
            if overwrite and not resume and (removed := clear_run(self.run_dir)):
                log.warning("overwrite: removed %s of the earlier run in %s", ", ".join(removed), run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self.logger = RunLogger(
            self.run_dir,
            enabled=self.info.is_main,
            tensorboard=self.tcfg.tensorboard,
            resume_step=self.global_step if resume else None,
        )

    def _preflight(self) -> None:
        """What can be checked before the first step: one sample of each split loads (feature widths,
        clip length; with on_bad_sample=error), and `train.selection_metric` is a metric that the
        evaluation of `eval_split` will produce."""
        if self.cfg.data.on_bad_sample == "error":
            for dataset in (self.train_set, self.eval_set):
                if dataset is not None:
                    dataset[0]
        if self.eval_set is None:
            return
        try:
            names = selection_metric_names(self.eval_set.ground_truth())
        except DataError as err:
            raise DataError(f"cannot be evaluated: {err}", path=self.eval_set.path) from None
        if self.tcfg.selection_metric not in names:
            raise ConfigError(
                f"{self.tcfg.selection_metric!r} is not a metric of the evaluation of the "
                f"{self.tcfg.eval_split} split (available: {', '.join(names)})",
                key="train.selection_metric",
            )

    def _diverged(self, what: str, names: list[str], in_step: bool = True) -> DivergedError:
        """`in_step`: found during the coming step (epoch/step are 0-based counters of what is done)."""
        last = f"last good checkpoint: {self.last_good}" if self.last_good else "no checkpoint written yet"
        where = (
            f"at epoch {self.epoch + 1}, step {self.step_in_epoch + 1} (global step {self.global_step + 1})"
            if in_step
            else f"after global step {self.global_step}"
        )
        return DivergedError(
            f"training diverged {where}: non-finite {what}: {', '.join(names)}; {last} "
            "(a smaller train.lr or a train.grad_clip > 0 usually helps)"
        )

    # ---------------------------------------------------------------- checkpoints
    def _state(self, rng_ranks: list[Any]) -> dict[str, Any]:
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step_in_epoch,
            "global_step": self.global_step,
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
            "config": config_to_dict(self.cfg),
            "features": feature_pipeline(self.cfg.data),
            "metrics": self.best_metrics or {},
            "best": self.best_value if math.isfinite(self.best_value) else None,
            "train_cpu_s": self.train_cpu_s,
        }

    def save(self, name: str) -> None:
        """Write `name` (last.ckpt / best.ckpt) on rank 0; every rank contributes its RNG state."""
        bad = first_non_finite(unwrap(self.model).state_dict())
        if bad is not None:  # never overwrite a good checkpoint with NaN weights
            raise self._diverged("weights", [bad], in_step=False)
        rng_ranks = gather_lists([get_rng_state()], self.info)
        if self.info.is_main:
            save_checkpoint(self.run_dir / name, self._state(rng_ranks))
        self.last_good = self.run_dir / name
        barrier(self.info)

    def _resume(self) -> None:
        path = self.run_dir / "last.ckpt"
        if not path.is_file():
            log.info("%s: no checkpoint yet, starting from scratch", self.run_dir)
            return
        state = load_checkpoint(path, map_location=self.device)
        bad = first_non_finite(state["model"]) if isinstance(state["model"], dict) else None
        if bad is not None:
            raise CheckpointError(f"{path}: parameter {bad!r} holds NaN/inf values; it cannot be resumed")
        saved = stored_config(state["config"])
        if saved.model != self.cfg.model:
            raise CheckpointError(f"{path}: was trained with a different model config")
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step"])
        self.global_step = int(state["global_step"])
        self.train_cpu_s = float(state.get("train_cpu_s") or 0.0)
        self.best_metrics = state.get("metrics") or None
        self.best_value = state["best"] if state.get("best") is not None else -math.inf
        ranks = state.get("rng_ranks") or [state["rng"]]
        set_rng_state(ranks[self.info.rank] if len(ranks) == self.info.world_size else state["rng"])
        self.last_good = path
        log.info("resumed %s at epoch %d, step %d", path, self.epoch + 1, self.step_in_epoch)

    # ---------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Train until `train.epochs`, evaluating every `eval_every` epochs; returns the summary."""
        try:
            while self.epoch < self.tcfg.epochs:
                cpu0 = time.process_time()
                self._train_epoch()
                self.train_cpu_s += time.process_time() - cpu0
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                if self._eval_due():
                    self._evaluate()
                self.save("last.ckpt")
        finally:
            self.logger.close()
        n_skipped = self._report_skips()
        return {
            "run_dir": str(self.run_dir),
            "best": self.best_metrics,
            "epochs": self.epoch,
            "skipped": n_skipped,
        }

    def _report_skips(self) -> int:
        """Log the final count of samples skipped (on_bad_sample=skip) by every rank and DataLoader
        worker, with the first reasons; returns the count."""

        merged = SkipLog()
        for where, reason in gather_lists(list(self.skips.reasons.items()), self.info):
            merged.add(where, reason)
        summary = merged.summary()
        if summary and self.info.is_main:
            log.warning("%s", summary)
        return len(merged)

    def _eval_due(self) -> bool:
        every = self.tcfg.eval_every
        return (
            self.eval_set is not None
            and every > 0
            and (self.epoch % every == 0 or self.epoch == self.tcfg.epochs)
        )

    def _train_epoch(self) -> None:
        from tqdm import tqdm

        model, tcfg = self.model, self.tcfg
        self.train_set.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, start_step=self.step_in_epoch)
        loader = DataLoader(
            self.train_set,
            batch_sampler=self.sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(tcfg.seed + self.epoch),  # never touches the global RNG
            pin_memory=self.device.type == "cuda",
        )
        total_steps = tcfg.epochs * self.steps_per_epoch
        bar = tqdm(
            total=len(self.sampler),
            desc=f"epoch {self.epoch + 1}/{tcfg.epochs}",
            leave=False,
            disable=not (self.info.is_main and tcfg.progress),
            dynamic_ncols=True,
        )
        sums = DeviceSums()
        n_logged, t0, seen = 0, time.perf_counter(), 0
        model.train()
        for batch in loader:
            self.skips.add_batch(batch)
            b = move_batch(batch, self.device)
            inner = unwrap(model)
            set_progress = getattr(inner, "set_progress", None)
            if set_progress is not None:  # denoising curriculum (Table 8)
                set_progress(self.global_step / max(1, total_steps))
            with autocast(self.device, tcfg.bf16):
                out = model(
                    b["video_feat"], b["video_mask"], b["text_feat"], b["text_mask"], targets=b["spans"]
                )
            out = to_float32(out)
            bad = non_finite_entries(out)  # before the matcher and span ops see NaN spans
            if bad:
                raise self._diverged("model outputs", bad)
            losses = self.criterion(out, b)  # matching and losses in float32
            loss = total_loss(losses, self.criterion.weight_dict)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = (
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
                if tcfg.grad_clip > 0
                else None
            )
            # one host sync for both checks; a non-finite loss or gradient never reaches the weights
            finite = (
                torch.isfinite(loss)
                if grad_norm is None
                else torch.isfinite(loss) & torch.isfinite(grad_norm)
            )
            if not bool(finite):
                if not torch.isfinite(loss):
                    bad = [f"{k}={float(v)}" for k, v in losses.items() if not torch.isfinite(v).all()]
                    raise self._diverged("loss terms", bad or [f"loss={float(loss)}"])
                raise self._diverged("gradients", [f"grad_norm={float(cast(torch.Tensor, grad_norm))}"])
            self.optimizer.step()
            self.scheduler.step()
            self.step_in_epoch += 1
            self.global_step += 1
            seen += len(batch["meta"]) * self.info.world_size

            terms = {"loss": loss, **losses, **({"grad_norm": grad_norm} if grad_norm is not None else {})}
            sums.add(terms)  # on the device: no host sync per step
            n_logged += 1
            rate = seen / max(1e-9, time.perf_counter() - t0)
            bar.update()
            if (
                self.global_step % max(1, tcfg.log_every_steps) == 0
                or self.step_in_epoch == self.steps_per_epoch
            ):
                values = {k: v / n_logged for k, v in sums.pop().items()}
                bar.set_postfix(loss=f"{values['loss']:.3f}", samples_s=f"{rate:.1f}", refresh=False)
                values.update(lr=self.optimizer.param_groups[0]["lr"], samples_per_s=rate)
                self.logger.log("train", values, self.epoch + 1, self.global_step)
                n_logged = 0
            if (
                tcfg.checkpoint_every_steps > 0
                and self.global_step % tcfg.checkpoint_every_steps == 0
                and self.step_in_epoch < self.steps_per_epoch
            ):
                self.save("last.ckpt")
        bar.close()

    def _evaluate(self) -> None:
        assert self.eval_set is not None
        t0 = time.perf_counter()
        with eager_eval(self.tcfg.compile):
            preds = predict_dataset(
                unwrap(self.model),
                self.eval_set,
                self.collate,
                self.device,
                batch_size=self.tcfg.batch_size,
                num_workers=self.num_workers,
                bf16=self.tcfg.bf16,
                dist_info=self.info,
                round_to_clip=self.cfg.model.round_to_clip,
            )
        metrics = None
        if self.info.is_main:
            ground_truth = self.eval_set.ground_truth()
            if self.cfg.data.on_bad_sample == "skip":  # samples skipped while predicting are not scored
                predicted = {p["qid"] for p in preds}
                ground_truth = [g for g in ground_truth if g["qid"] in predicted]
            metrics = score(preds, ground_truth)
        metrics = broadcast_object(metrics, self.info)
        brief = metrics["brief"]
        key = self.tcfg.selection_metric
        if key not in brief:
            raise ConfigError(
                f"not a metric of this evaluation (available: {', '.join(brief)})",
                key="train.selection_metric",
            )
        record = {**brief, "train_cpu_s": round(self.train_cpu_s, 1)}  # CPU-seconds to this evaluation
        self.logger.log("eval", record, self.epoch, self.global_step)
        log.info("epoch %d: %s = %.2f (%.1fs)", self.epoch, key, brief[key], time.perf_counter() - t0)
        if brief[key] > self.best_value:
            self.best_value, self.best_metrics = float(brief[key]), {"epoch": self.epoch, **brief}
            if self.info.is_main:
                write_jsonl(self.run_dir / f"{self.tcfg.eval_split}_preds.jsonl", preds)
                write_json(self.run_dir / "best_metrics.json", {"epoch": self.epoch, "metrics": metrics})
            self.save("best.ckpt")


class DeviceSums:
    """Running sums of named scalar tensors kept on their device: one stacked add per step, one host
    copy when read (`pop`), so the training loop does not wait for the device at every step."""

    def __init__(self) -> None:
        self._keys: tuple[str, ...] = ()
        self._sum: torch.Tensor | None = None  # (K,) float32, in the order of _keys
        self._flushed: dict[str, float] = {}  # sums of names that came and went inside one window

    def add(self, values: dict[str, torch.Tensor]) -> None:
        keys = tuple(values)
        stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])  # (K,)
        if keys != self._keys:  # a term appeared or vanished (e.g. a batch without GT): fold the old sums
            self._fold()
            self._keys, self._sum = keys, stacked
        else:
            assert self._sum is not None
            self._sum = self._sum + stacked

    def _fold(self) -> None:
        if self._sum is not None:
            for k, v in zip(self._keys, self._sum.tolist()):
                self._flushed[k] = self._flushed.get(k, 0.0) + v
        self._keys, self._sum = (), None

    def pop(self) -> dict[str, float]:
        """The sums as floats (one device-to-host copy), and a fresh start."""
        self._fold()
        out, self._flushed = self._flushed, {}
        return out


def train(cfg: Config, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume) one training; see the module docstring for the run-directory layout.
    `overwrite` removes an earlier run's files from `run_dir` once the config has been validated."""
    return Trainer(cfg, run_dir, resume=resume, overwrite=overwrite).fit()


def with_seed(cfg: Config, seed: int) -> Config:
    """A copy of `cfg` with `train.seed = seed`."""
    return replace(cfg, train=replace(cfg.train, seed=seed))
