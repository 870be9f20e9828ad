"""`MomentDataset` (one query per item) and `collate` (the batch dict of docs/CONTRACTS.md "Batch").

A sample's clips are the video's feature clips, cut or resampled to `max_v_l`; `clip_sec` is the
seconds per model clip (the dataset's `clip_len`, or more after resampling) and spans are
normalised by `clip_sec * num_clips`. Saliency pairs follow Moment-DETR: with QVHighlights scores
(`get_saliency_labels_all`, max_n=1) one hard pair (highest / lowest scored relevant clip) + one
easy pair (random relevant / random irrelevant clip); without scores (`get_saliency_labels_sub_as_query`)
two random clips inside the GT windows and two outside. The randomness comes from
`(seed, epoch, index)` only, so a resumed run sees the same samples whatever the worker layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sadetr.core.errors import DataError, FeatureError
from sadetr.data.annotations import Annotation, read_annotations
from sadetr.data.config import DataConfig
from sadetr.data.features import FeatureStore, resample_bins
from sadetr.data.pipeline import FeaturePipeline, pad_inputs

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LENGTH_TOLERANCE_CLIPS = 2  # feature length x clip_len may differ from the duration by this, or 10 %


def windows_to_spans(windows: np.ndarray, total_sec: float) -> np.ndarray:
    """[N, 2] (start, end) seconds -> [N, 2] (center, width) normalised by `total_sec`, clipped to [0, 1].

    >>> windows_to_spans(np.array([[10.0, 30.0]]), 100.0).round(6).tolist()
    [[0.2, 0.2]]
    """
    xx = np.clip(windows / total_sec, 0.0, 1.0)  # [N, 2]
    return np.stack([(xx[:, 0] + xx[:, 1]) / 2, xx[:, 1] - xx[:, 0]], axis=1)


def clips_in_windows(windows: np.ndarray, num_clips: int, clip_sec: float) -> np.ndarray:
    """BoolTensor-like [num_clips]: clip i is inside a window when its centre (i + 0.5) * clip_sec is.

    A window too short to contain any clip centre marks the clip holding its midpoint.
    >>> clips_in_windows(np.array([[2.0, 6.0], [8.2, 8.4]]), 5, 2.0).tolist()
    [False, True, True, False, True]
    """
    centres = (np.arange(num_clips) + 0.5) * clip_sec  # [L]
    inside = np.zeros(num_clips, dtype=bool)
    for start, end in windows:
        hit = (centres >= start) & (centres <= end)
        if not hit.any():
            hit[min(int((start + end) / 2 / clip_sec), num_clips - 1)] = True
        inside |= hit
    return inside


def sample_saliency_pairs(
    level: np.ndarray, relevant: np.ndarray, has_scores: bool, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Two positive and two negative clip indices for the margin ranking term.

    With scores (QVHighlights): [hardest positive, random relevant] / [weakest relevant, random
    irrelevant]; the easy pair repeats the hard one if every clip is relevant. Without scores: two
    distinct random clips inside the GT (repeated if only one) and two outside (the positives if
    none is outside). No relevant clip at all (test split): zeros, which the loss never uses.
    """
    pos_pool = np.flatnonzero(relevant)
    neg_pool = np.flatnonzero(~relevant)
    if len(pos_pool) == 0:
        return [0, 0], [0, 0]
    if has_scores:
        order = pos_pool[np.argsort(level[pos_pool], kind="stable")]  # relevant clips, increasing level
        hard_pos, hard_neg = int(order[-1]), int(order[0])
        if len(neg_pool) == 0:
            return [hard_pos, hard_pos], [hard_neg, hard_neg]
        return [hard_pos, int(rng.choice(pos_pool))], [hard_neg, int(rng.choice(neg_pool))]

    def two(pool: np.ndarray) -> list[int]:
        return [int(i) for i in rng.choice(pool, size=2, replace=len(pool) < 2)]

    pos = two(pos_pool)
    return pos, (two(neg_pool) if len(neg_pool) else list(pos))


@dataclass(frozen=True)
class SkippedSample:
    """What `MomentDataset.__getitem__` returns for a bad sample under `on_bad_sample: skip`.

    `collate` drops it and lists `(where, reason)` in the batch's `skipped` entry, so that the main
    process can count the skips of DataLoader workers too (`SkipLog`).
    """

    where: str  # "<annotation file>:<line>", one per query
    reason: str


