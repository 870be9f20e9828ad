"""The dynamic batcher (`sadetr.inference.batcher`): concurrent calls merged into one forward pass give
every caller exactly what it would get alone (rows of other lengths are re-padded and masked), and the
service uses it with many request threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from sadetr.config.compose import compose_config
from sadetr.data.pipeline import FeaturePipeline, pad_inputs
from sadetr.inference.backend import TorchBackend
from sadetr.inference.batcher import DynamicBatcher
from sadetr.model.build import build_model


class Counting:
    """A real backend that also records the batch size of every forward pass it runs."""

    def __init__(self, inner: TorchBackend) -> None:
        self.inner, self.name, self.sizes = inner, "torch", []
        self.lock = threading.Lock()

    def __call__(self, *args: torch.Tensor) -> dict:
        with self.lock:
            self.sizes.append(int(args[0].shape[0]))
        return self.inner(*args)


@pytest.fixture(scope="module")
def model_and_pipe() -> tuple[TorchBackend, FeaturePipeline]:
    cfg = compose_config("synthetic_tiny", [])
    torch.manual_seed(0)
    return TorchBackend(build_model(cfg.model).eval()), FeaturePipeline.from_data_config(cfg.data)


def _request(pipe: FeaturePipeline, seed: int) -> tuple[torch.Tensor, ...]:
    """One caller's padded batch of 1-2 rows with its own video and query lengths."""
    rng = np.random.default_rng(seed)
    rows = 1 + seed % 2
    videos = [
        rng.normal(size=(int(rng.integers(3, 75)), pipe.video_dim)).astype(np.float32) for _ in range(rows)
    ]
    texts = [
        rng.normal(size=(int(rng.integers(1, 20)), pipe.text_dim)).astype(np.float32) for _ in range(rows)
    ]
    return pad_inputs(videos, texts).tensors()


def test_merged_calls_give_every_caller_its_own_answer(model_and_pipe) -> None:
    backend, pipe = model_and_pipe
    requests = [_request(pipe, seed) for seed in range(12)]
    alone = [backend(*r) for r in requests]
    counting = Counting(backend)
    batcher = DynamicBatcher(counting, max_batch=8, max_wait_ms=200.0)
    try:
        barrier = threading.Barrier(len(requests))

        def call(r: tuple[torch.Tensor, ...]) -> dict:
            barrier.wait()
            return batcher(*r)

        with ThreadPoolExecutor(len(requests)) as pool:
            merged = list(pool.map(call, requests))
    finally:
        batcher.close()
    assert max(counting.sizes) > 2 and sum(counting.sizes) == sum(int(r[0].shape[0]) for r in requests)
    assert all(size <= 8 for size in counting.sizes)
    for got, want, r in zip(merged, alone, requests):
        valid = r[1]
        torch.testing.assert_close(got["pred_spans"], want["pred_spans"], rtol=0, atol=1e-5)
        torch.testing.assert_close(got["pred_quality"], want["pred_quality"], rtol=0, atol=1e-5)
        assert got["saliency_scores"].shape == want["saliency_scores"].shape
        torch.testing.assert_close(
            got["saliency_scores"][valid], want["saliency_scores"][valid], rtol=0, atol=1e-5
        )
    stats = batcher.stats()
    assert stats["requests"] == 12 and stats["runs"] == len(counting.sizes) < 12
    assert stats["mean_requests_per_run"] == pytest.approx(12 / stats["runs"])


def test_an_error_reaches_every_caller_of_its_run_and_the_batcher_goes_on(model_and_pipe) -> None:
    backend, pipe = model_and_pipe
    batcher = DynamicBatcher(backend, max_batch=4, max_wait_ms=1.0)
    try:
        bad = _request(pipe, 0)
        with pytest.raises(RuntimeError):  # a text of the wrong width: the model's own error
            batcher(bad[0], bad[1], bad[2][..., :5], bad[3])
        good = _request(pipe, 1)
        torch.testing.assert_close(batcher(*good)["pred_spans"], backend(*good)["pred_spans"])
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher(*good)
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(backend, max_batch=0)
