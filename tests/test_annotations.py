"""Annotation reader: every real file of /work/shared/data, and every kind of bad line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sadetr.core.errors import DataError
from sadetr.data.annotations import read_annotations

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_FILES = sorted(
    p for sub in ("qvhighlights", "charades_sta", "tacos") for p in (DATA / sub).glob("*.jsonl")
)

BASE = {
    "qid": 7,
    "query": "a man opens the door",
    "duration": 20,
    "vid": "v1",
    "relevant_clip_ids": [2, 3, 4],
    "saliency_scores": [[1, 2, 3], [4, 4, 4], [0, 0, 1]],
    "relevant_windows": [[4, 10]],
}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def with_changes(**changes: object) -> str:
    rec = {k: v for k, v in BASE.items() if k not in changes or changes[k] is not None}
    rec.update({k: v for k, v in changes.items() if v is not None})
    return json.dumps(rec)


@pytest.mark.skipif(not REAL_FILES, reason="shared data not present")
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_files_load_and_round_trip(path: Path) -> None:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    anns = read_annotations(path)
    assert len(anns) == len(lines)
    for ann, line in zip(anns, lines):
        assert ann.to_json() == json.loads(line)
    sample = anns[len(anns) // 2]
    if "tacos" in path.parts[-2]:
        assert isinstance(sample.qid, str)
    else:
        assert isinstance(sample.qid, int)
    if path.name == "highlight_test_release.jsonl":
        assert all(a.windows == () and a.relevant_clip_ids is None for a in anns)
    else:
        assert all(a.windows for a in anns)
        assert all(0 <= s < e <= a.duration for a in anns for s, e in a.windows)
    if "qvhighlights" in path.parts[-2] and "release" in path.name and "test" not in path.name:
        assert all(len(a.relevant_clip_ids) == len(a.saliency_scores) for a in anns)
        assert all(len(row) == 3 for a in anns for row in a.saliency_scores)


def test_fields_of_a_valid_line(tmp_path: Path) -> None:
    ann = read_annotations(write_lines(tmp_path / "a.jsonl", [with_changes()]))[0]
    assert (ann.qid, ann.query, ann.vid, ann.duration, ann.line) == (7, "a man opens the door", "v1", 20.0, 1)
    assert ann.windows == ((4.0, 10.0),)
    assert ann.relevant_clip_ids == (2, 3, 4)
    assert ann.saliency_scores == ((1, 2, 3), (4, 4, 4), (0, 0, 1))
    assert ann.to_json() == BASE


BAD_LINES = [
    ("{not json", None, "invalid JSON"),
    ("[1, 2]", None, "expected a JSON object"),
    (with_changes(qid=None), "qid", "missing key"),
    (with_changes(query=None), "query", "missing key"),
    (with_changes(vid=None), "vid", "missing key"),
    (with_changes(duration=None), "duration", "missing key"),
    (with_changes(qid=True), "qid", "int or a non-empty string"),
    (with_changes(query=""), "query", "non-empty string"),
    (with_changes(query="   "), "query", "non-empty string"),
    (with_changes(vid=3), "vid", "non-empty string"),
    (with_changes(duration="20"), "duration", "positive finite number"),
    (with_changes(duration=0), "duration", "positive finite number"),
    (with_changes(duration=float("nan")), "duration", "positive finite number"),
    (with_changes(relevant_windows=[[10, 4]]), "relevant_windows[0]", "start >= end"),
    (with_changes(relevant_windows=[[0, 4], [6, 6]]), "relevant_windows[1]", "start >= end"),
    (with_changes(relevant_windows=[[4, 25]]), "relevant_windows[0]", "outside [0, duration=20]"),
    (with_changes(relevant_windows=[[-3, 4]]), "relevant_windows[0]", "outside [0, duration=20]"),
    (with_changes(relevant_windows=[[4, "10"]]), "relevant_windows[0]", "finite numbers"),
    (with_changes(relevant_windows=[[4, 10, 12]]), "relevant_windows[0]", "[start, end] pair"),
    (with_changes(relevant_windows=[4, 10]), "relevant_windows[0]", "[start, end] pair"),
    (with_changes(relevant_windows="4-10"), "relevant_windows", "list of [start, end]"),
    (with_changes(saliency_scores=[[1, 2, 3], [4, 4, 4]]), "saliency_scores", "has 2 entries but"),
    (with_changes(saliency_scores=None), "saliency_scores", "missing key"),
    (with_changes(relevant_clip_ids=None), "relevant_clip_ids", "missing key"),
    (with_changes(relevant_clip_ids=[2, 3, -1]), "relevant_clip_ids", "non-negative ints"),
    (with_changes(relevant_clip_ids=[2, 3, 3]), "relevant_clip_ids", "duplicate"),
    (with_changes(saliency_scores=[[1, 2, 3], [4, 4], [0, 0, 1]]), "saliency_scores[1]", "annotator scores"),
    (with_changes(saliency_scores=[[1, 2, 3], [4, 4, 4.5], [0, 0, 1]]), "saliency_scores[1]", "non-negative"),
]


@pytest.mark.parametrize(("line", "field", "message"), BAD_LINES)
def test_bad_line_names_file_line_and_field(
    tmp_path: Path, line: str, field: str | None, message: str
) -> None:
    good = with_changes(qid=1)
    path = write_lines(tmp_path / "bad.jsonl", [good, "", line])  # blank line 2 is skipped, bad one is line 3
    with pytest.raises(DataError) as info:
        read_annotations(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert message in err.message
    assert str(err).startswith(f"{path}:3: ")


def test_duplicate_qid_and_empty_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "dup.jsonl", [with_changes(), with_changes(vid="v2")])
    with pytest.raises(DataError, match=r"duplicate qid 7 \(first on line 1\)") as info:
        read_annotations(path)
    assert (info.value.line, info.value.field) == (2, "qid")
    with pytest.raises(DataError, match="no annotations"):
        read_annotations(write_lines(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(DataError, match="not found"):
        read_annotations(tmp_path / "missing.jsonl")


def test_window_within_tolerance_is_clipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = with_changes(relevant_windows=[[-0.4, 3.0], [12.0, 20.6]])
    with caplog.at_level(logging.INFO, logger="sadetr.data.annotations"):
        ann = read_annotations(write_lines(tmp_path / "a.jsonl", [line]), tolerance=1.0)[0]
    assert ann.windows == ((0.0, 3.0), (12.0, 20.0))
    assert ann.to_json()["relevant_windows"] == [[-0.4, 3.0], [12.0, 20.6]]  # the record as written
    assert "clipped 2 window(s)" in caplog.text
    with pytest.raises(DataError, match=r"by more than 0\.5 s"):
        read_annotations(write_lines(tmp_path / "b.jsonl", [line]), tolerance=0.5)


def test_skip_bad_keeps_good_lines_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [with_changes(qid=1), with_changes(qid=2, query=""), "{", with_changes(qid=4)]
    with caplog.at_level(logging.WARNING, logger="sadetr.data.annotations"):
        anns = read_annotations(write_lines(tmp_path / "a.jsonl", lines), skip_bad=True)
    assert [a.qid for a in anns] == [1, 4]
    assert [a.line for a in anns] == [1, 4]
    assert "skipped 2 bad annotation line(s)" in caplog.text


def test_test_split_without_windows_and_string_qids(tmp_path: Path) -> None:
    line = json.dumps({"qid": "s1-d2_0", "query": "She took out kiwi", "duration": 249.86, "vid": "s1-d2"})
    ann = read_annotations(write_lines(tmp_path / "t.jsonl", [line]))[0]
    assert ann.qid == "s1-d2_0"
    assert ann.windows == ()
    assert not ann.has_saliency
