"""A corpus index under concurrent use, interruption and a full disk: one writer at a time (the second is
refused in one line), readers that never see a half-committed or deleted generation, a resume cache
that is recomputed when anything that decides an embedding changed, and failed writes that leave the
live generation intact."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sadetr.cli.main import main
from sadetr.corpus import build_index, store
from sadetr.corpus.manifest import new_manifest
from sadetr.corpus.store import read_state, writer_lock

W, S = 20, 10
SRC = str(Path(__file__).resolve().parents[1] / "src")


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def by_video(index_dir: Path) -> dict[tuple[str, int], np.ndarray]:
    state, _ = read_state(index_dir)
    t = state.table
    return {(v, s): state.vectors[i] for i, (v, s) in enumerate(zip(t.video, t.start_clip))}


def assert_same_index(a: Path, b: Path) -> None:
    va, vb = by_video(a), by_video(b)
    assert sorted(va) == sorted(vb)
    for key in va:
        np.testing.assert_allclose(va[key], vb[key], atol=1e-6, err_msg=str(key))


@pytest.fixture(scope="module")
def videos(synthetic_qvh: dict) -> list[str]:
    return sorted({json.loads(x)["vid"] for x in synthetic_qvh["val"].read_text().splitlines()})


@pytest.fixture(scope="module")
def built(tiny_checkpoint: Path, synthetic_qvh: dict, videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("conc") / "idx"
    return build_index(tiny_checkpoint, synthetic_qvh["feat_root"], out, videos=videos, window=W, stride=S)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ------------------------------------------------------------------ one writer at a time


def test_a_second_writer_is_refused_in_one_line(
    built: Path, tiny_checkpoint: Path, synthetic_qvh: dict, videos, tmp_path: Path, capsys
) -> None:
    idx = Path(shutil.copytree(built, tmp_path / "idx"))
    before = snapshot(idx)
    feat = str(synthetic_qvh["feat_root"])
    with writer_lock(idx).acquire():
        argv = ["index", "--checkpoint", str(tiny_checkpoint), "--features", feat, "--out", str(idx)]
        one_line_error(capsys, argv, "--out:", "in use by another writer")
        one_line_error(
            capsys, ["index", "--out", str(idx), "--remove", videos[0]], "in use by another writer"
        )
        argv = ["evaluate-corpus", "--index", str(idx), "--annotations", str(synthetic_qvh["val"])]
        argv += ["--text-features", feat, "--k-windows", "5", "--no-svmr", "--tune-alpha", "--save-alpha"]
        one_line_error(capsys, argv, "--index:", "in use by another writer")
    assert snapshot(idx) == before
    assert main(["index", "--out", str(idx), "--remove", videos[0]]) == 0  # released: the next one works


READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from sadetr.corpus.store import read_state
    from sadetr.core.errors import SadetrError

    idx, allowed, stop = Path(sys.argv[1]), set(json.loads(sys.argv[2])), Path(sys.argv[3])
    reads, errors, sizes = 0, [], set()
    end = time.monotonic() + 300
    while not stop.exists() and time.monotonic() < end:
        time.sleep(0.005)
        if not (idx / "CURRENT").exists():
            continue  # nothing committed yet
        try:
            state, index = read_state(idx)
        except SadetrError as err:
            errors.append(str(err))
            continue
        reads += 1
        table = state.table
        ok = len(state.vectors) == len(table) == index.ntotal == state.manifest["num_windows"]
        ok &= set(table.videos) <= allowed and set(table.video) == set(table.videos)
        if not ok:
            errors.append(f"inconsistent state of {len(table.videos)} videos")
        sizes.add(len(table.videos))
    print(json.dumps({"reads": reads, "errors": errors, "sizes": sorted(sizes)}))
    """
)


