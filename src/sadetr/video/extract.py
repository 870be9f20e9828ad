"""Clip-level features of whole videos (CLIP + SlowFast) and token features of queries, in batch.

One decode pass per video serves both backbones: the frames at every clip's CLIP and SlowFast
timestamps (`sampling.py`), 224 x 224 (shortest side resized, centre crop). Outputs follow the
released Moment-DETR / QVHighlights layout, one `.npz` per video / query:

    <out>/clip_features/{vid}.npz         features           [L, 512]   float32
    <out>/slowfast_features/{vid}.npz     features           [L, 2304]  float32
    <out>/clip_text_features/qid{qid}.npz last_hidden_state  [L_t, 512], pooler_output [512]

Batch runs are resumable (a video whose files all exist is skipped; files are written atomically)
and a video that cannot be decoded is logged to `<out>/extract_failures.tsv` without stopping.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sadetr.core.atomic import atomic_path
from sadetr.core.devices import resolve_device as resolve
from sadetr.core.errors import DataError
from sadetr.core.paths import check_qid, read_user_text, safe_child
from sadetr.video.clip import ClipBackbone
from sadetr.video.decode import VIDEO_SUFFIXES, iter_frames_at, num_clips, probe
from sadetr.video.preprocess import CLIP_MEAN, CLIP_STD, SLOWFAST_MEAN, SLOWFAST_STD, normalize
from sadetr.video.sampling import FAST_FRAMES, clip_centre_times, fast_times, slow_indices
from sadetr.video.slowfast import SlowFast

log = logging.getLogger(__name__)

CLIP_SOURCE = "clip_features"
SLOWFAST_SOURCE = "slowfast_features"
TEXT_SOURCE = "clip_text_features"
FAILURE_LOG = "extract_failures.tsv"


def resolve_device(name: str = "auto", key: str = "--device") -> torch.device:
    """`auto` -> cuda when available, else cpu; an unknown or absent device is a `ConfigError`."""

    return resolve(name, key)


def write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """`np.savez` to a temp file in the same directory, then `os.replace`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # ignore: mypy also matches **arrays against savez's `allow_pickle: bool` keyword
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def _stack(frames: list[np.ndarray | None]) -> np.ndarray:
    """`np.stack` of frames that the decode plan guarantees (a None here is a bug in the plan)."""
    present = [f for f in frames if f is not None]
    assert len(present) == len(frames), "a planned frame is missing"
    return np.stack(present)


