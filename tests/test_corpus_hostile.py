"""Hostile and broken input to the corpus commands: names from files never lead out of their folder, an
index is validated when opened, and every refusal is one stderr line with exit code 2.

Each index case starts from a copy of one valid index and breaks one thing (a manifest field, a vector,
a metadata row, the CURRENT pointer, a symlink); the refusal must name the file and the field.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sadetr.cli.main import main
from sadetr.core.errors import DataError, SadetrError
from sadetr.corpus import CorpusSearcher, build_index
from sadetr.corpus.store import current_generation, read_state
from sadetr.video.tiny import write_test_video

W, S = 20, 10


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def val_queries(data: dict) -> list[dict]:
    return [json.loads(x) for x in data["val"].read_text().splitlines()]


@pytest.fixture(scope="module")
def videos(synthetic_qvh: dict) -> list[str]:
    return sorted({q["vid"] for q in val_queries(synthetic_qvh)})


@pytest.fixture(scope="module")
def built(tiny_checkpoint: Path, synthetic_qvh: dict, videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "idx"
    return build_index(tiny_checkpoint, synthetic_qvh["feat_root"], out, videos=videos, window=W, stride=S)


@pytest.fixture
def idx(built: Path, tmp_path: Path) -> Path:
    """A private copy of the valid index."""
    return Path(shutil.copytree(built, tmp_path / "idx"))


def query_file(synthetic_qvh: dict) -> str:
    qid = val_queries(synthetic_qvh)[0]["qid"]
    return str(synthetic_qvh["feat_root"] / "clip_text_features" / f"qid{qid}.npz")


def gen_of(index_dir: Path) -> Path:
    gen = current_generation(index_dir)
    assert gen is not None
    return gen


# ------------------------------------------------------------------ names that become paths


@pytest.mark.parametrize("qid", ["/../../x", "../../../x", "a/../../../x", "symlink"])
def test_evaluate_corpus_reads_query_features_only_inside_text_features(
    qid: str, built: Path, synthetic_qvh: dict, tmp_path: Path, capsys
) -> None:
    text_root = tmp_path / "text"
    (text_root / "clip_text_features").mkdir(parents=True)
    records = val_queries(synthetic_qvh)[:3]
    for r in records:
        name = f"qid{r['qid']}.npz"
        shutil.copy(
            synthetic_qvh["feat_root"] / "clip_text_features" / name, text_root / "clip_text_features"
        )
    secret = tmp_path / "secret.npz"
    np.savez(secret, last_hidden_state=np.ones((4, 512), np.float32))
    if qid == "symlink":  # a file inside the folder that is a symlink to a file outside it
        qid = "evil"
        (text_root / "clip_text_features" / "qidevil.npz").symlink_to(secret)
    records[1] = {**records[1], "qid": qid}
    ann = tmp_path / "val.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["evaluate-corpus", "--index", str(built), "--annotations", str(ann)]
    argv += ["--text-features", str(text_root), "--k-windows", "5"]
    one_line_error(capsys, argv, f"{ann}:2: qid:", "leads outside")
    # bench-corpus runs the same queries
    argv = ["bench-corpus", "--sizes", "200", "--k", "5", "--index", str(built), "--annotations", str(ann)]
    one_line_error(capsys, [*argv, "--text-features", str(text_root)], f"{ann}:2: qid:", "leads outside")


@pytest.mark.parametrize("pointer", ["relative", "absolute", "symlinked_generation", "symlinked_current"])
def test_current_never_names_a_generation_outside_the_index(
    pointer: str, built: Path, idx: Path, tmp_path: Path, synthetic_qvh: dict, capsys
) -> None:
    """Another valid index beside this one: CURRENT (or a generation folder, or CURRENT itself) pointing
    into it is refused, not searched."""
    other = gen_of(built)
    current = idx / "CURRENT"
    if pointer == "relative":
        current.write_text(os.path.relpath(other, idx) + "\n")
    elif pointer == "absolute":
        current.write_text(f"{other}\n")
    elif pointer == "symlinked_generation":
        (idx / "gen-000099").symlink_to(other, target_is_directory=True)
        current.write_text("gen-000099\n")
    else:
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "CURRENT").write_text(gen_of(idx).name)
        current.unlink()
        current.symlink_to(tmp_path / "elsewhere" / "CURRENT")
    line = one_line_error(
        capsys, ["search", "--index", str(idx), "--query-features", query_file(synthetic_qvh)], "CURRENT"
    )
    assert "gen-NNNNNN" in line or "leads outside" in line


@pytest.mark.parametrize("name", ["manifest.json", "vectors.npy", "meta.sqlite", "index.faiss"])
def test_a_generation_file_symlinked_out_of_the_index_is_refused(
    name: str, idx: Path, tmp_path: Path
) -> None:
    gen = gen_of(idx)
    outside = tmp_path / name
    shutil.move(gen / name, outside)
    (gen / name).symlink_to(outside)
    with pytest.raises(DataError, match=f"{name}.*leads outside"):
        read_state(idx)


def test_index_names_stay_inside_the_feature_root(
    tiny_checkpoint: Path, synthetic_qvh: dict, videos, tmp_path: Path, capsys
) -> None:
    feat = tmp_path / "feat"
    shutil.copytree(synthetic_qvh["feat_root"], feat)
    out = tmp_path / "idx"
    names = tmp_path / "videos.txt"
    names.write_text(f"{videos[0]}\n../../x\n")
    argv = ["index", "--checkpoint", str(tiny_checkpoint), "--features", str(feat), "--out", str(out)]
    one_line_error(capsys, [*argv, "--videos", str(names)], f"{names}:2: vid:", "'../../x' must stay inside")
    # a library whose feature file is a symlink to a file outside the feature root
    secret = tmp_path / "secret.npz"
    np.savez(secret, features=np.ones((75, 512), np.float32))
    (feat / "clip_features" / "zz_link.npz").symlink_to(secret)
    (feat / "slowfast_features" / "zz_link.npz").symlink_to(feat / "slowfast_features" / f"{videos[0]}.npz")
    one_line_error(capsys, argv, "zz_link.npz", "leads outside")
    assert current_generation(out) is None  # nothing committed


@pytest.mark.parametrize(("key", "value"), [("text_source", "../../text"), ("video_sources", ["/x", "clip"])])
def test_feature_source_names_from_a_checkpoint_stay_inside_the_feature_root(
    key: str, value: object, tiny_checkpoint: Path, synthetic_qvh: dict, tmp_path: Path, capsys
) -> None:
    import torch

    from sadetr.core.safe_load import load_weights

    state = load_weights(tiny_checkpoint, "checkpoint")
    state["features"] = {**state["features"], key: value}
    hostile = tmp_path / "hostile.ckpt"
    torch.save(state, hostile)
    argv = ["index", "--checkpoint", str(hostile), "--features", str(synthetic_qvh["feat_root"])]
    one_line_error(capsys, [*argv, "--out", str(tmp_path / "idx")], f"{key}:", "leads outside")
    assert not (tmp_path / "idx" / "CURRENT").exists()


def test_clip_names_from_the_index_stay_inside_their_folders(tmp_path: Path) -> None:
    from sadetr.corpus.clips import find_video

    root = tmp_path / "videos"
    root.mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    (root / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    for vid in ("../secret", "/etc/passwd", "link"):
        with pytest.raises(DataError, match="leads outside"):
            find_video(root, vid)


def test_search_clips_are_written_and_read_only_inside_their_folders(
    built: Path, synthetic_qvh: dict, tmp_path: Path, capsys
) -> None:
    """`search --clips-out`: a source video symlinked out of --video-root is refused, nothing is cut."""
    hits = tmp_path / "hits.jsonl"
    argv = ["search", "--index", str(built), "--query-features", query_file(synthetic_qvh), "--top", "1"]
    assert main([*argv, "--format", "jsonl", "-o", str(hits)]) == 0
    top = json.loads(hits.read_text().splitlines()[0])["video"]
    root = tmp_path / "videos"
    root.mkdir()
    write_test_video(tmp_path / "secret.mp4", n_frames=20, fps=10)
    (root / f"{top}.mp4").symlink_to(tmp_path / "secret.mp4")
    clips = tmp_path / "clips"
    argv += ["--clips-out", str(clips), "--video-root", str(root)]
    one_line_error(capsys, argv, "video:", "leads outside")
    assert not list(clips.glob("*"))


def test_save_alpha_without_tune_alpha_is_refused(built: Path, synthetic_qvh: dict, capsys) -> None:
    before = snapshot(built)
    argv = ["evaluate-corpus", "--index", str(built), "--annotations", str(synthetic_qvh["val"])]
    argv += ["--text-features", str(synthetic_qvh["feat_root"]), "--save-alpha"]
    one_line_error(capsys, argv, "--save-alpha:", "--tune-alpha")
    assert snapshot(built) == before


def test_shards_are_read_by_the_names_their_manifest_lists(built: Path, tmp_path: Path) -> None:
    from sadetr.corpus.shards import export_shards, read_shards

    out = tmp_path / "shards"
    export_shards(built, out, rows_per_shard=10)
    n = read_state(built)[0].vectors.shape[0]
    export_shards(built, out, rows_per_shard=n)  # a smaller export removes the earlier extra shards
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet"]
    assert len(read_shards(out)[0]) == n
    manifest = json.loads((out / "_manifest.json").read_text())
    for bad in (["../../part-00000.parquet"], ["/etc/part-00000.parquet"], [3], []):
        (out / "_manifest.json").write_text(json.dumps({**manifest, "shards": bad}))
        with pytest.raises(DataError, match="shards"):
            read_shards(out)
    (tmp_path / "part-00001.parquet").write_bytes(b"outside")
    (out / "part-00001.parquet").symlink_to(tmp_path / "part-00001.parquet")
    (out / "_manifest.json").write_text(json.dumps({**manifest, "shards": ["part-00001.parquet"]}))
    with pytest.raises(DataError, match="leads outside"):
        read_shards(out)


# ------------------------------------------------------------------ an index is validated when opened


def _edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(gen: Path) -> None:
        manifest = json.loads((gen / "manifest.json").read_text())
        change(manifest)
        (gen / "manifest.json").write_text(json.dumps(manifest))

    return apply


def _set(key: str, value: object) -> Callable[[Path], None]:
    def change(m: dict) -> None:
        m[key] = value

    return _edit_manifest(change)


def _drop(key: str) -> Callable[[Path], None]:
    return _edit_manifest(lambda m: m.pop(key))


def _vectors(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def apply(gen: Path) -> None:
        np.save(gen / "vectors.npy", change(np.load(gen / "vectors.npy")))

    return apply


def _nan_row(v: np.ndarray) -> np.ndarray:
    v[3] = np.nan
    return v


def _sql(statement: str) -> Callable[[Path], None]:
    def apply(gen: Path) -> None:
        con = sqlite3.connect(gen / "meta.sqlite")
        con.execute(statement)
        con.commit()
        con.close()

    return apply


def _other_faiss_kind(gen: Path) -> None:
    from sadetr.corpus.store import _faiss, build_faiss

    _faiss().write_index(build_faiss(np.load(gen / "vectors.npy"), "hnsw"), str(gen / "index.faiss"))


def _pipeline(key: str, value: object) -> Callable[[Path], None]:
    def change(m: dict) -> None:
        m["feature_pipeline"][key] = value

    return _edit_manifest(change)


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (corruption, file, field)
    "window_missing": (_drop("window"), "manifest.json", "window"),
    "alpha_missing": (_drop("alpha"), "manifest.json", "alpha"),
    "window_str": (_set("window", "20"), "manifest.json", "window"),
    "window_negative": (_set("window", -2), "manifest.json", "window"),
    "stride_above_window": (_set("stride", 50), "manifest.json", "stride"),
    "kind_unknown": (_set("kind", "lsh"), "manifest.json", "kind"),
    "alpha_nan": (_set("alpha", float("nan")), "manifest.json", "alpha"),
    "alpha_negative": (_set("alpha", -5), "manifest.json", "alpha"),
    "alpha_bool": (_set("alpha", True), "manifest.json", "alpha"),
    "dim_zero": (_set("dim", 0), "manifest.json", "dim"),
    "num_windows_negative": (_set("num_windows", -1), "manifest.json", "num_windows"),
    "num_windows_wrong": (
        _edit_manifest(lambda m: m.update(num_windows=m["num_windows"] + 1)),
        "vectors.npy",
        "vectors",
    ),
    "num_videos_wrong": (
        _edit_manifest(lambda m: m.update(num_videos=m["num_videos"] - 1)),
        "meta.sqlite",
        "windows",
    ),
    "sha_not_hex": (_set("checkpoint_sha256", "xyz"), "manifest.json", "checkpoint_sha256"),
    "checkpoint_int": (_set("checkpoint", 7), "manifest.json", "checkpoint"),
    "format": (_set("format", "other/1"), "manifest.json", "format"),
    "not_an_object": (lambda g: (g / "manifest.json").write_text("[1, 2]"), "manifest.json", "manifest"),
    "not_json": (lambda g: (g / "manifest.json").write_text("{"), "manifest.json", "manifest.json"),
    "pipeline_clip_len_zero": (_pipeline("clip_len", 0), "manifest.json", "feature_pipeline.clip_len"),
    "pipeline_key_missing": (
        _edit_manifest(lambda m: m["feature_pipeline"].pop("use_tef")),
        "manifest.json",
        "feature_pipeline",
    ),
    "vector_nan": (_vectors(_nan_row), "vectors.npy", "vectors[3]"),
    "vectors_not_normalised": (_vectors(lambda v: v * 2), "vectors.npy", "vectors[0]"),
    "vectors_wrong_width": (_vectors(lambda v: v[:, :-1]), "vectors.npy", "vectors"),
    "vectors_int": (_vectors(lambda v: v.astype(np.int64)), "vectors.npy", "vectors"),
    "video_clips_negative": (_sql("UPDATE videos SET n_clips = -3"), "meta.sqlite", "videos[0].n_clips"),
    "video_duration_text": (_sql("UPDATE videos SET duration = 'long'"), "meta.sqlite", "videos[0].duration"),
    "window_clips_zero": (
        _sql("UPDATE windows SET n_clips = 0 WHERE id = 2"),
        "meta.sqlite",
        "windows[2].n_clips",
    ),
    "window_past_video": (
        _sql("UPDATE windows SET start_clip = 70 WHERE id = 1"),
        "meta.sqlite",
        "windows[1].n_clips",
    ),
    "window_t0_text": (_sql("UPDATE windows SET t0 = 'x' WHERE id = 4"), "meta.sqlite", "windows[4].t0"),
    "window_unknown_video": (
        _sql("UPDATE windows SET video = 'nope' WHERE id = 0"),
        "meta.sqlite",
        "windows[0].video",
    ),
    "window_ids_gap": (_sql("UPDATE windows SET id = 1000 WHERE id = 5"), "meta.sqlite", "windows[5].id"),
    "feat_root_relative": (
        _sql("UPDATE videos SET feat_root = 'feats'"),
        "meta.sqlite",
        "videos[0].feat_root",
    ),
    "sqlite_garbage": (
        lambda g: (g / "meta.sqlite").write_bytes(b"junk" * 100),
        "meta.sqlite",
        "meta.sqlite",
    ),
    "faiss_kind": (_other_faiss_kind, "index.faiss", "index.faiss"),
    "faiss_garbage": (lambda g: (g / "index.faiss").write_bytes(b"\0" * 64), "index.faiss", "corrupt"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_corrupt_or_hand_edited_index_is_refused_naming_file_and_field(case: str, idx: Path) -> None:
    corrupt, name, field = CORRUPTIONS[case]
    gen = gen_of(idx)
    corrupt(gen)
    with pytest.raises(SadetrError) as err:
        read_state(idx)
    message = str(err.value)
    assert "\n" not in message and f"{gen / name}: " in message and field in message, message


@pytest.mark.parametrize("case", ["alpha_nan", "vector_nan", "window_missing", "video_clips_negative"])
def test_corrupt_index_cases_through_the_cli(case: str, idx: Path, synthetic_qvh: dict, capsys) -> None:
    corrupt, name, field = CORRUPTIONS[case]
    corrupt(gen_of(idx))
    argv = ["search", "--index", str(idx), "--query-features", query_file(synthetic_qvh)]
    one_line_error(capsys, argv, name, field)


def test_nan_or_negative_alpha_is_refused_by_the_api(built: Path, synthetic_qvh: dict) -> None:
    from sadetr.corpus.evaluate import query_features
    from sadetr.corpus.index import set_alpha

    searcher = CorpusSearcher.open(built)
    feats = query_features(searcher, synthetic_qvh["feat_root"], val_queries(synthetic_qvh)[0]["qid"])
    for alpha in (float("nan"), float("inf"), -5.0):
        with pytest.raises(DataError, match="alpha"):
            searcher.search(query_feats=feats, top=3, k_windows=5, alpha=alpha)
        with pytest.raises(DataError, match="alpha"):
            set_alpha(built, alpha)


def test_a_changed_index_kind_is_an_error_not_a_conversion(
    tiny_checkpoint: Path, synthetic_qvh: dict, videos, tmp_path: Path, capsys
) -> None:
    feat = synthetic_qvh["feat_root"]
    out = build_index(
        tiny_checkpoint, feat, tmp_path / "idx", videos=videos[:2], window=W, stride=S, kind="hnsw"
    )
    build_index(tiny_checkpoint, feat, out, videos=videos[:3])  # no kind: the index keeps its own
    assert read_state(out)[0].manifest["kind"] == "hnsw"
    assert type(read_state(out)[1]).__name__ == "IndexHNSWFlat"
    before = snapshot(out)
    argv = ["index", "--checkpoint", str(tiny_checkpoint), "--features", str(feat), "--out", str(out)]
    one_line_error(capsys, [*argv, "--kind", "flat"], "index kind is hnsw", "--kind flat")
    assert snapshot(out) == before


def test_an_index_folder_name_with_uri_characters_works_and_writes_nothing_outside(
    tiny_checkpoint: Path, synthetic_qvh: dict, videos, tmp_path: Path
) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    out = parent / "lib#1?mode=rwc%20x"
    build_index(tiny_checkpoint, synthetic_qvh["feat_root"], out, videos=videos[:2], window=W, stride=S)
    searcher = CorpusSearcher.open(out)
    assert sorted(searcher.videos) == videos[:2]
    assert [p.name for p in parent.iterdir()] == [out.name]  # no stray file beside --out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parent"]
