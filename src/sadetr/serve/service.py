"""One model (and optionally one corpus index) shared by all requests, behind a single-worker queue.

Requests run one at a time on one worker thread, so torch's intra-op threads (set once by the
command) are never oversubscribed by concurrent requests; at most `limits.max_pending` wait, and a
request whose deadline passes while it waits is dropped before it runs. With a dynamic batcher
(`sadetr.inference.batcher`, the default of the onnx backends) up to `max_batch` requests run at once
and their forward passes are merged into one. Used by the HTTP service (`submit`, async) and the
browser app (`call`, blocking); no HTTP types here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from sadetr.errors import CheckpointError, DataError, SadetrError
from sadetr.inference.batcher import DynamicBatcher
from sadetr.serve.limits import Limits

if TYPE_CHECKING:
    from sadetr.predictor import VideoFeatures

T = TypeVar("T")
DEFAULT_MAX_BATCH = 16  # requests merged into one forward pass with an onnx backend


class ServiceBusy(SadetrError):
    """Too many requests already wait for the model (HTTP 503)."""


class ServiceTimeout(SadetrError):
    """A request waited and ran longer than `limits.timeout_s` (HTTP 504)."""


class NoIndex(SadetrError):
    """Corpus search asked of a service started without `--index` (HTTP 404)."""


class MomentService:
    """A `Predictor` + optional `CorpusSearcher`, their limits, and the queue in front of them."""

    def __init__(
        self,
        predictor: Any,
        limits: Limits | None = None,
        searcher: Any = None,
        name: str = "",
        batcher: DynamicBatcher | None = None,
    ):
        self.predictor = predictor
        self.searcher = searcher
        self.limits = limits or Limits()
        self.name = name
        self.batcher = batcher  # merges the forward passes of the requests that run at once
        workers = batcher.max_batch if batcher is not None else 1
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sadetr-model")
        self._pending = 0
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        checkpoint: Path,
        *,
        clip: Path | None = None,
        slowfast: Path | None = None,
        index: Path | None = None,
        device: str = "cpu",
        limits: Limits | None = None,
        backend: str = "torch",
        threads: int = 0,
        max_batch: int | None = None,
        max_wait_ms: float = 5.0,
    ) -> MomentService:
        """Load the checkpoint or model folder (and backbones, and the index) once; `backend` torch | onnx
        | onnx-int8 with `threads` onnxruntime threads; `max_batch` > 1 merges concurrent requests
        (default: 16 with an onnx backend, none with torch), waiting at most `max_wait_ms` for them."""
        from sadetr.devices import resolve_device
        from sadetr.inference.loading import load_model, make_backend
        from sadetr.predictor import Predictor

        torch_device = resolve_device(device, "--device")
        loaded = load_model(checkpoint)
        runner: Any = make_backend(loaded, backend, torch_device, threads)
        batch = max_batch if max_batch is not None else (1 if backend == "torch" else DEFAULT_MAX_BATCH)
        batcher = DynamicBatcher(runner, batch, max_wait_ms) if batch > 1 else None
        runner = batcher or runner
        predictor = Predictor.from_loaded(loaded, runner, torch_device, clip=clip, slowfast=slowfast)
        searcher = None
        if index is not None:
            from sadetr.corpus import CorpusSearcher

            # the Predictor's CLIP encodes the search queries too (one copy in memory), and its backend
            # (batcher) localises them
            searcher = CorpusSearcher.open(
                index, checkpoint, device=device, clip_dir=clip, clip=predictor.clip, backend=runner
            )
        return cls(predictor, limits, searcher, name=Path(checkpoint).name, batcher=batcher)

    # ------------------------------------------------------------------ what it can do

    def _reproducible(self, what: str) -> bool:
        try:
            self.predictor._require_reproducible(what)
        except CheckpointError:
            return False
        return True

    @property
    def accepts_video(self) -> bool:
        """True when uploaded videos can be encoded (the checkpoint's backbones were given)."""
        return self._reproducible("video")

    @property
    def accepts_text(self) -> bool:
        """True when query strings can be encoded (CLIP text was given); else text features are needed."""
        return self._reproducible("text")

    @property
    def feature_dim(self) -> int:
        return int(sum(self.predictor.video_dims))

    def info(self) -> dict[str, Any]:
        p = self.predictor
        index = None
        if self.searcher is not None:
            index = {"videos": len(self.searcher.videos), "windows": int(self.searcher.num_windows)}
        return {
            "checkpoint": self.name,
            "video_sources": list(p.video_sources),
            "feature_dim": self.feature_dim,
            "text_dim": int(p.text_dim),
            "clip_len": float(p.clip_len),
            "accepts_video": self.accepts_video,
            "accepts_text": self.accepts_text,
            "index": index,
            "limits": self.limits.as_dict(),
            "backend": p.backend.name,
            "batching": self.batcher.stats() if self.batcher is not None else None,
        }

    # ------------------------------------------------------------------ validation

    def check_query(self, query: str | None, required: bool = True) -> str:
        query = (query or "").strip()
        if required and not query:
            raise DataError("must not be empty", field="query")
        if "\n" in query or len(query) > self.limits.max_query_chars:
            raise DataError(
                f"must be one line of at most {self.limits.max_query_chars} characters (got {len(query)})",
                field="query",
            )
        return query

    def check_video(self, path: Path) -> float:
        """The video's duration; `DataError` if unreadable or longer than the limit."""
        from sadetr.video.decode import probe

        try:
            duration = probe(path).duration
        except DataError as err:
            raise DataError(f"not a readable video ({err.message})", field="video") from err
        except Exception as err:  # PyAV raises its own errors on garbage bytes
            raise DataError("not a readable video", field="video") from err
        self._check_length(duration, f"video is {duration:.0f} s long", "video")
        return duration

    def check_features(self, feats: np.ndarray) -> None:
        seconds = feats.shape[0] * self.predictor.clip_len
        self._check_length(seconds, f"{feats.shape[0]} clips = {seconds:.0f} s", "features")

    def _check_length(self, seconds: float, what: str, field: str) -> None:
        """`DataError` on `field` ("<what>; this server accepts at most N s") past `limits.max_video_s`."""
        if seconds > self.limits.max_video_s:
            raise DataError(
                f"{what}; this server accepts at most {self.limits.max_video_s:.0f} s", field=field
            )

    # ------------------------------------------------------------------ work (runs on the model thread)

    def moments(
        self,
        query: str,
        *,
        video: Path | None = None,
        features: np.ndarray | VideoFeatures | None = None,
        text_features: np.ndarray | None = None,
        duration: float | None = None,
        max_moments: int = 0,
    ) -> dict[str, Any]:
        """Submission-format record of one video (a file, or features [L, sum D] / `VideoFeatures`)."""
        source: Any = video if video is not None else features
        if source is None:
            raise DataError("send a video or its features", field="video")
        if video is not None and not self.accepts_video:
            needs = " and ".join(
                "--clip" if s == "clip_features" else "--slowfast" for s in self.predictor.video_sources
            )
            raise DataError(
                f"this server cannot read videos (started without {needs}): send features", field="video"
            )
        if text_features is None and not self.accepts_text:
            raise DataError(
                "this server cannot encode text (no --clip): send text_features", field="text_features"
            )
        return self.predictor.predict(
            query, source, text_features=text_features, duration=duration, max_moments=max_moments
        )

    def search(self, query: str, top: int = 10, k_windows: int = 100) -> list[Any]:
        """Ranked `SearchHit`s of the corpus index."""
        if self.searcher is None:
            raise NoIndex("no corpus index on this server (start it with --index INDEX_DIR)")
        return list(self.searcher.search(query, top=top, k_windows=k_windows))

    # ------------------------------------------------------------------ the queue

    def _enqueue(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[T]:
        with self._lock:
            if self._pending >= self.limits.max_pending:
                raise ServiceBusy(f"{self._pending} requests are already waiting; retry later")
            self._pending += 1
        deadline = time.monotonic() + self.limits.timeout_s

        def job() -> T:
            if time.monotonic() > deadline:
                raise ServiceTimeout(f"request waited longer than {self.limits.timeout_s:g} s")
            return fn(*args, **kwargs)

        def release(_: Future[T]) -> None:  # on completion and on cancellation alike
            with self._lock:
                self._pending -= 1

        try:
            future = self._executor.submit(job)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        future.add_done_callback(release)
        return future

    def _timeout(self) -> ServiceTimeout:
        return ServiceTimeout(f"request took longer than {self.limits.timeout_s:g} s")

    async def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the model thread without blocking the event loop; `ServiceTimeout` past the limit."""
        future = self._enqueue(fn, args, kwargs)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.limits.timeout_s)
        except (asyncio.TimeoutError, FutureTimeout) as err:
            raise self._timeout() from err

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Blocking `submit` (for synchronous callers such as the browser app's handlers)."""
        future = self._enqueue(fn, args, kwargs)
        try:
            return future.result(timeout=self.limits.timeout_s)
        except FutureTimeout as err:
            future.cancel()
            raise self._timeout() from err

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()