@dataclass
class VideoExtractor:
    """CLIP and/or SlowFast on one device; `features(path)` -> {source: [L, D]}."""

    clip: ClipBackbone | None
    slowfast: SlowFast | None
    clip_len: float = 2.0
    batch_clips: int = 8  # clips per forward pass
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    frame_size: int = 224

    def __post_init__(self) -> None:
        if self.clip is None and self.slowfast is None:
            raise ValueError("need at least one of CLIP and SlowFast")
        if self.clip is not None:
            self.clip.model.to(self.device)
            self.frame_size = self.clip.image_size
        if self.slowfast is not None:
            self.slowfast.to(self.device).eval()

    @property
    def sources(self) -> list[str]:
        return [s for s, m in ((SLOWFAST_SOURCE, self.slowfast), (CLIP_SOURCE, self.clip)) if m is not None]

    def _clip_frames(
        self, path: Path, n: int, duration: float
    ) -> Iterator[tuple[np.ndarray | None, np.ndarray | None]]:
        """Per clip: (CLIP frame [S,S,3] or None, SlowFast fast frames [32,S,S,3] or None), one pass."""
        centres = clip_centre_times(n, self.clip_len, duration)
        plan: list[list[tuple[float, str, int]]] = []  # per clip, time-sorted (time, kind, index)
        for i in range(n):
            entries = [(centres[i], "c", 0)] if self.clip is not None else []
            if self.slowfast is not None:
                entries += [(t, "f", k) for k, t in enumerate(fast_times(i, self.clip_len, duration))]
            plan.append(sorted(entries))
        frames = iter_frames_at(path, [t for entries in plan for t, _, _ in entries], self.frame_size)
        for entries in plan:
            centre: np.ndarray | None = None
            fast: list[np.ndarray | None] = [None] * FAST_FRAMES
            for _, kind, k in entries:
                frame = next(frames)
                if kind == "c":
                    centre = frame
                else:
                    fast[k] = frame
            yield centre, (_stack(fast) if self.slowfast is not None else None)

    @torch.no_grad()
    def features(self, path: str | Path) -> dict[str, np.ndarray]:
        """{source: float32 [L, D]} for every loaded backbone; L = ceil(duration / clip_len)."""
        path = Path(path)
        info = probe(path)
        n = num_clips(info.duration, self.clip_len)
        out: dict[str, list[torch.Tensor]] = {s: [] for s in self.sources}
        slow_idx = torch.tensor(slow_indices())
        batch: list[tuple[np.ndarray | None, np.ndarray | None]] = []

        def flush() -> None:
            if self.clip is not None:
                pixels = normalize(_stack([c for c, _ in batch]), CLIP_MEAN, CLIP_STD)  # [B, 3, S, S]
                out[CLIP_SOURCE].append(self.clip.encode_images(pixels.to(self.device)))
            if self.slowfast is not None:
                fast = normalize(_stack([f for _, f in batch]), SLOWFAST_MEAN, SLOWFAST_STD)  # [B,32,3,S,S]
                fast = fast.transpose(1, 2).to(self.device)  # [B, 3, 32, S, S]
                slow = fast.index_select(2, slow_idx.to(self.device))  # [B, 3, 8, S, S]
                out[SLOWFAST_SOURCE].append(self.slowfast(slow, fast).float().cpu())
            batch.clear()

        for item in self._clip_frames(path, n, info.duration):
            batch.append(item)
            if len(batch) == self.batch_clips:
                flush()
        if batch:
            flush()
        return {s: torch.cat(v).numpy().astype(np.float32) for s, v in out.items()}


