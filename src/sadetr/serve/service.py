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

from sadetr.core import ranges
from sadetr.core.devices import resolve_device
from sadetr.core.errors import CheckpointError, ConfigError, DataError, SadetrError
from sadetr.core.query_text import check_query, normalize_query
from sadetr.corpus import CorpusSearcher
from sadetr.inference.batcher import DynamicBatcher
from sadetr.inference.loading import load_model, make_backend
from sadetr.inference.predictor import Predictor
from sadetr.serve.limits import Limits
from sadetr.video.clip import load_clip
from sadetr.video.decode import probe
from sadetr.video.slowfast import load_slowfast

if TYPE_CHECKING:
    from sadetr.corpus.demo_library import DemoLibrary
    from sadetr.inference.predictor import VideoFeatures

T = TypeVar("T")
DEFAULT_MAX_BATCH = 16  # requests merged into one forward pass with an onnx backend


class ServiceBusy(SadetrError):
    """Too many requests already wait for the model (HTTP 503)."""


class ServiceTimeout(SadetrError):
    """A request waited and ran longer than `limits.timeout_s` (HTTP 504)."""


class NoIndex(SadetrError):
    """Corpus search asked of a service started without `--index` (HTTP 404)."""


class MomentService:
    """A `Predictor` + optional `CorpusSearcher`, their limits, and the queue in front of them.

    `demo`: the synthetic demo (`sadetr.corpus.demo_library`) whose sentences stand in for a text encoder.
    """

    def __init__(
        self,
        predictor: Any,
        limits: Limits | None = None,
        searcher: Any = None,
        name: str = "",
        demo: DemoLibrary | None = None,
        batcher: DynamicBatcher | None = None,
    ):
        self.predictor = predictor
        self.searcher = searcher
        self.limits = limits or Limits()
        self.name = name
        self.demo = demo
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
        demo: DemoLibrary | None = None,
        backend: str = "torch",
        threads: int = 0,
        max_batch: int | None = None,
        max_wait_ms: float = 5.0,
    ) -> MomentService:
        """Load the checkpoint or model folder (and backbones, and the index) once; `backend` torch | onnx
        | onnx-int8 with `threads` onnxruntime threads; `max_batch` > 1 merges concurrent requests
        (default: 16 with an onnx backend, none with torch), waiting at most `max_wait_ms` for them. A
        backbone the checkpoint does not use, or one of another width, is refused here
        (`ConfigError`/`CheckpointError`), not per request."""

        torch_device = resolve_device(device, "--device")
        loaded = load_model(checkpoint)
        runner: Any = make_backend(loaded, backend, torch_device, threads)
        batch = max_batch if max_batch is not None else (1 if backend == "torch" else DEFAULT_MAX_BATCH)
        batcher = DynamicBatcher(runner, batch, max_wait_ms) if batch > 1 else None
        runner = batcher or runner
        predictor = Predictor.from_loaded(loaded, runner, torch_device)
        check_backbones(predictor, clip_given=clip is not None, slowfast_given=slowfast is not None)
        if clip is not None:  # loaded only once the checkpoint is known to use it
            predictor.clip = load_clip(clip, device=predictor.device)
        if slowfast is not None:
            predictor.slowfast = load_slowfast(slowfast)
        check_widths(predictor)
        searcher = None
        if index is not None:
            # the Predictor's CLIP encodes the search queries too (one copy in memory), and its backend
            # (batcher) localises them
            searcher = CorpusSearcher.open(
                index, checkpoint, device=device, clip_dir=clip, clip=predictor.clip, backend=runner
            )
        return cls(predictor, limits, searcher, name=Path(checkpoint).name, demo=demo, batcher=batcher)

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
        """True when any query string can be encoded (CLIP text was given); else token features are
        needed (or, on the synthetic demo, one of its own sentences)."""
        return self._reproducible("text")

    @property
    def feature_dim(self) -> int:
        return int(sum(self.predictor.video_dims))

    def info(self) -> dict[str, Any]:
        p = self.predictor
        index = None
        if self.searcher is not None:
            index = {"videos": len(self.searcher.videos), "windows": int(self.searcher.num_windows)}
        demo = None
        if self.demo is not None:
            demo = {"synthetic": True, "queries": len(self.demo.queries), "note": self.demo.describe()}
        return {
            "checkpoint": self.name,
            "video_sources": list(p.video_sources),
            "feature_dim": self.feature_dim,
            "text_dim": int(p.text_dim),
            "clip_len": float(p.clip_len),
            "accepts_video": self.accepts_video,
            "accepts_text": self.accepts_text,
            "index": index,
            "demo": demo,
            "limits": self.limits.as_dict(),
            "backend": p.backend.name,
            "batching": self.batcher.stats() if self.batcher is not None else None,
        }

    # ------------------------------------------------------------------ validation

    def check_query(self, query: str | None, required: bool = True) -> str:
        """The normalised query (`sadetr.core.query_text`); "" when not `required` and nothing is left."""
        if not required and not normalize_query(query or ""):
            return ""
        return check_query(query or "", self.limits.max_query_chars)

    def check_video(self, path: Path) -> float:
        """The video's duration; `DataError` if unreadable or longer than the limit (never naming `path`)."""

        try:
            duration = probe(path).duration
        except DataError as err:
            reason = err.message.replace(str(path), "the upload").replace(str(path.parent), "")
            raise DataError(f"not a readable video ({reason})", field="video") from err
        except Exception as err:  # PyAV raises its own errors on garbage bytes
            raise DataError("not a readable video", field="video") from err
        self._check_length(duration, f"video is {duration:.0f} s long", "video")
        return duration

    def check_features(self, feats: np.ndarray) -> None:
        seconds = feats.shape[0] * self.predictor.clip_len
        self._check_length(seconds, f"{feats.shape[0]} clips = {seconds:.0f} s", "features")

    def check_duration(self, duration: float | None, seconds: float, what: str) -> None:
        """A client's `duration` must be in range and agree with its input (`seconds` of the `what`)
        within one clip: 1e6 s for 60 s of features is refused, not answered as if true."""
        if duration is None:
            return
        try:
            ranges.DURATION_S.check(duration, "duration")
        except ConfigError as err:
            raise DataError(str(err).removeprefix("duration: "), field="duration") from None
        clip = float(self.predictor.clip_len)
        if abs(duration - seconds) > clip:
            raise DataError(
                f"{duration:g} s does not agree with the {what} ({seconds:g} s): they must agree within "
                f"one clip ({clip:g} s)",
                field="duration",
            )

    def check_query_features(self, feats: Any, field: str) -> np.ndarray:
        """Query token features [L_t, text_dim] as float32; `DataError` on `field` otherwise."""
        try:
            arr = np.asarray(feats, dtype=np.float32)
        except (ValueError, TypeError) as err:
            raise DataError("must be a list of rows of numbers of equal length", field=field) from err
        dim, most = int(self.predictor.text_dim), int(ranges.QUERY_TOKENS.hi)
        if arr.ndim != 2 or not 1 <= arr.shape[0] <= most or arr.shape[1] != dim:
            raise DataError(f"expected shape [1 <= L_t <= {most}, {dim}], got {list(arr.shape)}", field=field)
        if not np.isfinite(arr).all():
            raise DataError("contains NaN or Inf (or a number too large for float32)", field=field)
        return arr

    def query_tokens(self, query: str, features: np.ndarray | None, field: str) -> np.ndarray | None:
        """The token features the model gets for a query: `features` when given, the demo's for one of
        its sentences, or None when CLIP encodes `query`; a `DataError` naming `field` (what to send
        instead) when this server cannot encode text."""
        if features is not None:
            return features
        if self.accepts_text:
            return None
        if self.demo is not None:
            return self.demo.features(query)
        raise DataError(
            "this server cannot encode text (started without --clip): send query token features", field=field
        )

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
        text = self.query_tokens(query, text_features, "text_features")
        return self.predictor.predict(
            query, source, text_features=text, duration=duration, max_moments=max_moments
        )

    def search(
        self, query: str, top: int = 10, k_windows: int = 100, query_features: np.ndarray | None = None
    ) -> list[Any]:
        """Ranked `SearchHit`s of the corpus index for a sentence or its token features [L_t, D_t]."""
        if self.searcher is None:
            raise NoIndex("no corpus index on this server (start it with --index INDEX_DIR)")
        feats = self.query_tokens(query, query_features, "query_features")
        return list(
            self.searcher.search(
                None if feats is not None else query, query_feats=feats, top=top, k_windows=k_windows
            )
        )

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


