"""Run logs: TensorBoard scalars and a JSON-lines metrics log (`metrics.jsonl`), on the main process.

Each record of `metrics.jsonl` has `kind` ("train" or "eval"), `epoch`, `global_step` and the values.
On resume, records after the checkpoint's step are dropped (and TensorBoard purges them), so a resumed
run's log reads as if it had never been interrupted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sadetr.core.jsonio import atomic_write_text


class RunLogger:
    """Writes scalars to TensorBoard (one tag per loss term, lr, metric) and to metrics.jsonl."""

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        if resume_step is not None:
            self._truncate(resume_step)
        elif self.path.exists():
            self.path.unlink()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step)

    def _truncate(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if rec.get("global_step", 0) <= step:
                kept.append(line + "\n")
        atomic_write_text(self.path, "".join(kept))

    def log(self, kind: str, values: dict[str, float], epoch: int, global_step: int) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        rec: dict[str, Any] = {"kind": kind, "epoch": epoch, "global_step": global_step, **clean}
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if self.writer is not None:
            for key, value in clean.items():
                self.writer.add_scalar(f"{kind}/{key}", value, global_step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
