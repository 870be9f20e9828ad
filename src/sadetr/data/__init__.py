"""Data layer: annotation reader, feature store, Dataset + collate, synthetic dataset generator.

Never imports the model, the engine or the CLI.
"""

from sadetr.data.annotations import Annotation, read_annotations
from sadetr.data.config import DataConfig
from sadetr.data.dataset import MomentDataset, build_dataset, collate
from sadetr.data.features import FeatureStore

__all__ = [
    "Annotation",
    "DataConfig",
    "FeatureStore",
    "MomentDataset",
    "build_dataset",
    "collate",
    "read_annotations",
]
