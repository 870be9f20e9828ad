"""Tests of `sadetr.eval`: the official reference file, hand-computable cases, a loop oracle, error paths,
other datasets' ground truth and the `sadetr evaluate` command."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sadetr.cli.main import main
from sadetr.core.errors import DataError, SubmissionError
from sadetr.eval import evaluate, format_table, load_jsonl
from sadetr.eval.highlight import ranking_ap
from sadetr.eval.moment import MAP_THRESHOLDS, average_precision, cross_iou, pad_windows

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
REF_PRED = DATA / "eval_reference" / "sample_val_preds.jsonl"
REF_METRICS = DATA / "eval_reference" / "sample_val_preds_metrics_raw.json"
QVH_VAL = DATA / "qvhighlights" / "highlight_val_release.jsonl"
needs_shared = pytest.mark.skipif(not REF_PRED.exists(), reason="../shared/data not available")


def gt(qid, windows, duration=150, saliency=None):
    """A ground-truth record; `saliency` = {clip_id: [s1, s2, s3]}."""
    rec = {"qid": qid, "query": "q", "vid": f"v{qid}", "duration": duration, "relevant_windows": windows}
    if saliency is not None:
        rec["relevant_clip_ids"] = sorted(saliency)
        rec["saliency_scores"] = [saliency[c] for c in sorted(saliency)]
    return rec


def pred(qid, windows, saliency=None):
    rec = {"qid": qid, "query": "q", "vid": f"v{qid}", "pred_relevant_windows": windows}
    if saliency is not None:
        rec["pred_saliency_scores"] = saliency
    return rec


# ---------------------------------------------------------------- the official reference
@pytest.fixture(scope="module")
def reference():
    return load_jsonl(REF_PRED), load_jsonl(QVH_VAL), json.loads(REF_METRICS.read_text())


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


@needs_shared
def test_reproduces_official_reference_every_value(reference):
    submission, ground_truth, expected = reference
    metrics = evaluate(submission, ground_truth)
    leaves = list(_leaves(expected))
    assert len(leaves) > 80
    for path, value in leaves:
        got = metrics
        for k in path:
            got = got[k]
        assert abs(got - value) <= 0.01 + 1e-9, (path, got, value)
    # same key order as the official brief (ours adds MR-full-R1@0.3 and MR-full-mIoU)
    assert [k for k in metrics["brief"] if k in expected["brief"]] == list(expected["brief"])
    assert metrics["meta"]["num_queries"] == len(ground_truth)


# ---------------------------------------------------------------- moment retrieval by hand
def test_half_overlap_r1_miou_map():
    # GT [0, 10], top-1 [0, 5]: IoU 0.5 exactly
    m = evaluate([pred(1, [[0, 5, 0.9]])], [gt(1, [[0, 10]])])["brief"]
    assert m["MR-full-R1@0.3"] == 100.0 and m["MR-full-R1@0.5"] == 100.0 and m["MR-full-R1@0.7"] == 0.0
    assert m["MR-full-mIoU"] == 50.0
    assert m["MR-full-mAP@0.5"] == 100.0 and m["MR-full-mAP@0.75"] == 0.0
    assert m["MR-full-mAP"] == 10.0  # AP 1 at the first of the ten thresholds only


def test_map_ranks_by_score_and_r1_takes_first_listed():
    # two GT windows; by score: hit A, miss, hit B -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # interpolated AP = 1/2 * 1 + 1/2 * 2/3 = 5/6. Listed order differs from score order.
    windows = [[20, 30, 0.7], [40, 50, 0.8], [0, 10, 0.9]]
    m = evaluate([pred(1, windows)], [gt(1, [[0, 10], [20, 30]])])
    for t in MAP_THRESHOLDS:
        assert m["full"]["MR-mAP"][str(t)] == pytest.approx(100 * 5 / 6, abs=0.005)
    assert m["full"]["MR-R1"]["0.95"] == 100.0  # first listed window [20, 30] matches GT B exactly


def test_duplicate_prediction_cannot_match_a_gt_twice():
    # [0,10] twice then [20,30]: second copy is a false positive -> same 5/6 as above
    windows = [[0, 10, 0.9], [0, 10, 0.8], [20, 30, 0.7]]
    m = evaluate([pred(1, windows)], [gt(1, [[0, 10], [20, 30]])])
    assert m["brief"]["MR-full-mAP"] == pytest.approx(100 * 5 / 6, abs=0.005)


def test_only_first_ten_listed_predictions_count():
    # the only correct window is listed 11th, with the best score: cut before sorting (official)
    windows = [[100 + i, 101 + i, 0.5] for i in range(10)] + [[0, 10, 0.99]]
    m = evaluate([pred(1, windows)], [gt(1, [[0, 10]])])["brief"]
    assert m["MR-full-mAP"] == 0.0
    m = evaluate([pred(1, windows[-1:] + windows[:9])], [gt(1, [[0, 10]])])["brief"]
    assert m["MR-full-mAP"] == 100.0


def test_length_buckets():
    ground_truth = [
        gt(1, [[0, 10]]),  # short (length 10 is in (0, 10])
        gt(2, [[0, 40]]),  # long
        gt(3, [[0, 5], [20, 40]]),  # a short and a middle window (length 20)
    ]
    submission = [
        pred(1, [[0, 10, 1.0]]),
        pred(2, [[100, 110, 1.0]]),
        pred(3, [[20, 40, 1.0]]),
    ]
    m = evaluate(submission, ground_truth)
    assert (
        m["short"]["num_queries"] == 2 and m["middle"]["num_queries"] == 1 and m["long"]["num_queries"] == 1
    )
    assert m["brief"]["MR-short-mAP"] == 50.0  # q1 perfect; q3 only keeps [0, 5], missed
    assert m["brief"]["MR-middle-mAP"] == 100.0  # q3 keeps [20, 40], found
    assert m["brief"]["MR-long-mAP"] == 0.0
    # full: q1 AP 1; q2 AP 0; q3 one of two GT found at rank 1 -> AP 1/2
    assert m["brief"]["MR-full-mAP"] == 50.0
    # no middle window at all: bucket and brief key are absent
    m = evaluate(submission[:2], ground_truth[:2])
    assert "middle" not in m and "MR-middle-mAP" not in m["brief"]


def _oracle_detection_ap(windows, gts, t):
    """Loop version of the greedy matching + all-point interpolated AP, one query one threshold."""
    ranked = sorted(windows[:10], key=lambda w: -w[2])
    used, hits = set(), []
    for s, e, _ in ranked:
        ious = []
        for gs, ge in gts:
            inter = max(0.0, min(e, ge) - max(s, gs))
            union = (e - s) + (ge - gs) - inter
            ious.append(inter / union if union > 0 else 0.0)
        free = [j for j in range(len(gts)) if ious[j] >= t and j not in used]
        if free:
            used.add(max(free, key=lambda j: (ious[j], j)))
        hits.append(bool(free))
    precision = [sum(hits[: k + 1]) / (k + 1) for k in range(len(hits))]
    ap, prev_recall = 0.0, 0.0
    for k in range(len(hits)):
        recall = sum(hits[: k + 1]) / len(gts)
        if recall > prev_recall:
            ap += (recall - prev_recall) * max(precision[k:])
            prev_recall = recall
    return ap


def test_detection_ap_matches_loop_oracle_on_random_queries():
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(60):
        starts = rng.integers(0, 60, size=rng.integers(1, 5)) * 2.0
        g = np.stack([starts, starts + rng.integers(1, 20, size=len(starts)) * 2.0], axis=1)
        n = rng.integers(0, 14)
        ps = rng.integers(0, 60, size=n) * 2.0
        p = np.stack([ps, ps + rng.integers(1, 20, size=n) * 2.0, rng.integers(0, 5, size=n) / 4], axis=1)
        p[: n // 3, :2] = g[rng.integers(0, len(g), size=n // 3)]  # some exact hits, some duplicates
        gts.append(g)
        preds.append(p.reshape(-1, 3))
    g_pad, g_valid = pad_windows(gts, 2)
    p_pad, p_valid = pad_windows(preds, 3, 10)
    ap = average_precision(p_pad, p_valid, g_pad, g_valid, MAP_THRESHOLDS)  # [Q, T]
    for i in range(len(gts)):
        expected = [_oracle_detection_ap(preds[i].tolist(), gts[i].tolist(), t) for t in MAP_THRESHOLDS]
        np.testing.assert_allclose(ap[i], expected, atol=1e-12)


# ---------------------------------------------------------------- highlight detection by hand
def test_highlight_levels_hit1_and_ap():
    # 5 clips; clip 1 scored 4 by all, clip 3 scored 2 by all. Ranking: clip 3, 1, 2, 0, 4.
    ground_truth = [gt(1, [[2, 4]], duration=10, saliency={1: [4, 4, 4], 3: [2, 2, 2]})]
    submission = [pred(1, [[2, 4, 1.0]], saliency=[0.1, 0.5, 0.2, 0.9, 0.0])]
    b = evaluate(submission, ground_truth)["brief"]
    assert b["HL-min-Fair-mAP"] == 100.0 and b["HL-min-Fair-Hit1"] == 100.0  # both positives on top
    assert b["HL-min-Good-mAP"] == 50.0 and b["HL-min-Good-Hit1"] == 0.0  # positive clip 1 at rank 2
    assert b["HL-min-VeryGood-mAP"] == 50.0 and b["HL-min-VeryGood-Hit1"] == 0.0


def test_highlight_annotators_ties_and_padding():
    # only annotator 0 rates clip 1 as VeryGood: Hit1 counts it (any annotator); mAP averages the
    # three annotators' APs, two of which have no positive (AP 0).
    ground_truth = [gt(1, [[2, 4]], duration=10, saliency={1: [4, 0, 0]})]
    b = evaluate([pred(1, [[2, 4, 1]], saliency=[0, 9, 0, 0, 0])], ground_truth)["brief"]
    assert b["HL-min-VeryGood-Hit1"] == 100.0
    assert b["HL-min-VeryGood-mAP"] == pytest.approx(100 / 3, abs=0.005)
    # equal scores are one threshold: 2 positives among 5 clips -> AP 2/5; argmax takes clip 0 -> miss
    ground_truth = [gt(1, [[2, 4]], duration=10, saliency={1: [3, 3, 3], 4: [3, 3, 3]})]
    b = evaluate([pred(1, [[2, 4, 1]], saliency=[0.5] * 5)], ground_truth)["brief"]
    assert b["HL-min-Fair-mAP"] == 40.0 and b["HL-min-Fair-Hit1"] == 0.0
    # one clip short: the missing last clip is scored 0 (official zero padding), above the -1s
    b = evaluate([pred(1, [[2, 4, 1]], saliency=[-1.0] * 4)], ground_truth)["brief"]
    assert b["HL-min-Fair-mAP"] == pytest.approx(100 * (1 + 2 / 5) / 2, abs=0.005)  # ranks 1 and 5


# ---------------------------------------------------------------- cases that need no shared data
# The official reference file checks these rules too, but only where ../shared/data exists.
def test_predictions_six_to_ten_still_count():
    # the correct window is listed 8th with the best score: within the official top 10, so it ranks
    # first after the re-sort (AP 1); listed 11th it is cut (AP 0, see the test above)
    windows = [[100 + i, 101 + i, 0.5] for i in range(7)] + [[0, 10, 0.99]] + [[120, 121, 0.4]] * 2
    m = evaluate([pred(1, windows)], [gt(1, [[0, 10]])])["brief"]
    assert m["MR-full-mAP"] == 100.0
    # R1 still takes the first listed window, whatever the scores
    assert m["MR-full-R1@0.3"] == 0.0


def test_equal_iou_tie_goes_to_the_last_gt_window():
    # [0, 20] has IoU 0.5 with both GT windows; the official matching (reversed argsort) gives it the
    # LAST one, [10, 20], so the exact copy of [10, 20] ranked next is a false positive at IoU 0.5:
    # precision 1, 1/2 at recall 1/2 -> AP 1/2 (taking the first GT window would give AP 1).
    windows = [[0, 20, 0.9], [10, 20, 0.8]]
    m = evaluate([pred(1, windows)], [gt(1, [[0, 10], [10, 20]])])["brief"]
    assert m["MR-full-mAP@0.5"] == 50.0


def test_cross_iou_hand_values():
    # half overlap 5/10, [0, 10] vs [5, 20]: 5/20, touching and disjoint windows 0 (never negative)
    iou = cross_iou(np.array([[0.0, 10.0]]), np.array([[0.0, 5.0], [5.0, 20.0], [10.0, 12.0], [20.0, 30.0]]))
    np.testing.assert_allclose(iou, [[0.5, 0.25, 0.0, 0.0]])


def test_fair_level_starts_at_two():
    # clip 1 scored 1 by every annotator is not Fair (Fair is >= 2); clip 3 scored 2 is.
    ground_truth = [gt(1, [[2, 4]], duration=10, saliency={1: [1, 1, 1], 3: [2, 2, 2]})]
    b = evaluate([pred(1, [[2, 4, 1.0]], saliency=[0.0, 0.9, 0.1, 0.5, 0.2])], ground_truth)["brief"]
    assert b["HL-min-Fair-Hit1"] == 0.0  # the top clip (1) is below Fair
    assert b["HL-min-Fair-mAP"] == 50.0  # the only Fair clip (3) is ranked 2nd: AP 1/2
    assert b["HL-min-Good-mAP"] == 0.0  # no clip reaches Good: AP 0 for every annotator


def test_hit1_uses_the_scores_as_given_on_short_predictions():
    # One clip short of the 5-clip video: AP zero-pads the missing clip (score 0 > -1, so the positive
    # clip 4 ranks first), but Hit1 takes the best clip of the prediction as given: clip 0, a miss.
    ground_truth = [gt(1, [[8, 10]], duration=10, saliency={4: [3, 3, 3]})]
    b = evaluate([pred(1, [[8, 10, 1]], saliency=[-1.0] * 4)], ground_truth)["brief"]
    assert b["HL-min-Fair-mAP"] == 100.0
    assert b["HL-min-Fair-Hit1"] == 0.0
    # and when the given scores do pick the positive clip, it is a hit
    b = evaluate([pred(1, [[8, 10, 1]], saliency=[-1.0, -1.0, -1.0, 2.0])], ground_truth)["brief"]
    assert b["HL-min-Fair-Hit1"] == 0.0  # clip 3 is not positive
    ground_truth = [gt(1, [[6, 8]], duration=10, saliency={3: [3, 3, 3]})]
    b = evaluate([pred(1, [[6, 8, 1]], saliency=[-1.0, -1.0, -1.0, 2.0])], ground_truth)["brief"]
    assert b["HL-min-Fair-Hit1"] == 100.0


def _oracle_ranking_ap(scores, labels):
    """Threshold-by-threshold version of the official `get_ap` (interpolated, one point per new tp)."""
    if labels.sum() == 0:
        return 0.0
    if labels.all():
        return 1.0
    points = []  # (precision, tp) per distinct threshold, high to low
    for thr in sorted(set(scores.tolist()), reverse=True):
        sel = scores >= thr
        points.append((labels[sel].sum() / sel.sum(), labels[sel].sum()))
    values, prev_tp = [], 0
    for k, (_, tp) in enumerate(points):
        if tp > prev_tp:
            values.append(max(p for p, _ in points[k:]))
            prev_tp = tp
    return float(np.mean(values))


def test_ranking_ap_matches_loop_oracle_with_ties():
    rng = np.random.default_rng(1)
    q, n = 40, 12
    scores = rng.integers(0, 6, size=(q, n)) / 5.0  # many ties
    labels = rng.random((q, n, 3)) < 0.3
    lengths = rng.integers(3, n + 1, size=q)
    valid = np.arange(n)[None, :] < lengths[:, None]
    ap = ranking_ap(scores, labels & valid[..., None], valid)
    for i in range(q):
        for a in range(3):
            expected = _oracle_ranking_ap(scores[i, : lengths[i]], labels[i, : lengths[i], a])
            assert ap[i, a] == pytest.approx(expected, abs=1e-12), (i, a)


# ---------------------------------------------------------------- malformed submissions
@pytest.fixture
def tiny():
    ground_truth = [gt(q, [[0, 10]], duration=10, saliency={0: [2, 2, 2]}) for q in (1, 2, 3)]
    submission = [pred(q, [[0, 10, 0.9]], saliency=[1.0, 0, 0, 0, 0]) for q in (1, 2, 3)]
    return submission, ground_truth


def _raises_with_qids(submission, ground_truth, qids, **kw):
    with pytest.raises(SubmissionError) as err:
        evaluate(submission, ground_truth, **kw)
    assert set(err.value.qids) == set(qids)
    return err.value


def test_missing_extra_and_duplicate_qids(tiny):
    submission, ground_truth = tiny
    err = _raises_with_qids(submission[:2], ground_truth, [3])
    assert "allow-partial" in str(err)
    _raises_with_qids([*submission, pred(7, [[0, 1, 1]], [0] * 5)], ground_truth, [7])
    _raises_with_qids([*submission, submission[1]], ground_truth, [2], allow_partial=True)


def test_allow_partial_evaluates_the_intersection(tiny):
    submission, ground_truth = tiny
    submission = [*submission[:2], pred(9, [[0, 1, 1]], [0] * 5)]
    submission[1] = pred(2, [[5, 10, 0.9]], saliency=[1.0, 0, 0, 0, 0])  # IoU 0.5
    m = evaluate(submission, ground_truth, allow_partial=True)
    assert m["meta"] == {"num_queries": 2, "num_left_out": 2, "num_missing": 1, "num_extra": 1}
    assert m["brief"]["MR-full-mIoU"] == 75.0  # (1 + 0.5) / 2 over qids 1 and 2 only
    assert m["brief"] == evaluate(submission[:2], ground_truth[:2])["brief"]
    assert "2 qids left out" in format_table(m)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("pred_relevant_windows", [[0, 10, 0.9], [8, 4, 0.5]], "start > end"),
        ("pred_relevant_windows", [[0, 10, math.nan]], "NaN/inf"),
        ("pred_relevant_windows", [[0, math.inf, 0.5]], "NaN/inf"),
        ("pred_relevant_windows", [[0, 10]], "[start, end, score]"),
        ("pred_saliency_scores", [1.0, 0, math.nan, 0, 0], "NaN/inf"),
        ("pred_saliency_scores", [1.0, 0, 0], "length"),  # 3 clips vs int(10 / 2) = 5
        ("pred_saliency_scores", [1.0] * 7, "length"),
    ],
)
def test_malformed_predictions_name_the_qid(tiny, field, value, problem):
    submission, ground_truth = tiny
    submission[1] = {**submission[1], field: value}
    err = _raises_with_qids(submission, ground_truth, [2])
    assert problem in str(err)


def test_saliency_one_clip_off_is_accepted(tiny):
    submission, ground_truth = tiny
    submission[0] = {**submission[0], "pred_saliency_scores": [1.0, 0, 0, 0]}
    submission[1] = {**submission[1], "pred_saliency_scores": [1.0, 0, 0, 0, 0, 0]}
    assert evaluate(submission, ground_truth)["brief"]["HL-min-Fair-Hit1"] == 100.0


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "pred.jsonl"
    path.write_text('{"qid": 1}\n\n{"qid": 2,\n')
    with pytest.raises(DataError) as err:
        load_jsonl(path)
    assert err.value.line == 3 and str(path) in str(err.value)
    path.write_text('{"qid": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r":2: expected a JSON object"):
        load_jsonl(path)


# ---------------------------------------------------------------- other datasets (no saliency)
@needs_shared
@pytest.mark.parametrize(
    "name", ["tacos/tacos_test_release.jsonl", "charades_sta/charades_test_release.jsonl"]
)
def test_charades_and_tacos_ground_truth(name):
    ground_truth = load_jsonl(DATA / name)[:40]
    exact = [pred(g["qid"], [[*g["relevant_windows"][0], 1.0]]) for g in ground_truth]
    m = evaluate(exact, ground_truth)
    assert not [k for k in m["brief"] if k.startswith("HL")]
    assert m["brief"]["MR-full-R1@0.7"] == 100.0 and m["brief"]["MR-full-mIoU"] == 100.0
    assert m["brief"]["MR-full-mAP"] == 100.0
    # shift each top-1 by half its length: IoU (L/2) / (3L/2) = 1/3
    shifted = []
    for g in ground_truth:
        s, e = g["relevant_windows"][0]
        shifted.append(pred(g["qid"], [[s + (e - s) / 2, e + (e - s) / 2, 1.0]]))
    b = evaluate(shifted, ground_truth)["brief"]
    assert b["MR-full-R1@0.3"] == 100.0 and b["MR-full-R1@0.5"] == 0.0
    assert b["MR-full-mIoU"] == pytest.approx(100 / 3, abs=0.01)
    assert isinstance(ground_truth[0]["qid"], str) == name.startswith("tacos")


# ---------------------------------------------------------------- command line
def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_cli_writes_metrics_and_reports_errors(tmp_path, tiny, capsys):
    submission, ground_truth = tiny
    sub_path = _write_jsonl(tmp_path / "pred.jsonl", submission)
    gt_path = _write_jsonl(tmp_path / "gt.jsonl", ground_truth)
    out = tmp_path / "out" / "metrics.json"
    assert main(["evaluate", "--submission", sub_path, "--gt", gt_path, "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == evaluate(submission, ground_truth)
    assert "MR-full-mAP" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temp file left

    bad = _write_jsonl(tmp_path / "bad.jsonl", submission[:2])
    assert main(["evaluate", "--submission", bad, "--gt", gt_path]) == 2
    assert "qids 3" in capsys.readouterr().err
    assert main(["evaluate", "--submission", bad, "--gt", gt_path, "--allow-partial"]) == 0
    assert "left out 1 qids" in capsys.readouterr().err


def test_eval_package_does_not_import_torch():
    code = "import sys, sadetr.eval, sadetr.eval.submission; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