class SkipLog:
    """Distinct samples skipped under `on_bad_sample: skip` -> one summary line for the end of a run.

    >>> skips = SkipLog()
    >>> skips.add("a.jsonl:3", "feature file not found")
    >>> skips.add("a.jsonl:3", "feature file not found")  # the same sample in a later epoch
    >>> skips.summary()
    'skipped 1 bad sample(s) (on_bad_sample=skip); first: a.jsonl:3: feature file not found'
    """

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}  # where -> first reason, in the order seen

    def add(self, where: str, reason: str) -> None:
        self.reasons.setdefault(where, reason)

    def add_dataset(self, dataset: MomentDataset) -> None:
        """The samples `dataset` left out when it was built (bad lines, missing feature files)."""
        for item in dataset.skipped:
            self.add(item.where, item.reason)

    def add_batch(self, batch: dict[str, Any]) -> None:
        for where, reason in batch.get("skipped", ()):
            self.add(where, reason)

    def __len__(self) -> int:
        return len(self.reasons)

    def summary(self, first: int = 3) -> str | None:
        """`skipped N bad sample(s) ...; first: <where>: <reason>; ...`, or None when nothing was skipped."""
        if not self.reasons:
            return None
        shown = "; ".join(f"{w}: {r}" for w, r in list(self.reasons.items())[:first])
        return f"skipped {len(self.reasons)} bad sample(s) (on_bad_sample=skip); first: {shown}"


