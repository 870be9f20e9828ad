"""A dynamic batcher: concurrent calls to a backend merged into one forward pass.

Callers (e.g. the service's request threads) call `DynamicBatcher` like the backend it wraps. One worker
thread takes the first waiting call, waits up to `max_wait_ms` for more, up to `max_batch` rows in all,
re-pads their rows into one batch (`sadetr.data.pipeline.pad_inputs`: rows keep their own lengths through
the masks), runs the backend once and hands every caller its own rows back. A call of more rows than
`max_batch` runs alone. What it did (runs, requests, rows per run, wait) is in `stats()` and logged every
`log_every` runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from sadetr.data.pipeline import pad_inputs
from sadetr.inference.backend import Backend

log = logging.getLogger(__name__)


@dataclass
class _Call:
    """One caller's padded batch (CPU tensors) and where its answer goes."""

    inputs: tuple[Tensor, Tensor, Tensor, Tensor]  # video [b, Lv, Dv], mask [b, Lv], text [b, Lt, Dt], mask
    queued: float  # time.perf_counter() when it arrived
    future: Future = field(default_factory=Future)

    @property
    def rows(self) -> int:
        return int(self.inputs[0].shape[0])


def _rows(call: _Call) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A call's rows cut to their valid lengths (the masks are prefix masks, as `pad_inputs` builds them)."""
    video, video_mask, text, text_mask = (t.numpy() for t in call.inputs)
    v_len, t_len = video_mask.sum(1), text_mask.sum(1)
    return [video[b, : v_len[b]] for b in range(len(video))], [text[b, : t_len[b]] for b in range(len(text))]


class DynamicBatcher:
    """Wraps a backend (module docstring); thread-safe; `close()` stops its worker."""

    def __init__(self, backend: Backend, max_batch: int = 16, max_wait_ms: float = 5.0, log_every: int = 100):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.backend = backend
        self.name = backend.name
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.log_every = log_every
        self._queue: queue.Queue[_Call | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stats = {"runs": 0, "requests": 0, "rows": 0, "max_rows": 0, "wait_s": 0.0}
        self._worker = threading.Thread(target=self._loop, name="sadetr-batcher", daemon=True)
        self._worker.start()

    def __call__(
        self, video_feat: Tensor, video_mask: Tensor, text_feat: Tensor, text_mask: Tensor
    ) -> dict[str, Tensor]:
        inputs = tuple(t.detach().cpu() for t in (video_feat, video_mask.bool(), text_feat, text_mask.bool()))
        call = _Call(inputs, time.perf_counter())  # type: ignore[arg-type]
        if not self._worker.is_alive():
            raise RuntimeError("the batcher is closed")
        self._queue.put(call)
        return call.future.result()

    def _collect(self, first: _Call) -> list[_Call]:
        calls, rows = [first], first.rows
        deadline = time.perf_counter() + self.max_wait_s
        while rows < self.max_batch:
            try:
                nxt = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if nxt is None:  # closing: finish this run, then stop
                self._queue.put(None)
                break
            if rows + nxt.rows > self.max_batch:
                self._queue.put(nxt)  # next run (order across callers does not matter)
                break
            calls.append(nxt)
            rows += nxt.rows
        return calls

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = self._collect(first)
            try:
                self._run(calls)
            except BaseException as err:  # every caller of this run gets the error
                for call in calls:
                    if not call.future.done():
                        call.future.set_exception(err)

    def _run(self, calls: list[_Call]) -> None:
        start = time.perf_counter()
        if len(calls) == 1:
            outs = [self.backend(*calls[0].inputs)]
        else:
            videos, texts = [], []
            for call in calls:
                v, t = _rows(call)
                videos += v
                texts += t
            merged = self.backend(*pad_inputs(videos, texts).tensors())
            outs, first = [], 0
            for call in calls:
                rows = slice(first, first + call.rows)
                width = call.inputs[0].shape[1]  # the caller's own padded length
                outs.append(
                    {
                        "pred_spans": merged["pred_spans"][rows],  # (b, Nq, 2)
                        "pred_quality": merged["pred_quality"][rows],  # (b, Nq)
                        "saliency_scores": merged["saliency_scores"][rows, :width],  # (b, Lv)
                        "video_mask": call.inputs[1],  # (b, Lv)
                    }
                )
                first += call.rows
        for call, out in zip(calls, outs):
            call.future.set_result(out)
        self._record(calls, start)

    def _record(self, calls: list[_Call], start: float) -> None:
        rows = sum(c.rows for c in calls)
        with self._lock:
            s = self._stats
            s["runs"] += 1
            s["requests"] += len(calls)
            s["rows"] += rows
            s["max_rows"] = max(s["max_rows"], rows)
            s["wait_s"] += sum(start - c.queued for c in calls)
            runs = s["runs"]
        if self.log_every and runs % self.log_every == 0:
            st = self.stats()
            log.info(
                "dynamic batcher (%s): %d runs, %d requests, %.1f requests and %.1f rows per run, "
                "mean wait %.1f ms",
                self.name,
                st["runs"],
                st["requests"],
                st["mean_requests_per_run"],
                st["mean_rows_per_run"],
                st["mean_wait_ms"],
            )

    def stats(self) -> dict[str, Any]:
        """Settings and counts so far: runs, requests, rows, mean requests and rows per run, mean wait."""
        with self._lock:
            s = dict(self._stats)
        runs, requests = max(1, int(s["runs"])), max(1, int(s["requests"]))
        return {
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait_s * 1000.0,
            "runs": int(s["runs"]),
            "requests": int(s["requests"]),
            "rows": int(s["rows"]),
            "max_rows_per_run": int(s["max_rows"]),
            "mean_requests_per_run": s["requests"] / runs,
            "mean_rows_per_run": s["rows"] / runs,
            "mean_wait_ms": 1000.0 * s["wait_s"] / requests,
        }

    def close(self) -> None:
        """Stop the worker after the calls already queued."""
        self._queue.put(None)
        self._worker.join(timeout=5.0)
