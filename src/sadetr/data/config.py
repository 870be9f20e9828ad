"""Typed configuration of the data layer (`DataConfig`): annotation files, feature sources, lengths.

Defaults are the QVHighlights SF+C / CLIP setting (docs/data.md). Only
`sadetr.data.dataset.build_dataset` (and the feature store it builds) reads this object.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """Where the annotations and features are, and how a sample is turned into model input."""

    dataset: str = "qvhighlights"  # qvhighlights | charades | tacos | any name (informational)
    train_path: str = "data/qvhighlights/highlight_train_release.jsonl"
    val_path: str = "data/qvhighlights/highlight_val_release.jsonl"
    test_path: str = "data/qvhighlights/highlight_test_release.jsonl"
    feat_root: str = "features/qvhighlights"  # <feat_root>/<source>/{vid}.npz, <text_source>/qid{qid}.npz
    video_sources: list[str] = field(default_factory=lambda: ["slowfast_features", "clip_features"])
    video_dims: list[int] = field(default_factory=lambda: [2304, 512])  # expected D of each source
    text_source: str = "clip_text_features"
    text_dim: int = 512
    clip_len: float = 2.0  # seconds per feature clip (1.0 for Charades-STA SF+C)
    max_v_l: int = 75  # max clips per video; <= 0 = no limit
    max_q_l: int = 32  # max text tokens (longer queries are truncated)
    long_video: str = "truncate"  # truncate | resample: what happens to a video longer than max_v_l
    max_windows: int = 0  # keep at most N GT windows per query in training targets (0 = all)
    use_tef: bool = True  # append the temporal endpoint feature [i/L_v, (i+1)/L_v]
    normalize_video: bool = True  # L2-normalise every clip, per source
    normalize_text: bool = True  # L2-normalise every token
    on_bad_sample: str = "error"  # error | skip (warn per sample, count at the end)
    window_tolerance: float = 1.0  # seconds a window may stick out of [0, duration] (then clipped)
    # a training record without GT windows (`relevant_windows` missing or []) is an error, unless this
    # opts in to training it as a "no moment" query (empty span targets, no saliency pairs)
    allow_empty_windows: bool = False
    cache_features: bool = False  # keep loaded features in memory (per process)

    @property
    def video_feat_dim(self) -> int:
        """Width of `batch["video_feat"]`: the sum of the source dims, + 2 with the TEF."""
        return sum(self.video_dims) + (2 if self.use_tef else 0)

    @property
    def text_feat_dim(self) -> int:
        """Width of `batch["text_feat"]`."""
        return self.text_dim
