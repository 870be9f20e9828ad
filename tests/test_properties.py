"""Property-based tests (Hypothesis) of the parsers that face users: malformed input of any shape must
end in a `SadetrError` (one line, naming where) or be accepted, never in another exception.

Covered: the annotation reader (`data/annotations.py`), the submission validator and JSON-lines
reader (`eval/submission.py`, `eval/io.py`), `--set` overrides and YAML layers (`config.py`).
Examples are few and unhurried (`max_examples` modest, no deadline) so that the module runs in seconds.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sadetr.core.errors import SadetrError

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Any JSON value, including the NaN / Infinity tokens and ints too large for a float.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63, -1, 0])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

VALID_ANNOTATION = {
    "qid": 7,
    "query": "a man opens the door",
    "vid": "v1",
    "duration": 150,
    "relevant_windows": [[10.0, 20.0], [30, 40]],
    "relevant_clip_ids": [5, 6, 7],
    "saliency_scores": [[1, 2, 3], [4, 4, 4], [0, 1, 2]],
}
ANNOTATION_KEYS = [*VALID_ANNOTATION, "extra"]


def _tmp_file(data: bytes, suffix: str = ".jsonl") -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return Path(name)


def _read_ok_or_sadetr(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except SadetrError as err:
        message = str(err).strip()
        assert message and "\n" not in message, message  # one line, as the CLI prints it
        return None


# ----------------------------------------------------------------------------- annotation reader


@st.composite
def mutated_record(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """`base` with a few fields replaced by random JSON values, deleted, or nested values mutated."""
    rec = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*base, "extra"]))
        action = draw(st.sampled_from(["replace", "delete", "inner"]))
        if action == "delete":
            rec.pop(key, None)
        elif action == "inner" and isinstance(rec.get(key), list) and rec[key]:
            i = draw(st.integers(0, len(rec[key]) - 1))
            rec[key][i] = draw(json_values)
        else:
            rec[key] = draw(json_values)
    return rec


@SETTINGS
@given(
    records=st.lists(mutated_record(VALID_ANNOTATION), min_size=1, max_size=4),
    require=st.sampled_from([None, "a training split needs GT windows"]),
    skip_bad=st.booleans(),
)
@example(records=[{**VALID_ANNOTATION, "duration": 10**400}], require=None, skip_bad=False)
@example(records=[{**VALID_ANNOTATION, "relevant_windows": [[0, 10**400]]}], require=None, skip_bad=False)
def test_annotation_reader_raises_only_sadetr_errors(
    records: list[dict], require: str | None, skip_bad: bool
) -> None:
    from sadetr.data.annotations import read_annotations

    path = _tmp_file("".join(json.dumps(r) + "\n" for r in records).encode())
    try:
        anns = _read_ok_or_sadetr(read_annotations, path, skip_bad=skip_bad, require_windows=require)
    finally:
        path.unlink()
    for ann in anns or []:  # what is accepted is what the contract promises
        assert ann.duration > 0 and all(0 <= s < e <= ann.duration for s, e in ann.windows)
        assert isinstance(ann.query, str) and ann.query.strip()
        if require:
            assert ann.windows


@pytest.mark.parametrize("reader", ["sadetr.data.annotations:read_annotations", "sadetr.eval:load_jsonl"])
@SETTINGS
@given(lines=st.lists(st.binary(max_size=40), min_size=1, max_size=5))
@example(lines=[b"\xff\xfe{}"])
@example(lines=[b"[" * 5000])
@example(lines=[b'{"qid": 1, "query": "q", "vid": "v", "duration": 1e999}'])
def test_line_readers_on_random_bytes(reader: str, lines: list[bytes]) -> None:
    """The annotation reader and the evaluation's JSON-lines reader: any bytes give records or a
    SadetrError, never another exception."""
    module, _, name = reader.partition(":")
    path = _tmp_file(b"\n".join(lines))
    try:
        _read_ok_or_sadetr(getattr(importlib.import_module(module), name), path)
    finally:
        path.unlink()


# ----------------------------------------------------------------------------- submission validator

GT = [
    {
        "qid": q,
        "query": "q",
        "vid": "v",
        "duration": 150,
        "relevant_windows": [[2.0 * q, 2.0 * q + 10]],
        "relevant_clip_ids": [q, q + 1],
        "saliency_scores": [[1, 2, 3], [4, 4, 4]],
    }
    for q in range(3)
]
PRED = [
    {
        "qid": q,
        "pred_relevant_windows": [[2.0 * q, 2.0 * q + 10, 0.9], [0, 4, 0.2]],
        "pred_saliency_scores": [0.1] * 75,
    }
    for q in range(3)
]


@SETTINGS
@given(
    submission=st.lists(mutated_record(PRED[0]), max_size=3).map(lambda extra: [*PRED[1:], *extra]),
    ground_truth=st.lists(mutated_record(GT[0]), max_size=2).map(lambda extra: [*GT[1:], *extra]),
    allow_partial=st.booleans(),
)
@example(submission=[{"qid": 0, "pred_relevant_windows": []}], ground_truth=GT[:1], allow_partial=False)
@example(submission=PRED, ground_truth=[{**GT[0], "duration": float("inf")}, *GT[1:]], allow_partial=True)
@example(submission=PRED, ground_truth=[{**GT[0], "duration": 10**400}, *GT[1:]], allow_partial=True)
def test_submission_validator_raises_only_sadetr_errors(
    submission: list[Any], ground_truth: list[Any], allow_partial: bool
) -> None:
    from sadetr.eval import evaluate

    metrics = _read_ok_or_sadetr(evaluate, submission, ground_truth, allow_partial=allow_partial)
    if metrics is not None:
        assert all(0 <= v <= 100 for v in metrics["brief"].values())


# ----------------------------------------------------------------------------- config: --set, YAML layers

CONFIG_KEYS = [
    "train.lr",
    "train.epochs",
    "train.device",
    "train.selection_metric",
    "data.video_dims",
    "data.max_v_l",
    "data.on_bad_sample",
    "model.hidden_dim",
    "model.name",
    "loss.l1",
    "data",
    "train",
    "nope.key",
    "train.lr.x",
    "",
    ".",
    "a..b",
]
yaml_scalars = st.sampled_from(
    [
        "",
        "1e-4",
        ".nan",
        "-.inf",
        "[1, 2",
        "{a: 1}",
        "2020-13-45",
        "2001-01-01",
        "!!binary aGVsbG8=",
        "!!python/object:os.system ls",
        "!!set {a, b}",
        "&a [*a]",
        "yes",
        "~",
        "0x1F",
        "1_000",
        "'quoted",
    ]
) | st.text(max_size=20)


@SETTINGS
@given(
    overrides=st.lists(
        st.tuples(st.sampled_from(CONFIG_KEYS) | st.text(max_size=15), yaml_scalars).map("=".join)
        | st.text(max_size=25),
        min_size=1,
        max_size=4,
    )
)
@example(overrides=["train.lr=2020-13-45"])
@example(overrides=["train.epochs=!!binary aGVsbG8="])
@example(overrides=["0\n0"])  # a key with a newline is shown escaped: the message stays one line
def test_set_overrides_raise_only_config_errors(overrides: list[str]) -> None:
    from sadetr.config.compose import compose_config

    _read_ok_or_sadetr(compose_config, "synthetic_tiny", overrides=overrides)


yaml_documents = (
    st.recursive(
        scalars | st.dates().map(str),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(CONFIG_KEYS), inner, max_size=3)
        ),
        max_leaves=10,
    ).map(lambda tree: json.dumps(tree, default=str))  # JSON is YAML
    | st.text(max_size=60)
    | st.sampled_from(
        [
            "_base_: [nope.yaml]",
            "_base_: 3",
            "_base_: [/]",
            "? [a, b]\n: 1",
            "train: {lr: 2020-13-45}",
            "data: [1, 2]",
            "model: {name: 3}",
            "a: &x [*x]",
            "train:\n  epochs: !!python/name:os.system",
            "%YAML 9.9\n---\na: 1",
        ]
    )
)


@SETTINGS
@given(document=yaml_documents | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_yaml_layers_raise_only_config_errors(document: str) -> None:
    from sadetr.config.compose import compose_config

    path = _tmp_file(document.encode("utf-8", "surrogateescape"), suffix=".yaml")
    try:
        _read_ok_or_sadetr(compose_config, ["synthetic_tiny", str(path)])
    finally:
        path.unlink()


@pytest.mark.parametrize("data", [b"\xff\xfe\x00train: 1", b"train:\n  lr: \x80"])
def test_yaml_layer_that_is_not_utf8(data: bytes) -> None:
    from sadetr.config.compose import compose_config
    from sadetr.core.errors import ConfigError

    path = _tmp_file(data, suffix=".yaml")
    try:
        with pytest.raises(ConfigError, match=str(path.name)):
            compose_config(path)
    finally:
        path.unlink()


# ----------------------------------------------------------------------------- corpus index manifest

PIPELINE = {
    "video_sources": ["slowfast_features", "clip_features"],
    "video_dims": [2304, 512],
    "text_source": "clip_text_features",
    "video_dim": 2818,
    "text_dim": 512,
    "clip_len": 2.0,
    "normalize_video": True,
    "normalize_text": True,
    "use_tef": True,
    "max_v_l": 75,
    "max_q_l": 32,
}


@pytest.fixture(scope="module")
def corpus_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A valid index of 6 windows (2 videos, d=8) written by `store.write_state`, and its manifest."""
    import numpy as np

    from sadetr.corpus import store
    from sadetr.corpus.manifest import new_manifest

    table = store.WindowTable()
    for vid in ("a", "b"):
        for start in (0, 4, 6):
            table.append(vid, start, 4, 2.0, 20.0)
    table.videos = {v: {"feat_root": "/feats", "n_clips": 10, "duration": 20.0} for v in ("a", "b")}
    vectors = np.eye(6, 8, dtype=np.float32)
    manifest = new_manifest("/run/best.ckpt", "ab" * 32, dict(PIPELINE), 4, 2, "flat", 8, 5.0)
    root = tmp_path_factory.mktemp("corpus_props") / "idx"
    gen = store.write_state(root, store.IndexState(manifest, vectors, table))
    return root, json.loads((gen / "manifest.json").read_text())


