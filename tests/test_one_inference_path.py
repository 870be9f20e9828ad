"""One inference path: the training data, the Predictor and the corpus prepare a model's input through its
`FeaturePipeline`, and only `sadetr.data.pipeline` builds model inputs from features."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sadetr.corpus.embed import CorpusModel
from sadetr.data.dataset import MomentDataset, collate
from sadetr.data.features import l2_normalize
from sadetr.data.pipeline import FeaturePipeline, pad_inputs
from sadetr.inference.loading import load_model

SRC = Path(__file__).resolve().parents[1] / "src" / "sadetr"


def test_only_the_pipeline_module_builds_model_inputs() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(SRC).as_posix()
        if rel != "data/pipeline.py" and re.search(r"\badd_tef\(", text) and rel != "data/features.py":
            offenders.append(f"{rel}: calls add_tef")
        if rel != "data/pipeline.py" and re.search(r"^def (pad_inputs|pad_rows)\(", text, re.M):
            offenders.append(f"{rel}: defines its own padding")
        if rel == "corpus/embed.py" and re.search(r"\b(getattr|hasattr)\(", text):
            offenders.append(f"{rel}: probes the model")
    assert offenders == []


def test_training_samples_and_inference_inputs_are_the_same(
    tiny_checkpoint: Path, synthetic_qvh: dict
) -> None:
    loaded = load_model(tiny_checkpoint)
    pipe = loaded.pipeline
    assert pipe == FeaturePipeline.from_data_config(loaded.cfg.data)
    ds = MomentDataset(loaded.cfg.data, "val", path=synthetic_qvh["val"])
    root = synthetic_qvh["feat_root"]
    ann, sample = ds.annotations[0], ds[0]
    assert isinstance(sample, dict)
    raw = np.concatenate([np.load(root / s / f"{ann.vid}.npz")["features"] for s in pipe.video_sources], 1)
    raw = raw.astype(np.float32)  # stored as float16
    tokens = np.load(root / pipe.text_source / f"qid{ann.qid}.npz")["last_hidden_state"].astype(np.float32)
    # by hand: per-source L2 norm, TEF [i/L, (i+1)/L]; tokens L2-normalised and cut to max_q_l
    n = len(raw)
    by_hand = np.concatenate(
        [
            l2_normalize(raw[:, :2304]),
            l2_normalize(raw[:, 2304:]),
            np.arange(n)[:, None] / n,
            (np.arange(n)[:, None] + 1) / n,
        ],
        axis=1,
    )
    np.testing.assert_allclose(sample["video_feat"].numpy(), by_hand, atol=1e-6)
    np.testing.assert_allclose(sample["text_feat"].numpy(), l2_normalize(tokens)[: pipe.max_q_l], atol=1e-6)
    np.testing.assert_array_equal(pipe.video_input(pipe.normalize_clips(raw)), sample["video_feat"].numpy())
    np.testing.assert_array_equal(pipe.text_tokens(tokens), sample["text_feat"].numpy())
    corpus, _ = CorpusModel.load(tiny_checkpoint)
    np.testing.assert_array_equal(corpus.text_input(tokens), sample["text_feat"].numpy())
    # the training collate pads exactly as the inference path does
    batch = collate([ds[0], ds[1]])
    inputs = pad_inputs(
        [pipe.video_input(pipe.normalize_clips(raw)), ds[1]["video_feat"].numpy()],  # type: ignore[index]
        [pipe.text_tokens(tokens), ds[1]["text_feat"].numpy()],  # type: ignore[index]
    )
    for got, want in zip(
        inputs.tensors(), (batch[k] for k in ("video_feat", "video_mask", "text_feat", "text_mask"))
    ):
        assert got.dtype == want.dtype and bool((got == want).all())


def test_a_pipeline_record_round_trips_and_refuses_a_mismatch(tiny_checkpoint: Path) -> None:
    from sadetr.core.errors import CheckpointError

    loaded = load_model(tiny_checkpoint)
    pipe, cfg = loaded.pipeline, loaded.cfg
    dims = (cfg.model.video_dim, cfg.model.text_dim)
    assert FeaturePipeline.from_record(pipe.to_record(), cfg.data, dims) == pipe
    assert FeaturePipeline.from_record({}, cfg.data, dims) == pipe  # an old checkpoint: from its config
    with pytest.raises(CheckpointError, match="do not add up to the model's 2818"):
        FeaturePipeline.from_record({**pipe.to_record(), "use_tef": False, "video_dim": None}, cfg.data, dims)