def test_two_writers_and_readers_lose_nothing(
    tiny_checkpoint: Path, synthetic_qvh: dict, videos, tmp_path: Path
) -> None:
    """Two `sadetr index` runs with different videos on one folder at once, and a reader polling it:
    each writer commits or is refused in one line; the index holds exactly the videos of the runs that
    succeeded; the reader never fails and never sees a mixed state."""
    idx = tmp_path / "idx"
    sets = [videos[: len(videos) // 2 + 1], videos[len(videos) // 2 :]]
    lists = []
    for i, chosen in enumerate(sets):
        lists.append(tmp_path / f"list{i}.txt")
        lists[-1].write_text("\n".join(chosen) + "\n")
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(idx), json.dumps(videos), str(tmp_path / "stop")],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    index_argv = [sys.executable, "-m", "sadetr", "index", "--checkpoint", str(tiny_checkpoint)]
    index_argv += ["--features", str(synthetic_qvh["feat_root"]), "--out", str(idx)]
    index_argv += ["--window", str(W), "--stride", str(S)]
    writers = [
        subprocess.Popen(
            [*index_argv, "--videos", str(lst)],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lst in lists
    ]
    results = [w.communicate(timeout=300) for w in writers]
    codes = [w.returncode for w in writers]
    done = set()
    for (_, err), code, chosen in zip(results, codes, sets):
        assert "Traceback" not in err, err
        if code == 0:
            done |= set(chosen)
        else:
            assert code == 2, err
            lines = [x for x in err.splitlines() if not x.startswith("INFO")]
            assert len(lines) == 1 and "in use by another writer" in lines[0], err
    assert done, f"no writer succeeded: {results}"
    state, _ = read_state(idx)
    assert set(state.table.videos) == done  # nothing lost, nothing from a refused run
    (tmp_path / "stop").touch()
    reader_out, reader_err = reader.communicate(timeout=120)
    report = json.loads(reader_out.strip().splitlines()[-1])
    assert report["errors"] == [] and report["reads"] > 0, (report, reader_err)


WRITER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from sadetr.corpus import store
    from sadetr.corpus.manifest import new_manifest

    idx, pipeline, commits = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
    for k in range(1, commits + 1):
        n = 5 + k % 7  # generations of different sizes
        table = store.WindowTable()
        for i in range(n):
            table.append(f"v{i}", 0, 1, 2.0, 2.0)
        table.videos = {f"v{i}": {"feat_root": "/f", "n_clips": 1, "duration": 2.0} for i in range(n)}
        vectors = np.zeros((n, 8), np.float32)
        vectors[np.arange(n), k % 8] = 1.0  # each generation's vectors say which one it is
        manifest = new_manifest("/c.ckpt", "0" * 64, pipeline, 8, 4, "flat", 8, float(k))
        with store.writer_lock(idx):
            store.write_state(idx, store.IndexState(manifest, vectors, table))
    """
)

PIPELINE = {
    "video_sources": ["clip_features"],
    "video_dims": [512],
    "text_source": "clip_text_features",
    "video_dim": 514,
    "text_dim": 512,
    "clip_len": 2.0,
    "normalize_video": True,
    "normalize_text": True,
    "use_tef": True,
    "max_v_l": 75,
    "max_q_l": 32,
}


def _toy_state(k: int) -> store.IndexState:
    table = store.WindowTable()
    n = 5 + k % 7
    for i in range(n):
        table.append(f"v{i}", 0, 1, 2.0, 2.0)
    table.videos = {f"v{i}": {"feat_root": "/f", "n_clips": 1, "duration": 2.0} for i in range(n)}
    vectors = np.zeros((n, 8), np.float32)
    vectors[np.arange(n), k % 8] = 1.0
    return store.IndexState(
        new_manifest("/c.ckpt", "0" * 64, PIPELINE, 8, 4, "flat", 8, float(k)), vectors, table
    )


def _consistent(state: store.IndexState) -> bool:
    k = int(state.manifest["alpha"])
    n = 5 + k % 7
    return len(state.table) == n and bool((state.vectors.argmax(axis=1) == k % 8).all())


def test_readers_never_see_a_half_committed_generation(tmp_path: Path) -> None:
    """A writer process commits 60 generations as fast as it can while this process reads: every read
    succeeds and returns one whole generation (its vectors, metadata and manifest agree)."""
    idx = tmp_path / "idx"
    with writer_lock(idx):
        store.write_state(idx, _toy_state(0))
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(idx), json.dumps(PIPELINE), "60"],
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    seen, reads = set(), 0
    while writer.poll() is None:
        state, _ = read_state(idx)  # raises on a false "corrupt" or "does not exist"
        assert _consistent(state), state.manifest
        seen.add(state.manifest["alpha"])
        reads += 1
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    assert read_state(idx)[0].manifest["alpha"] == 60.0
    assert len(seen) > 1 and reads > 10, (seen, reads)  # the reads did overlap the commits


def test_a_reader_whose_generation_is_deleted_mid_read_reads_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race made deterministic: a commit lands between reading CURRENT and reading the generation."""
    idx = tmp_path / "idx"
    with writer_lock(idx):
        store.write_state(idx, _toy_state(1))
    real = store._read_generation
    calls = []

    def commit_first(gen: Path):
        calls.append(gen.name)
        if len(calls) == 1:
            store.write_state(idx, _toy_state(2))  # deletes `gen`
            assert not gen.exists()
        return real(gen)

    monkeypatch.setattr(store, "_read_generation", commit_first)
    state, _ = read_state(idx)
    assert state.manifest["alpha"] == 2.0 and _consistent(state)
    assert calls == ["gen-000001", "gen-000002"]


# ------------------------------------------------------------------ the resume cache


def _interrupted(tiny_checkpoint: Path, feat: Path, out: Path, videos: list[str], after: int) -> None:
    class Interrupt(Exception):
        pass

    seen: list[str] = []

    def stop(vid: str) -> None:
        seen.append(vid)
        if len(seen) == after:
            raise Interrupt

    with pytest.raises(Interrupt):
        build_index(tiny_checkpoint, feat, out, videos=videos, window=W, stride=S, on_video=stop)
    assert len(list((out / "partial").glob("*/*.npz"))) == after


def test_resume_after_the_features_changed_recomputes_the_embeddings(
    tiny_checkpoint: Path, synthetic_qvh: dict, videos, tmp_path: Path
) -> None:
    feat_a, feat_b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(synthetic_qvh["feat_root"], feat_a)
    shutil.copytree(synthetic_qvh["feat_root"], feat_b)
    rng = np.random.default_rng(0)
    for vid in videos[:3]:  # other features for the first three videos (same length)
        path = feat_b / "clip_features" / f"{vid}.npz"
        x = np.load(path)["features"]
        np.savez(path, features=(x + rng.normal(size=x.shape)).astype(np.float32))
    out = tmp_path / "idx"
    _interrupted(tiny_checkpoint, feat_a, out, videos, after=3)
    build_index(tiny_checkpoint, feat_b, out, videos=videos, window=W, stride=S)
    fresh = build_index(tiny_checkpoint, feat_b, tmp_path / "fresh", videos=videos, window=W, stride=S)
    assert_same_index(out, fresh)


def test_a_resume_cache_with_a_nan_vector_is_recomputed_not_committed(
    tiny_checkpoint: Path, synthetic_qvh: dict, videos, tmp_path: Path, built: Path
) -> None:
    out = tmp_path / "idx"
    feat = synthetic_qvh["feat_root"]
    _interrupted(tiny_checkpoint, feat, out, videos, after=2)
    entry = sorted((out / "partial").glob("*/*.npz"))[0]
    with np.load(entry) as npz:
        vectors, key = npz["vectors"].copy(), npz["key"]
    vectors[1] = np.nan
    np.savez(entry, vectors=vectors, key=key)
    build_index(tiny_checkpoint, feat, out, videos=videos, window=W, stride=S)
    assert np.isfinite(read_state(out)[0].vectors).all()
    assert_same_index(out, built)


def test_nan_embeddings_are_never_committed(tmp_path: Path) -> None:
    state = _toy_state(3)
    state.vectors[2] = np.nan
    with pytest.raises(store.CorpusIndexError, match=r"vectors\[2\]: NaN"):
        store.write_state(tmp_path / "idx", state)
    assert not (tmp_path / "idx" / "CURRENT").exists()


# ------------------------------------------------------------------ a full disk


@pytest.mark.parametrize("where", ["faiss", "current"])
def test_a_full_disk_during_save_alpha_is_one_line_and_keeps_the_index(
    where: str, built: Path, synthetic_qvh: dict, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faiss' own message for a full disk (measured on a full tmpfs), and a full disk when CURRENT is
    switched (fsync)."""
    idx = Path(shutil.copytree(built, tmp_path / "idx"))
    before = snapshot(idx)

    def fail(*args: object, **kwargs: object) -> None:
        if where == "faiss":
            raise RuntimeError(
                "Error in void faiss::write_index(const Index*, IOWriter*, int) at index_write.cpp:499: "
                "Error: 'ret == (size * 4)' failed: write error in x.faiss: 65491 != 512000 "
                "(No space left on device)"
            )
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "faiss":
        monkeypatch.setattr(store._faiss(), "write_index", fail)
    else:
        monkeypatch.setattr(os, "fsync", fail)
    argv = ["evaluate-corpus", "--index", str(idx), "--annotations", str(synthetic_qvh["val"])]
    argv += ["--text-features", str(synthetic_qvh["feat_root"]), "--k-windows", "5", "--no-svmr"]
    code = main([*argv, "--tune-alpha", "--save-alpha"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err) and len(err) == 1, err
    assert "no space left on device" in err[0] and str(idx) in err[0], err[0]
    monkeypatch.undo()
    assert snapshot(idx) == before  # no staging folder, no new generation, CURRENT unchanged
    assert read_state(idx)[0].manifest["alpha"] is None
    with writer_lock(idx).acquire():  # the failed writer released its lock
        pass


def test_a_failed_write_during_save_alpha_keeps_the_index(
    built: Path, synthetic_qvh: dict, tmp_path: Path
) -> None:
    """A real failed write: `evaluate-corpus --save-alpha` in a process whose file size limit
    (RLIMIT_FSIZE, 4 kB) is below the size of the generation's vectors.npy."""
    import resource
    import signal

    idx = Path(shutil.copytree(built, tmp_path / "idx"))
    before = snapshot(idx)
    assert (gen_size := (store.current_generation(idx) / "vectors.npy").stat().st_size) > 4096, gen_size

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    argv = [sys.executable, "-m", "sadetr", "evaluate-corpus", "--index", str(idx)]
    argv += ["--annotations", str(synthetic_qvh["val"]), "--text-features", str(synthetic_qvh["feat_root"])]
    argv += ["--k-windows", "5", "--no-svmr", "--tune-alpha", "--save-alpha"]
    run = subprocess.run(argv, preexec_fn=limit, env=env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    lines = [x for x in run.stderr.strip().splitlines() if not x.startswith("INFO")]
    assert len(lines) == 1 and f"cannot write {idx}" in lines[0] and "File too large" in lines[0], run.stderr
    assert snapshot(idx) == before