def _read_index_with(root: Path, manifest_text: bytes) -> Any:
    from sadetr.corpus.store import current_generation, read_state

    gen = current_generation(root)
    assert gen is not None
    original = (gen / "manifest.json").read_bytes()
    (gen / "manifest.json").write_bytes(manifest_text)
    try:
        return _read_ok_or_sadetr(read_state, root)
    finally:
        (gen / "manifest.json").write_bytes(original)


def _assert_index_contract(result: Any) -> None:
    """What an accepted index promises the searcher."""
    import math

    import numpy as np

    from sadetr.corpus.manifest import KINDS

    if result is None:
        return
    state, index = result
    m = state.manifest
    assert isinstance(m["window"], int) and 1 <= m["stride"] <= m["window"]
    assert m["kind"] in KINDS and isinstance(m["checkpoint"], str) and m["checkpoint"]
    assert m["alpha"] is None or (
        not isinstance(m["alpha"], bool) and math.isfinite(m["alpha"]) and m["alpha"] >= 0
    )
    assert state.vectors.shape == (m["num_windows"], m["dim"]) == (index.ntotal, index.d)
    assert np.isfinite(state.vectors).all() and len(state.table.videos) == m["num_videos"]
    pipe = m["feature_pipeline"]
    assert math.isfinite(pipe["clip_len"]) and pipe["clip_len"] > 0


