"""TVR corpus metrics (`sadetr.corpus.metrics`) on hand-computed rankings."""

from __future__ import annotations

import pytest

from sadetr.corpus.metrics import chance_vcmr, corpus_metrics, first_hit_rank, max_iou, video_rank

GT = [
    {"vid": "a", "relevant_windows": [[10.0, 20.0]]},
    {"vid": "b", "relevant_windows": [[0.0, 10.0], [50.0, 60.0]]},
]


def test_iou_and_ranks_by_hand() -> None:
    assert max_iou(10, 20, [[10, 20]]) == 1.0
    assert max_iou(12, 20, [[10, 20]]) == pytest.approx(0.8)
    assert max_iou(15, 25, [[10, 20]]) == pytest.approx(5 / 15)
    # a moment in the wrong video never counts, however well it overlaps
    assert first_hit_rank([("b", 10, 20), ("a", 10, 14), ("a", 11, 20)], "a", [[10, 20]], 0.5) == 2
    assert first_hit_rank([("b", 10, 20)], "a", [[10, 20]], 0.5) == -1
    assert video_rank([("c", 0, 1), ("c", 5, 6), ("a", 0, 1)], "a") == 1


def test_corpus_metrics_hand_case() -> None:
    vcmr = [
        # query 0: right video at rank 2 with IoU 0.8 (>= 0.7), after a wrong video and a bad span
        [("b", 10, 20), ("a", 0, 4), ("a", 12, 20)] + [("c", 0, 1)] * 10,
        # query 1: first hit at rank 6 with IoU 0.6 (second GT window): R@10 at 0.5 only
        [("a", 0, 10)] * 6 + [("b", 52, 62)],
    ]
    svmr = [[("a", 12, 20)], [("b", 30, 40), ("b", 0, 9)]]  # IoU 0.8; then 0 and 0.9
    m = corpus_metrics(vcmr, GT, svmr)
    assert m["VCMR-R@1-IoU=0.5"] == 0.0
    assert m["VCMR-R@5-IoU=0.5"] == 50.0  # query 0 at rank 2 (0-based)
    assert m["VCMR-R@10-IoU=0.5"] == 100.0
    assert m["VCMR-R@5-IoU=0.7"] == 50.0
    assert m["VCMR-R@10-IoU=0.7"] == 50.0  # IoU of [52, 62] with [50, 60] is 8/12 < 0.7
    assert m["SVMR-R@1-IoU=0.5"] == 50.0
    assert m["SVMR-R@5-IoU=0.7"] == 100.0
    # videos by first appearance: query 0 -> b, a, c (rank 1); query 1 -> a, b (rank 1)
    assert m["VR-R@1"] == 0.0 and m["VR-R@5"] == 100.0
    assert set(m) >= {f"VCMR-R@{k}-IoU={t}" for k in (1, 5, 10, 100) for t in (0.5, 0.7)}


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        corpus_metrics([[]], GT)


def test_chance_level_matches_its_closed_form() -> None:
    # one video in the corpus, GT the whole video: a uniform span [u1, u2] sorted has IoU = u2 - u1,
    # P(u2 - u1 >= 0.5) = 0.25 for one draw; with k = 2 draws, 1 - 0.75^2 = 0.4375
    gt = [{"vid": "a", "relevant_windows": [[0.0, 100.0]]}]
    assert chance_vcmr(gt, {"a": 100.0}, 1, 0.5, samples=40000) == pytest.approx(25.0, abs=1.0)
    assert chance_vcmr(gt, {"a": 100.0}, 2, 0.5, samples=40000) == pytest.approx(43.75, abs=1.0)
    # with 4 videos, the right one is drawn with probability 1/4 per draw
    four = {v: 100.0 for v in "abcd"}
    assert chance_vcmr(gt, four, 1, 0.5, samples=40000) == pytest.approx(25.0 / 4, abs=0.6)


def test_docstring_examples_hold() -> None:
    import doctest

    import sadetr.corpus.metrics
    import sadetr.corpus.search

    for module in (sadetr.corpus.metrics, sadetr.corpus.search):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
