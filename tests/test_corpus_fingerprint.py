"""A corpus index records the fingerprint of what decides its embeddings (the model's own `embed_video` /
`embed_text`) and refuses a model whose embeddings differ: its entries would be stale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sadetr.corpus import CorpusSearcher, build_index
from sadetr.corpus.store import CorpusIndexError, current_generation, read_state
from sadetr.engine.checkpoint import load_trained_model
from sadetr.inference.folder import save_pretrained
from sadetr.inference.loading import load_model

W, S = 20, 10


def _vids(data: dict) -> list[str]:
    return sorted({json.loads(x)["vid"] for x in data["val"].read_text().splitlines()})[:2]


def _perturbed(ckpt: Path, out: Path, prefix: str) -> Path:
    """A copy of `ckpt` with every floating parameter whose name starts with `prefix` moved by 1e-3."""
    state = torch.load(ckpt, weights_only=True)
    keys = [k for k in state["model"] if k.startswith(prefix) and state["model"][k].is_floating_point()]
    assert keys, prefix
    for k in keys:
        state["model"][k] = state["model"][k] + 1e-3
    torch.save(state, out)
    return out


@pytest.fixture
def index(tiny_checkpoint, synthetic_qvh, tmp_path) -> Path:
    return build_index(
        tiny_checkpoint,
        synthetic_qvh["feat_root"],
        tmp_path / "idx",
        videos=_vids(synthetic_qvh),
        window=W,
        stride=S,
    )


def test_the_fingerprint_follows_the_input_projections_only(tiny_checkpoint, tmp_path) -> None:
    model = load_trained_model(tiny_checkpoint)[0]
    base = model.embedding_fingerprint()
    assert base == load_trained_model(tiny_checkpoint)[0].embedding_fingerprint()  # deterministic
    proj = load_trained_model(_perturbed(tiny_checkpoint, tmp_path / "p.ckpt", "encoder.text_proj"))[0]
    dec = load_trained_model(_perturbed(tiny_checkpoint, tmp_path / "d.ckpt", "decoder."))[0]
    assert proj.embedding_fingerprint() != base
    assert dec.embedding_fingerprint() == base
    # and the embeddings themselves: the changed projection moves them, the decoder does not
    pipe = load_model(tiny_checkpoint).pipeline
    v = torch.randn(2, 7, pipe.video_dim)
    m = torch.ones(2, 7, dtype=torch.bool)
    t = torch.randn(2, 5, pipe.text_dim)
    tm = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model.embed_video(v, m), dec.embed_video(v, m))
        assert not torch.allclose(model.embed_text(t, tm), proj.embed_text(t, tm))


def test_an_index_refuses_a_model_whose_embeddings_changed(
    tiny_checkpoint, synthetic_qvh, index, tmp_path
) -> None:
    state, _ = read_state(index)
    model = load_trained_model(tiny_checkpoint)[0]
    assert state.manifest["embedding_fingerprint"] == model.embedding_fingerprint()

    stale = _perturbed(tiny_checkpoint, tmp_path / "stale.ckpt", "encoder.video_proj")
    with pytest.raises(CorpusIndexError, match="stale"):
        CorpusSearcher.open(index, stale)
    with pytest.raises(CorpusIndexError, match="stale"):  # nor may it add entries
        build_index(stale, synthetic_qvh["feat_root"], index, videos=[*_vids(synthetic_qvh), "x"])

    # other localiser weights, same embeddings: the index is still valid for it
    decoder_only = _perturbed(tiny_checkpoint, tmp_path / "dec.ckpt", "decoder.")
    searcher = CorpusSearcher.open(index, decoder_only)
    text = np.random.default_rng(0).normal(size=(6, searcher.model.text_dim)).astype(np.float32)
    assert searcher.search(query_feats=text, top=3, k_windows=4)

    # the same weights as a model folder (another file, another SHA-256): accepted
    loaded = load_model(tiny_checkpoint)
    folder = save_pretrained(tmp_path / "folder", loaded.model, loaded.cfg, loaded.pipeline)
    assert CorpusSearcher.open(index, folder).num_windows == state.manifest["num_windows"]


def test_an_index_without_a_fingerprint_accepts_only_its_checkpoint(tiny_checkpoint, index, tmp_path) -> None:
    gen = current_generation(index)
    assert gen is not None
    manifest = json.loads((gen / "manifest.json").read_text())
    del manifest["embedding_fingerprint"]  # as written before the fingerprint existed
    (gen / "manifest.json").write_text(json.dumps(manifest))
    assert CorpusSearcher.open(index).num_windows == manifest["num_windows"]
    decoder_only = _perturbed(tiny_checkpoint, tmp_path / "dec.ckpt", "decoder.")
    with pytest.raises(CorpusIndexError, match="not this one"):
        CorpusSearcher.open(index, decoder_only)