@SETTINGS
@given(data=st.data())
@example(data=None)  # the valid manifest itself is accepted
def test_index_manifest_reader_raises_only_sadetr_errors(corpus_index: tuple[Path, dict], data: Any) -> None:
    root, valid = corpus_index
    if data is None:
        manifest = valid
    else:
        manifest = data.draw(mutated_record(valid), label="manifest")
        if data.draw(st.booleans(), label="mutate the pipeline"):
            manifest["feature_pipeline"] = data.draw(mutated_record(PIPELINE), label="pipeline")
    result = _read_index_with(root, json.dumps(manifest).encode())
    _assert_index_contract(result)
    if data is None:
        assert result is not None


@SETTINGS
@given(text=st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
@example(text=b'{"format": "sadetr-corpus-index/1"}')
@example(text=b"NaN")
@example(text=b"[" * 5000)
def test_index_manifest_reader_on_random_bytes(corpus_index: tuple[Path, dict], text: bytes) -> None:
    assert _read_index_with(corpus_index[0], text) is None


@SETTINGS
@given(row=st.tuples(scalars, scalars, scalars, scalars, scalars))
@example(row=("a", 0, 4, 0.0, 8.0))
@example(row=("a", 6, 4, 12.0, 20.0))
@example(row=("a", 7, 4, 14.0, 20.0))
@example(row=("a", 0, 4, float("nan"), 8.0))
def test_index_window_rows_raise_only_sadetr_errors(row: tuple) -> None:
    """A metadata row as SQLite may hold it after a hand edit: any types and values."""
    from sadetr.corpus.manifest import check_window

    videos = {"a": {"feat_root": "/f", "n_clips": 10, "duration": 20.0}}
    window = _read_ok_or_sadetr(check_window, row, 0, videos, Path("meta.sqlite"))
    if window is not None:
        _, start, n, t0, t1 = window
        assert start >= 0 and n >= 1 and start + n <= 10 and 0 <= t0 < t1 <= 20.0


window_values = (
    st.integers(-2, 12) | st.floats(-1, 25) | st.sampled_from([float("nan"), float("inf"), "3", None, 2**70])
)
window_rows = st.lists(
    st.tuples(st.booleans(), st.sampled_from(["a", "b", "x", 3]), *[window_values] * 4), max_size=5
).map(lambda rows: [(i if right_id else i + 7, *rest) for i, (right_id, *rest) in enumerate(rows)])


@SETTINGS
@given(rows=window_rows)
@example(rows=[(0, "a", 0, 4, 0.0, 8.0), (1, "b", 6, 4, 12.0, 20.0)])  # valid, the last at the end
@example(rows=[(0, "a", 0, 4, 0.0, 8.0), (1, "b", 7, 4, 14.0, 20.0)])  # clips 7..11 of 10
@example(rows=[(0, "a", 0, 4, 8.0, 8.0)])  # t0 == t1
@example(rows=[(0, "a", 0, 4, -0.5, 8.0)])
@example(rows=[(0, "a", 0, 0, 0.0, 8.0)])
@example(rows=[(0, "a", 0, 4, 0.0, 20.5)])  # past the duration
@example(rows=[(1, "a", 0, 4, 0.0, 8.0)])
def test_index_window_table_column_check_agrees_with_the_row_check(rows: list[tuple]) -> None:
    """`check_windows` validates the columns with numpy; it accepts exactly the tables whose every row
    `check_window` accepts (ids 0..N-1 in order), and names a bad row otherwise."""
    from sadetr.corpus.manifest import check_window, check_windows

    videos = {v: {"feat_root": "/f", "n_clips": 10, "duration": 20.0} for v in ("a", "b")}
    path = Path("meta.sqlite")
    by_row = all(
        r[0] == i and _read_ok_or_sadetr(check_window, tuple(r[1:]), i, videos, path) is not None
        for i, r in enumerate(rows)
    )
    columns = _read_ok_or_sadetr(check_windows, rows, videos, path)
    assert (columns is not None) == by_row
    if columns is not None:
        assert columns[0] == [r[1] for r in rows] and columns[3] == [float(r[4]) for r in rows]