class MomentDataset(Dataset):
    """Queries of one split with their video/text features and targets; `__getitem__` -> sample dict.

    A sample that cannot be loaded raises (`on_bad_sample="error"`) or, with "skip", is logged and
    returned as a `SkippedSample`, which `collate` drops (and lists under `skipped`). Missing feature
    files are found up front; the samples left out then are in `skipped`.
    """

    def __init__(
        self,
        cfg: DataConfig,
        split: str,
        seed: int = 0,
        path: str | Path | None = None,
        require_windows: str | None = None,
    ) -> None:
        if cfg.on_bad_sample not in ("error", "skip"):
            raise DataError(f"unknown value {cfg.on_bad_sample!r} (error | skip)", field="on_bad_sample")
        if cfg.long_video not in ("truncate", "resample"):
            raise DataError(f"unknown value {cfg.long_video!r} (truncate | resample)", field="long_video")
        if path is None:
            if split not in SPLITS:
                raise DataError(f"unknown split {split!r} (one of {', '.join(SPLITS)})", field="split")
            path = getattr(cfg, f"{split}_path")
            if not path:
                raise DataError(f"no annotation file configured for split {split!r}", field=f"{split}_path")
        self.cfg = cfg
        self.split = split
        self.seed = seed
        self.epoch = 0
        self.path = Path(path)
        self.skip = cfg.on_bad_sample == "skip"
        self.pipeline = FeaturePipeline.from_data_config(cfg)
        self.store = FeatureStore(
            cfg.feat_root,
            cfg.video_sources,
            cfg.video_dims,
            cfg.text_source,
            cfg.text_dim,
            normalize_video=cfg.normalize_video,
            normalize_text=False,  # the pipeline normalises the tokens (`text_tokens`)
            cache=cfg.cache_features,
        )
        self.skipped: list[SkippedSample] = []  # left out while building (skip mode only)
        bad_lines: list[DataError] = []
        anns = read_annotations(
            self.path,
            tolerance=cfg.window_tolerance,
            skip_bad=self.skip,
            require_windows=require_windows,
            skipped=bad_lines,
        )
        for err in bad_lines:
            reason = f"{err.field}: {err.message}" if err.field else err.message
            self.skipped.append(SkippedSample(f"{self.path}:{err.line}", reason))
        self.annotations: list[Annotation] = self._drop_missing_features(anns)
        self._log_long_videos()

    def _drop_missing_features(self, anns: list[Annotation]) -> list[Annotation]:
        kept, missing = [], 0
        vid_ok: dict[str, Path | None] = {}
        for ann in anns:
            origin = (self.path, ann.line)  # a path escaping feat_root is an error naming file and line
            if ann.vid not in vid_ok:
                paths = self.store.video_paths(ann.vid, origin)
                vid_ok[ann.vid] = next((p for p in paths if not p.is_file()), None)
            text_path = self.store.text_path(ann.qid, origin)
            bad = vid_ok[ann.vid] or (None if text_path.is_file() else text_path)
            if bad is None:
                kept.append(ann)
                continue
            err = FeatureError(f"feature file not found (qid {ann.qid!r}, {self.path}:{ann.line})", path=bad)
            if not self.skip:
                raise err
            log.warning("skipping sample: %s", err)
            self.skipped.append(SkippedSample(f"{self.path}:{ann.line}", f"feature file not found: {bad}"))
            missing += 1
        if missing:
            log.warning(
                "%s: skipped %d of %d queries with missing feature files", self.path, missing, len(anns)
            )
        if not kept:
            raise DataError("no usable samples (all feature files missing)", path=self.path)
        return kept

    def _log_long_videos(self) -> None:
        if self.cfg.max_v_l <= 0:
            return
        limit = self.cfg.max_v_l * self.cfg.clip_len
        n_long = sum(a.duration > limit + 1e-6 for a in self.annotations)
        if not n_long:
            return
        if self.cfg.long_video == "resample":
            log.info(
                "%s: %d queries on videos longer than %g s are resampled to %d clips",
                self.path,
                n_long,
                limit,
                self.cfg.max_v_l,
            )
        else:
            n_cut = sum(any(e > limit for _, e in a.windows) for a in self.annotations)
            log.warning(
                "%s: %d queries on videos longer than max_v_l * clip_len = %g s are truncated; "
                "%d of them have GT windows clipped or dropped (long_video=resample keeps them)",
                self.path,
                n_long,
                limit,
                n_cut,
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose saliency pairs / window subsets `__getitem__` draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.annotations)

    def ground_truth(self) -> list[dict[str, Any]]:
        """The split's records as read (for `sadetr.eval.evaluate`)."""
        return [a.to_json() for a in self.annotations]

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        try:
            return self._load(index)
        except DataError as err:
            if not self.skip:
                raise
            log.warning("skipping sample %d: %s", index, err)
            return SkippedSample(f"{self.path}:{self.annotations[index].line}", str(err))

    def _load(self, index: int) -> dict[str, Any]:
        cfg, ann = self.cfg, self.annotations[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        raw = self.store.video(ann.vid)  # [L_raw, sum D]
        covered = raw.shape[0] * cfg.clip_len
        if abs(covered - ann.duration) > max(LENGTH_TOLERANCE_CLIPS * cfg.clip_len, 0.1 * ann.duration):
            raise FeatureError(
                f"{raw.shape[0]} clips x clip_len {cfg.clip_len:g} s = {covered:g} s does not match the "
                f"duration {ann.duration:g} s of qid {ann.qid!r} ({self.path}:{ann.line}); check clip_len",
                path=self.store.video_paths(ann.vid)[0],
            )
        video = self.store.fit_length(raw, cfg.max_v_l, cfg.long_video)  # [L, sum D]
        num_clips = video.shape[0]
        resampled = num_clips < raw.shape[0] and cfg.long_video == "resample"
        clip_sec = cfg.clip_len * raw.shape[0] / num_clips if resampled else cfg.clip_len
        video = self.pipeline.video_input(video)  # [L, sum D (+ 2 TEF)]
        text = self.pipeline.text_tokens(self.store.text(ann.qid))  # [L_t, D_t]

        total = clip_sec * num_clips
        windows = np.array([w for w in ann.windows if w[0] < total], dtype=np.float64).reshape(-1, 2)
        if ann.windows and len(windows) == 0:
            raise DataError(
                f"all GT windows start after the first {num_clips} clips ({total:g} s); "
                "use long_video=resample or a larger max_v_l",
                path=self.path,
                line=ann.line,
                field="relevant_windows",
            )
        windows[:, 1] = np.minimum(windows[:, 1], total)
        if cfg.max_windows > 0 and len(windows) > cfg.max_windows:
            windows = windows[np.sort(rng.choice(len(windows), cfg.max_windows, replace=False))]

        level = np.zeros(num_clips, dtype=np.float32)
        if ann.has_saliency:
            assert ann.saliency_scores is not None  # parsed together with relevant_clip_ids
            ids = np.asarray(ann.relevant_clip_ids, dtype=np.int64)
            sums = np.asarray([sum(s) for s in ann.saliency_scores], dtype=np.float32)
            if resampled:
                ids = np.searchsorted(resample_bins(raw.shape[0], num_clips), ids, side="right") - 1
            keep = ids < num_clips
            np.maximum.at(level, ids[keep], sums[keep])  # max over the clips merged into one bin
            relevant = np.zeros(num_clips, dtype=bool)
            relevant[ids[keep]] = True
        else:
            relevant = clips_in_windows(windows, num_clips, clip_sec) if len(windows) else level > 0
            level = relevant.astype(np.float32)
        pos, neg = sample_saliency_pairs(level, relevant, ann.has_saliency, rng)

        return {
            # copies: the store may cache (and hand out views of) its arrays
            "video_feat": torch.from_numpy(np.array(video, dtype=np.float32)),
            "text_feat": torch.from_numpy(np.array(text, dtype=np.float32)),
            "spans": torch.from_numpy(windows_to_spans(windows, total).astype(np.float32)),
            "saliency": torch.from_numpy(level),
            "relevant": torch.from_numpy(relevant),
            "saliency_pos_idx": torch.tensor(pos, dtype=torch.long),
            "saliency_neg_idx": torch.tensor(neg, dtype=torch.long),
            "meta": {
                "qid": ann.qid,
                "vid": ann.vid,
                "query": ann.query,
                "duration": ann.duration,
                "clip_sec": clip_sec,
                "num_clips": num_clips,
            },
        }


def _pad(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack [L_i, ...] tensors into [B, length, ...], zero-padded. Done in numpy: one memcpy per row,
    immune to the slowdown of torch's multi-threaded small copies on a busy CPU."""
    first = rows[0].numpy()
    out = np.zeros((len(rows), length, *first.shape[1:]), dtype=first.dtype)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row.numpy()
    return torch.from_numpy(out)


def collate(batch: list[dict[str, Any] | SkippedSample | None]) -> dict[str, Any]:
    """Pad a list of samples into the batch dict of docs/CONTRACTS.md. Skipped samples (`SkippedSample`,
    or None) are dropped; `batch["skipped"]` lists the `(where, reason)` of each `SkippedSample`."""
    skipped = [(s.where, s.reason) for s in batch if isinstance(s, SkippedSample)]
    samples = [s for s in batch if s is not None and not isinstance(s, SkippedSample)]
    if not samples:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"every sample of this batch was skipped (on_bad_sample=skip){first}")
    v_len = [s["video_feat"].shape[0] for s in samples]
    inputs = pad_inputs([s["video_feat"].numpy() for s in samples], [s["text_feat"].numpy() for s in samples])
    video, video_mask, text, text_mask = inputs.tensors()  # [B, Lv, Dv], [B, Lv], [B, Lt, Dt], [B, Lt]
    saliency = _pad([s["saliency"] for s in samples], max(v_len))  # [B, Lv]
    relevant = _pad([s["relevant"] for s in samples], max(v_len))  # [B, Lv], False-padded
    vid_ids: dict[str, int] = {}
    for s in samples:
        vid_ids.setdefault(s["meta"]["vid"], len(vid_ids))
    return {
        "video_feat": video,
        "video_mask": video_mask,
        "text_feat": text,
        "text_mask": text_mask,
        "spans": [s["spans"] for s in samples],
        "saliency": saliency,
        "relevant": relevant,
        "saliency_pos_idx": torch.stack([s["saliency_pos_idx"] for s in samples]),  # [B, 2]
        "saliency_neg_idx": torch.stack([s["saliency_neg_idx"] for s in samples]),  # [B, 2]
        "vid_index": torch.tensor([vid_ids[s["meta"]["vid"]] for s in samples], dtype=torch.long),
        "meta": [s["meta"] for s in samples],
        "skipped": skipped,
    }


TRAIN_NEEDS_WINDOWS = (
    "a training split needs GT windows (data.allow_empty_windows: true trains such a query as 'no moment')"
)
EVAL_NEEDS_WINDOWS = "the evaluation split needs GT windows to score predictions"


def build_dataset(
    cfg: DataConfig, split: str, seed: int = 0, require_windows: str | None = None
) -> MomentDataset:
    """The dataset of `split` ("train" | "val" | "test"); `seed` drives the per-sample pair sampling.
    `require_windows` (a reason) refuses records without GT windows, naming file and line."""
    return MomentDataset(cfg, split, seed=seed, require_windows=require_windows)
