"""One answer per moment: windows that are the same after clip-grid rounding are merged (the best score is
kept) in every output path: split prediction (`to_submission`), the Predictor (one window and sliding
windows: `predict --video`, serve, app) and corpus search ranking. The collapsed model is a real SA-DETR
whose queries all start from the same anchor with the same content, so they all predict one span."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sadetr.bench.speed import synthetic_batch
from sadetr.config.compose import compose_config
from sadetr.corpus.search import Candidates, CorpusSearcher
from sadetr.data.pipeline import FeaturePipeline
from sadetr.inference.predictor import Predictor
from sadetr.model.build import build_model
from sadetr.model.postprocess import merge_duplicates, to_submission


def test_merge_duplicates_keeps_the_first_best_row_by_hand() -> None:
    rows = [[10.0, 20.0, 0.9], [0.0, 4.0, 0.8], [10.0, 20.00001, 0.7], [0.0, 4.0, 0.1], [4.0, 8.0, 0.05]]
    # [10, 20.00001] equals [10, 20] at 4 decimals; each window keeps its first (best-ranked) row
    assert merge_duplicates(rows) == [[10.0, 20.0, 0.9], [0.0, 4.0, 0.8], [4.0, 8.0, 0.05]]
    assert merge_duplicates(rows, decimals=6)[2] == [10.0, 20.00001, 0.7]
    assert merge_duplicates([]) == []


@pytest.fixture(scope="module")
def collapsed() -> tuple[torch.nn.Module, object]:
    cfg = compose_config("synthetic_tiny", [])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    qi = model.query_init
    with torch.no_grad():
        last = qi.anchor_mlp.layers[-1]  # every query: centre logit 0.3, width logit -1.2
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.3, -1.2]).repeat(qi.num_queries))
        qi.direct_content.zero_()
    return model, cfg


def test_a_collapsed_model_answers_each_window_once_in_split_prediction(collapsed) -> None:
    model, cfg = collapsed
    b = synthetic_batch(3, 40, 8, cfg.model.video_dim, cfg.model.text_dim, seed=2)
    b["video_mask"][2, 25:] = False
    with torch.no_grad():
        out = model(b["video_feat"], b["video_mask"], b["text_feat"], b["text_mask"])
    spans = out["pred_spans"]  # (B, Nq, 2): the collapse is real
    assert torch.allclose(spans, spans[:, :1].expand_as(spans), atol=1e-6)
    meta = [
        {**m, "duration": 80.0 if i < 2 else 50.0, "num_clips": 40 if i < 2 else 25}
        for i, m in enumerate(b["meta"])
    ]
    for rec, q in zip(to_submission(out, meta), out["pred_quality"]):
        assert len(rec["pred_relevant_windows"]) == 1  # 5 queries, one window
        assert rec["pred_relevant_windows"][0][2] == pytest.approx(float(q.max()), abs=1e-4)  # the best score


def test_a_collapsed_model_answers_each_window_once_in_the_predictor(collapsed) -> None:
    model, cfg = collapsed
    predictor = Predictor(model, cfg, FeaturePipeline.from_data_config(cfg.data), torch.device("cpu"))
    rng = np.random.default_rng(0)
    text = rng.normal(size=(6, predictor.text_dim)).astype(np.float32)
    for n_clips, n_windows in ((40, 1), (300, 8)):
        feats = rng.normal(size=(n_clips, sum(predictor.video_dims))).astype(np.float32)
        # NMS at IoU 1.01 removes nothing: only the merging can remove repeats
        pred = predictor.predict("q", feats, text_features=text, nms_threshold=1.01)
        assert pred["num_windows"] == n_windows
        windows = [(s, e) for s, e, _ in pred["pred_relevant_windows"]]
        assert len(windows) == len(set(windows)) and len(windows) <= n_windows


def test_corpus_ranking_lists_each_window_once() -> None:
    # two contexts of one video whose moments coincide after rounding, one of another video
    cands = Candidates(
        ["a", "a", "b"],
        np.array([[0.9, 0.9], [0.8, 0.9], [0.5, 0.5]]),
        np.array([[[10.0, 20.0], [10.0, 20.0]], [[10.0, 20.0], [30.0, 40.0]], [[10.0, 20.0], [10.0, 20.0]]]),
        np.array([[0.5, 0.4], [0.6, 0.3], [0.2, 0.1]]),
    )
    hits = CorpusSearcher.rank(None, cands, alpha=1.0, nms_iou=1.0)  # type: ignore[arg-type]
    keys = [(h.video, h.start, h.end) for h in hits]
    assert keys == [("a", 10.0, 20.0), ("a", 30.0, 40.0), ("b", 10.0, 20.0)]
    # the kept [10, 20] of video a is its best of three: exp(1 * (0.8 - 1)) * 0.6 = 0.491 beats
    # exp(1 * (0.9 - 1)) * 0.5 = 0.452 and exp(1 * (0.9 - 1)) * 0.4 = 0.362
    assert hits[0].score == pytest.approx(np.exp(-0.2) * 0.6) and hits[0].quality == 0.6