def check_backbones(predictor: Any, *, clip_given: bool, slowfast_given: bool) -> None:
    """Refuse at start (before loading it) a backbone the checkpoint does not use."""
    sources, text_source = list(predictor.video_sources), predictor.text_source
    if clip_given and "clip_features" not in sources and text_source != "clip_text_features":
        raise ConfigError(
            f"this checkpoint uses neither CLIP video nor CLIP text features (video {sources}, text "
            f"{text_source!r}): drop --clip",
            key="--clip",
        )
    if slowfast_given and "slowfast_features" not in sources:
        raise ConfigError(
            f"this checkpoint does not use SlowFast features (video {sources})", key="--slowfast"
        )


def check_widths(predictor: Any) -> None:
    """Refuse at start a CLIP whose widths are not the ones the checkpoint was trained on (otherwise
    every request using it would fail)."""
    sources, text_source = list(predictor.video_sources), predictor.text_source
    if predictor.clip is not None and "clip_features" in sources:
        dim = predictor.video_dims[sources.index("clip_features")]
        if int(predictor.clip.embed_dim) != dim:
            raise ConfigError(
                f"this CLIP gives {predictor.clip.embed_dim}-d image features, the checkpoint was trained "
                f"on {dim}-d clip_features",
                key="--clip",
            )
    if predictor.clip is not None and text_source == "clip_text_features":
        predictor.encode_query("a")  # CheckpointError naming both widths when they differ