def list_videos(spec: str | Path) -> list[Path]:
    """Videos named by `spec`: a video file, a directory (its entries with a video suffix, sorted) or a
    text list. Entries that are not videos (a folder named `x.mp4`, a broken symlink) are kept, so that
    extraction logs them as failures; no video at all, or two videos with one name (the file stem is
    the `vid`), is a `DataError`."""
    spec = Path(spec)
    if spec.is_dir():
        videos: list[Path] = sorted(p for p in spec.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise DataError(f"no videos in this folder (suffixes {', '.join(VIDEO_SUFFIXES)})", path=spec)
        return videos
    if not spec.is_file():
        raise DataError("no such video, directory or list file", path=spec)
    if spec.suffix.lower() in VIDEO_SUFFIXES:
        return [spec]
    text = read_user_text(spec, "list of video paths")
    videos = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            video = p if p.is_absolute() else spec.parent / p
            if video.stem in first_line:
                raise DataError(
                    f"video {video} has the name {video.stem!r} of the video on line "
                    f"{first_line[video.stem]}; features are stored by file name, so names must be unique",
                    path=spec,
                    line=line_no,
                )
            first_line[video.stem] = line_no
            videos.append(video)
    if not videos:
        raise DataError("no video paths in list file", path=spec)
    return videos


def check_unique_names(videos: list[Path]) -> None:
    """Two inputs with the same file stem would share one feature file: a `DataError` naming both."""
    seen: dict[str, Path] = {}
    for video in videos:
        if video.stem in seen:
            raise DataError(
                f"{seen[video.stem]} and {video} both map to video name {video.stem!r} (features are stored "
                "by file name); rename one, or extract them into different --out folders",
                path=video,
            )
        seen[video.stem] = video


def _not_a_video(path: Path) -> str | None:
    """Why `path` cannot be decoded before trying: a broken symlink, a folder, a missing file."""
    if path.is_symlink() and not path.exists():
        return f"broken symlink (to {os.readlink(path)})"
    if path.is_dir():
        return "a folder, not a video file"
    if not path.exists():
        return "video file not found"
    return None


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def extract_videos(
    videos: list[Path],
    out_root: str | Path,
    extractor: VideoExtractor,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """Features of every video into `out_root/<source>/{vid}.npz`; resumable; failures logged."""
    out_root = Path(out_root)
    check_unique_names(videos)
    summary = BatchSummary()
    start = time.perf_counter()
    failure_log = out_root / FAILURE_LOG
    for video in tqdm(videos, desc="extract", unit="video", disable=not progress):
        vid = video.stem
        targets = {
            s: safe_child(out_root / s, f"{vid}.npz", field="video name", path=video)
            for s in extractor.sources
        }
        if not overwrite and all(p.is_file() for p in targets.values()):
            summary.skipped += 1
            continue
        try:
            why = _not_a_video(video)
            if why is not None:
                raise DataError(why, path=video)
            feats = extractor.features(video)
        except DataError as err:
            summary.failed += 1
            summary.failures.append(str(video))
            failure_log.parent.mkdir(parents=True, exist_ok=True)
            with failure_log.open("a", encoding="utf-8") as fh:
                fh.write(f"{video}\t{str(err).replace(chr(9), ' ')}\n")
            log.warning("skipped %s: %s", video, err)
            continue
        for source, path in targets.items():
            write_npz_atomic(path, features=feats[source])
        summary.done += 1
    summary.seconds = time.perf_counter() - start
    return summary


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """(qid, query) of every line of a JSON-lines file; a bad line is a `DataError` naming it.

    A qid becomes part of a file name, so it must be an int or a safe string (`paths.check_qid`);
    a qid given twice is an error naming both lines.
    """
    path = Path(path)
    text = read_user_text(path, "JSON-lines file of queries")
    out: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"invalid JSON ({err.msg})", path=path, line=line_no) from None
        if not isinstance(rec, dict):
            raise DataError("expected a JSON object", path=path, line=line_no)
        for key in ("qid", "query"):
            if key not in rec:
                raise DataError("missing field", path=path, line=line_no, field=key)
        qid = check_qid(rec["qid"], path=path, line=line_no)
        if qid in first_line:
            raise DataError(
                f"duplicate qid {rec['qid']!r} (first on line {first_line[qid]})", path, line_no, "qid"
            )
        first_line[qid] = line_no
        if not isinstance(rec["query"], str) or not rec["query"].strip():
            raise DataError("must be a non-empty string", path=path, line=line_no, field="query")
        out.append((qid, rec["query"]))
    return out


def extract_texts(
    queries: list[tuple[str, str]],
    out_root: str | Path,
    clip: ClipBackbone,
    batch_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """`out_root/clip_text_features/qid{qid}.npz` (last_hidden_state, pooler_output) per query."""
    folder = Path(out_root) / TEXT_SOURCE
    summary = BatchSummary()
    start = time.perf_counter()
    # every target is proven to stay inside out_root before anything is computed or written
    targets = {q: safe_child(folder, f"qid{check_qid(q)}.npz", field="qid") for q, _ in queries}
    todo = [(q, t) for q, t in queries if overwrite or not targets[q].is_file()]
    summary.skipped = len(queries) - len(todo)
    for i in tqdm(range(0, len(todo), batch_size), desc="extract-text", unit="batch", disable=not progress):
        chunk = todo[i : i + batch_size]
        for (qid, _), feats in zip(chunk, clip.encode_texts([t for _, t in chunk])):
            write_npz_atomic(targets[qid], **feats)
            summary.done += 1
    summary.seconds = time.perf_counter() - start
    return summary
