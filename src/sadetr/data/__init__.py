"""Data layer: annotation reader, feature store, Dataset + collate, synthetic dataset generator.

Never imports the model, the engine or the CLI. The names below are imported on first use (PEP 562), so
that `sadetr.data.synth` and the other torch-free modules load without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sadetr.data.annotations import Annotation, read_annotations
    from sadetr.data.config import DataConfig
    from sadetr.data.dataset import MomentDataset, build_dataset, collate
    from sadetr.data.features import FeatureStore

_HOME = {
    "Annotation": "annotations",
    "read_annotations": "annotations",
    "DataConfig": "config",
    "MomentDataset": "dataset",
    "build_dataset": "dataset",
    "collate": "dataset",
    "FeatureStore": "features",
}

__all__ = [
    "Annotation",
    "DataConfig",
    "FeatureStore",
    "MomentDataset",
    "build_dataset",
    "collate",
    "read_annotations",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'sadetr.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sadetr.data.{_HOME[name]}"), name)
