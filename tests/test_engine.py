"""Engine pieces: lr schedule, deterministic sharded batches, RNG state, loss sum, logs, config checks."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sadetr.config.train import TrainConfig
from sadetr.core.errors import ConfigError
from sadetr.engine.distributed import ShardedBatchSampler, epoch_permutation, shard_indices
from sadetr.engine.logger import RunLogger
from sadetr.engine.rng import get_rng_state, seed_everything, set_rng_state
from sadetr.engine.schedule import build_optimizer, build_scheduler, lr_factor
from sadetr.engine.trainer import total_loss, validate_config


def test_lr_factor_constant_then_cosine() -> None:
    # QVHighlights: constant for 40 of 200 epochs, then half cosine to 0.
    assert lr_factor(0, "constant_cosine", 200, 40) == 1.0
    assert lr_factor(40, "constant_cosine", 200, 40) == 1.0
    assert lr_factor(80, "constant_cosine", 200, 40) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_factor(120, "constant_cosine", 200, 40) == pytest.approx(0.5)
    assert lr_factor(200, "constant_cosine", 200, 40) == pytest.approx(0.0)
    assert lr_factor(50, "cosine", 100, 40) == pytest.approx(0.5)
    assert lr_factor(99, "constant", 100, 40) == 1.0


def test_scheduler_steps_per_batch() -> None:
    cfg = TrainConfig(epochs=4, lr=0.1, lr_schedule="cosine")
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.05)  # step 10 = epoch 2 of 4
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert opt.defaults["weight_decay"] == 1e-4
    with pytest.raises(ConfigError, match=r"train\.lr_schedule"):
        build_scheduler(opt, TrainConfig(lr_schedule="linear"), 5)


def test_sharded_batches_partition_the_global_batch() -> None:
    n, bs, world = 23, 8, 2
    single = ShardedBatchSampler(n, bs, seed=5)
    ranks = [ShardedBatchSampler(n, bs, seed=5, rank=r, world_size=world) for r in range(world)]
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for s in ranks:
            s.set_epoch(epoch)
        global_batches = list(single)
        assert [len(b) for b in global_batches] == [8, 8, 7]
        assert sorted(i for b in global_batches for i in b) == list(range(n))
        per_rank = [list(s) for s in ranks]
        for step, batch in enumerate(global_batches):
            assert per_rank[0][step] + per_rank[1][step] == batch  # rank r = r-th contiguous chunk
    single.set_epoch(0)
    e0 = list(single)
    single.set_epoch(1)
    assert list(single) != e0  # a new order every epoch
    single.set_epoch(0, start_step=2)
    assert list(single) == e0[2:] and len(single) == 1  # mid-epoch resume skips consumed batches
    assert np.array_equal(epoch_permutation(n, 5, 0), epoch_permutation(n, 5, 0))


def test_sampler_drops_a_last_batch_smaller_than_the_world() -> None:
    s = ShardedBatchSampler(9, 4, seed=0, rank=1, world_size=2)
    assert s.num_steps() == 2  # 9 = 4 + 4 + 1: the single leftover sample cannot feed both ranks
    assert shard_indices(5, 0, 2) + shard_indices(5, 1, 2) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        ShardedBatchSampler(9, 1, seed=0, world_size=2)


def test_rng_state_round_trip() -> None:
    seed_everything(3)
    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_total_loss_is_the_weighted_sum() -> None:
    losses = {
        "loss_a": torch.tensor(2.0),
        "loss_b": torch.tensor(3.0),
        "loss_unweighted": torch.tensor(100.0),
    }
    assert total_loss(losses, {"loss_a": 10.0, "loss_b": 0.5}).item() == pytest.approx(21.5)
    with pytest.raises(ConfigError):
        total_loss(losses, {})


def test_logger_writes_jsonl_and_truncates_on_resume(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, tensorboard=True)
    for step in range(1, 6):
        log.log("train", {"loss": 1.0 / step, "nan": float("nan")}, epoch=1, global_step=step)
    log.close()
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in recs] == [1, 2, 3, 4, 5] and "nan" not in recs[0]
    assert any((tmp_path / "tb").iterdir())
    RunLogger(tmp_path, tensorboard=False, resume_step=3).close()
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in recs] == [1, 2, 3]


def test_validate_config_checks_feature_widths(tiny_config) -> None:
    validate_config(tiny_config())
    with pytest.raises(ConfigError, match=r"model\.video_dim"):
        validate_config(tiny_config("model.video_dim=2816"))
    with pytest.raises(ConfigError, match=r"model\.text_dim"):
        validate_config(tiny_config("data.text_dim=300"))
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        validate_config(tiny_config("train.epochs=0"))


def test_seed_summary_and_parsing() -> None:
    from sadetr.engine.multiseed import parse_seeds, summarize

    assert parse_seeds("0,1,2,3,2018") == [0, 1, 2, 3, 2018]
    for bad in ("", "1,,x", "1,1"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)
    s = summarize({0: {"R1": 50.0, "mAP": 40.0}, 1: {"R1": 54.0, "mAP": 40.0}, 2: {"R1": 52.0}})
    assert s["R1"]["mean"] == pytest.approx(52.0) and s["R1"]["std"] == pytest.approx(2.0)
    assert s["mAP"] == {"mean": 40.0, "std": 0.0, "min": 40.0, "max": 40.0, "n": 2}


def test_num_workers_auto_is_four_on_cuda_at_most_half_the_cpus_and_none_on_cpu(monkeypatch) -> None:
    from sadetr.engine.trainer import resolve_num_workers

    assert resolve_num_workers(-1, torch.device("cpu")) == 0
    assert resolve_num_workers(3, torch.device("cpu")) == 3
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert resolve_num_workers(-1, torch.device("cuda")) == 4
    assert resolve_num_workers(0, torch.device("cuda")) == 0
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert resolve_num_workers(-1, torch.device("cuda")) == 1


def test_num_workers_below_auto_is_a_config_error() -> None:
    from sadetr.config.compose import compose_config
    from sadetr.engine.trainer import validate_config

    cfg = compose_config("qvhighlights_sfc", ["train.num_workers=-2"])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert err.value.key == "train.num_workers"
