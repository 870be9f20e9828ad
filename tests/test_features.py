"""Feature store: normalisation, concatenation, TEF, length fitting, and every bad-file error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sadetr.core.errors import FeatureError
from sadetr.data.features import FeatureStore, add_tef, load_feature_file, mean_pool, resample_bins


def make_store(root: Path, cache: bool = False, normalize: bool = True) -> FeatureStore:
    return FeatureStore(root, ["sf", "clip"], [2, 3], "txt", 2, normalize, normalize, cache=cache)


def write(root: Path, source: str, name: str, key: str, arr: np.ndarray) -> Path:
    (root / source).mkdir(parents=True, exist_ok=True)
    path = root / source / f"{name}.npz"
    np.savez(path, **{key: arr})
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write(tmp_path, "sf", "v1", "features", np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]))
    write(tmp_path, "clip", "v1", "features", np.array([[0.0, 0.0, 5.0], [2.0, 0.0, 0.0]]))  # 1 clip shorter
    write(tmp_path, "txt", "qid7", "last_hidden_state", np.array([[6.0, 8.0], [0.0, -1.0], [1.0, 1.0]]))
    return tmp_path


def test_video_sources_normalised_truncated_concatenated(root: Path) -> None:
    feat = make_store(root).video("v1")
    expected = np.array([[0.6, 0.8, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0, 0.0]])  # [2 (shortest), 2 + 3]
    np.testing.assert_allclose(feat, expected, atol=1e-6)
    assert feat.dtype == np.float32
    raw = make_store(root, normalize=False).video("v1")
    np.testing.assert_allclose(raw, [[3, 4, 0, 0, 5], [0, 2, 2, 0, 0]])


def test_text_tokens_normalised(root: Path) -> None:
    store = make_store(root)
    assert store.text_path(7) == root / "txt" / "qid7.npz"
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(store.text(7), [[0.6, 0.8], [0.0, -1.0], [s, s]], atol=1e-6)


def test_tef() -> None:
    out = add_tef(np.zeros((4, 1), dtype=np.float32))
    np.testing.assert_allclose(out[:, 1:], [[0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]])


def test_resample_bins_and_mean_pool() -> None:
    assert resample_bins(5, 2).tolist() == [0, 2, 5]
    assert resample_bins(10, 4).tolist() == [0, 2, 5, 7, 10]
    x = np.arange(10, dtype=np.float32)[:, None]  # clip i has value i
    np.testing.assert_allclose(mean_pool(x, 4)[:, 0], [0.5, 3.0, 5.5, 8.0])


def test_fit_length_truncate_and_resample(root: Path) -> None:
    store = make_store(root)
    feat = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1]], dtype=np.float32)
    np.testing.assert_array_equal(store.fit_length(feat, 3, "truncate"), feat[:3])
    assert store.fit_length(feat, 4, "resample") is feat
    assert store.fit_length(feat, 0, "truncate") is feat  # no limit
    pooled = store.fit_length(feat, 2, "resample")  # bins [0, 2), [2, 4)
    s = 1 / np.sqrt(2)
    # bin 0: sf mean [.5, .5] -> [s, s]; clip mean [.5, .5, 0] -> [s, s, 0]; bin 1 unchanged
    np.testing.assert_allclose(pooled, [[s, s, s, s, 0], [1, 0, 0, 0, 1]], atol=1e-6)
    with pytest.raises(FeatureError, match="unknown mode"):
        store.fit_length(feat, 2, "crop")


def test_cache_serves_loaded_features(root: Path) -> None:
    cached, plain = make_store(root, cache=True), make_store(root)
    first = cached.video("v1")
    cached.text(7)
    (root / "sf" / "v1.npz").unlink()
    (root / "txt" / "qid7.npz").unlink()
    assert cached.video("v1") is first
    cached.text(7)
    with pytest.raises(FeatureError, match="not found"):
        plain.video("v1")


BAD_FILES = {
    "missing": (None, "feature file not found"),
    "truncated": ("truncate", "unreadable feature file"),
    "garbage": (b"this is not a zip file", "unreadable feature file"),
    "wrong key": ({"feats": np.ones((3, 2))}, "missing array 'features'"),
    "wrong dim": ({"features": np.ones((3, 4))}, "expected 2 dims, got 4"),
    "1-d": ({"features": np.ones(3)}, "expected shape [L>0, 2], got [3]"),
    "empty": ({"features": np.ones((0, 2))}, "expected shape [L>0, 2]"),
    "nan": ({"features": np.array([[1.0, np.nan], [1.0, 1.0]])}, "NaN/Inf values in 1 row(s)"),
    "inf": ({"features": np.array([[1.0, 1.0], [np.inf, 1.0]])}, "NaN/Inf values in 1 row(s)"),
    "strings": ({"features": np.array([["a", "b"]])}, "non-numeric dtype"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_feature_error_naming_file(tmp_path: Path, case: str) -> None:
    content, message = BAD_FILES[case]
    path = tmp_path / "sf" / "v1.npz"
    path.parent.mkdir()
    if isinstance(content, dict):
        np.savez(path, **content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncate":
        np.savez(path, features=np.ones((50, 2)))
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(FeatureError) as info:
        load_feature_file(path, "features", 2)
    assert info.value.path == str(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_store_checks_dims_per_source(root: Path) -> None:
    store = FeatureStore(root, ["sf", "clip"], [2, 4], "txt", 2)
    with pytest.raises(FeatureError, match="expected 4 dims, got 3") as info:
        store.video("v1")
    assert info.value.path == str(root / "clip" / "v1.npz")
    with pytest.raises(FeatureError, match="one expected dim per video source"):
        FeatureStore(root, ["sf", "clip"], [2], "txt", 2)
