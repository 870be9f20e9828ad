"""Checks and timings that need a GPU, run in one call on a lent device (README "Benchmark", "On a GPU").

    python tools/device_check.py losses            # criterion on CUDA == criterion on CPU, same outputs
    python tools/device_check.py trainer RUN_DIR   # samples/s of the last epoch of a finished run
    python tools/device_check.py profile OUT.txt   # torch.profiler of SA-DETR / QD-DETR training steps

`losses` builds SA-DETR, runs one training forward on the CPU, and evaluates the criterion on those
outputs on the CPU and, moved, on CUDA: every term must agree to float tolerance (the batched index
arithmetic, host-to-device index copies and the sync-free bin counts run for real on the device).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def check_losses() -> None:
    import torch

    from sadetr.bench.speed import synthetic_batch
    from sadetr.config.compose import compose_config
    from sadetr.engine.validation import move_batch
    from sadetr.model.build import build_criterion, build_model

    for name in ("sa_detr", "qd_detr", "moment_detr"):
        cfg = compose_config("qvhighlights_sfc", [f"model.name={name}"])
        torch.manual_seed(0)
        model = build_model(cfg.model).train()
        criterion = build_criterion(cfg.model, cfg.loss)
        batch = synthetic_batch(16, 75, 20, cfg.model.video_dim, cfg.model.text_dim, seed=1)
        batch["spans"][3] = batch["spans"][3][:0]  # one sample without GT
        out = model(
            batch["video_feat"],
            batch["video_mask"],
            batch["text_feat"],
            batch["text_mask"],
            targets=batch["spans"],
        )
        cpu = criterion(out, batch)
        dev = torch.device(os.environ.get("SADETR_CHECK_DEVICE", "cuda"))
        out_dev = move_nested(out, dev)
        gpu = criterion.to(dev)(out_dev, move_batch(batch, dev))
        worst = max(abs(float(cpu[k] - gpu[k].cpu())) / max(1e-6, abs(float(cpu[k]))) for k in cpu)
        assert set(cpu) == set(gpu), set(cpu) ^ set(gpu)
        assert worst < 1e-4, f"{name}: largest relative difference {worst:.2e}"
        print(f"losses {name}: {len(cpu)} terms equal on CPU and {dev} (largest relative gap {worst:.1e})")


def move_nested(obj: Any, device: Any) -> Any:
    import torch

    if torch.is_tensor(obj):
        return obj.detach().to(device)
    if isinstance(obj, dict):
        return {k: move_nested(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_nested(v, device) for v in obj)
    return obj


def trainer_rate(run_dir: Path) -> None:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    last_epoch = max(r["epoch"] for r in train)
    rate = [r["samples_per_s"] for r in train if r["epoch"] == last_epoch][-1]
    print(f"trainer {run_dir.name}: {rate:.1f} samples/s (epoch {last_epoch}, whole epoch)")


def profile(path: Path) -> None:
    """Per-op host and device time of 3 training steps per model, and kernel launches per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from sadetr.bench.speed import synthetic_batch
    from sadetr.config.compose import compose_config
    from sadetr.engine.schedule import build_optimizer
    from sadetr.engine.trainer import total_loss
    from sadetr.engine.validation import move_batch
    from sadetr.model.build import build_criterion, build_model

    dev = torch.device(os.environ.get("SADETR_CHECK_DEVICE", "cuda"))
    lines = []
    for name in ("sa_detr", "qd_detr"):
        cfg = compose_config("qvhighlights_sfc", [f"model.name={name}"])
        torch.manual_seed(0)
        model = build_model(cfg.model).to(dev).train()
        criterion = build_criterion(cfg.model, cfg.loss).to(dev)
        opt = build_optimizer(model, cfg.train)
        b = move_batch(synthetic_batch(32, 75, 32, cfg.model.video_dim, cfg.model.text_dim), dev)

        def step(model: Any = model, criterion: Any = criterion, opt: Any = opt, b: Any = b) -> None:
            out = model(b["video_feat"], b["video_mask"], b["text_feat"], b["text_mask"], targets=b["spans"])
            loss = total_loss(criterion(out, b), criterion.weight_dict)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            opt.step()

        for _ in range(3):
            step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(3):
                step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
        events = prof.key_averages()
        launch_keys = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")
        launches = sum(e.count for e in events if e.key in launch_keys)
        lines.append(f"## {name}: {launches / 3:.0f} kernel launches per step")
        lines.append(events.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60))
        print(lines[0 if name == "sa_detr" else -2])
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1] == "losses":
        check_losses()
    elif sys.argv[1] == "profile":
        profile(Path(sys.argv[2]))
    else:
        trainer_rate(Path(sys.argv[2]))
