"""Hostile and broken input through the command line: no code runs, nothing is read or written outside
its folder, previous outputs survive, and every case ends in one stderr line with exit code 2.

Each case is run through `sadetr.cli.main.main` and checked the same way (`expect_one_line_error`): exit code
2, exactly one stderr line, no traceback, the line names the file / line / field / key. Faults the file
system cannot be made to produce on demand (a full disk) are injected by making the write raise
`OSError(ENOSPC)`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sadetr.cli.main import main
from sadetr.video.tiny import full_size_merges, make_tiny_clip, write_bpe_files, write_test_video


class Payload:
    """Unpickling this runs `exec(code)`: the classic pickle code-execution attack."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple:
        return (exec, (self.code,))


def malicious(path: Path, marker: Path, wrap: bool = True) -> Path:
    """A `torch.save` file whose loading with `weights_only=False` would create `marker`."""
    payload = Payload(f"open({str(marker)!r}, 'w').close()")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state": {"w": torch.zeros(1)}, "extra": payload} if wrap else payload, path)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def expect_one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert len(lines[0]) < 1000, f"{len(lines[0])} characters"
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "weights_only=False" not in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP folder whose tokenizer passes the real 49408-token check."""
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "clip", full_vocab=True)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("video") / "paint.mp4", n_frames=50, fps=10)


def _train_argv(synthetic_qvh: dict, out: Path, *overrides: str) -> list[str]:
    argv = [
        "train",
        "--config",
        "synthetic_tiny",
        "--config",
        str(synthetic_qvh["config"]),
        "--out",
        str(out),
    ]
    for item in overrides:
        argv += ["--set", item]
    return argv


# ------------------------------------------------------------------ security 1: no code from pickles


def test_the_payload_is_real(tmp_path: Path) -> None:
    """Control: loading the crafted file unsafely does run its code, so the refusals below mean something."""
    marker = tmp_path / "PWNED"
    evil = malicious(tmp_path / "evil.pyth", marker)
    code = f"import torch; torch.load({str(evil)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["slowfast", "checkpoint", "clip_bin", "clip_openai_pt"])
def test_malicious_weights_are_refused_without_running_code(
    kind: str, tmp_path: Path, clip_dir: Path, video: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "PWNED"
    out = tmp_path / "out"
    if kind == "slowfast":
        evil = malicious(tmp_path / "SLOWFAST_8x8_R50.pyth", marker)
        argv = [
            "extract",
            "--videos",
            str(video),
            "--out",
            str(out),
            "--slowfast",
            str(evil),
            "--device",
            "cpu",
        ]
    elif kind == "checkpoint":
        evil = malicious(tmp_path / "best.ckpt", marker)
        argv = ["predict", "--checkpoint", str(evil), "--out", str(out / "p.jsonl"), "--device", "cpu"]
    elif kind == "clip_bin":  # a transformers folder whose weights are a crafted pytorch_model.bin
        folder = tmp_path / "clip"
        shutil.copytree(clip_dir, folder)
        (folder / "model.safetensors").unlink()
        evil = malicious(folder / "pytorch_model.bin", marker, wrap=False)
        queries = tmp_path / "q.jsonl"
        queries.write_text('{"qid": 1, "query": "a dog"}\n')
        argv = ["extract-text", "--queries", str(queries), "--clip", str(folder), "--out", str(out)]
    else:  # an OpenAI-style ViT-B-32.pt that is a crafted pickle (tokenizer files beside it)
        write_bpe_files(tmp_path / "openai", full_size_merges())
        evil = malicious(tmp_path / "openai" / "ViT-B-32.pt", marker)
        argv = ["extract", "--videos", str(video), "--out", str(out), "--clip", str(evil), "--device", "cpu"]
    line = expect_one_line_error(capsys, argv, str(evil), "refused", "refer", "exec")
    assert "could run code" in line
    assert not marker.exists()


def test_a_pyslowfast_style_checkpoint_with_numpy_values_loads(tmp_path: Path) -> None:
    """Real checkpoints carry plain extras (epoch as a numpy int, cfg as text): allowed, only for the call."""
    from sadetr.video.slowfast import SlowFast, load_slowfast
    from sadetr.video.tiny import tiny_slowfast_config

    cfg = tiny_slowfast_config()
    state = SlowFast(cfg).state_dict()
    path = tmp_path / "sf.pyth"
    torch.save({"epoch": np.int64(196), "model_state": state, "cfg": "MODEL:\n  ARCH: slowfast\n"}, path)
    before = list(torch.serialization.get_safe_globals())
    model = load_slowfast(path, cfg)
    assert torch.equal(model.state_dict()["blocks.6.proj.weight"], state["blocks.6.proj.weight"])
    # nothing allowed process-wide: no numpy global stays (torch itself may register its own classes,
    # e.g. DTensor's, when a lazily imported torch module loads during the call)
    added = [g for g in torch.serialization.get_safe_globals() if g not in before]
    modules = [getattr(g[0] if isinstance(g, tuple) else g, "__module__", "") or "" for g in added]
    assert not [m for m in modules if m.startswith("numpy")], added


# ------------------------------------------------------------------ security 2: extract-text qids


@pytest.mark.parametrize(
    ("qid_json", "needle"),
    [
        ('"/../../../../X"', "'/../../../../X'"),
        ('"../X"', "'../X'"),
        ('"a/b"', "'a/b'"),
        ("null", "None (NoneType)"),
        ("[1, 2]", "[1, 2] (list)"),
        ("1.5", "1.5 (float)"),
        ("true", "True (a boolean)"),
        ('""', "'' (str)"),
    ],
)
def test_extract_text_refuses_unsafe_qids(
    qid_json: str, needle: str, tmp_path: Path, clip_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    work = tmp_path / "a" / "b" / "c" / "d"
    work.mkdir(parents=True)
    queries = work / "q.jsonl"
    queries.write_text(f'{{"qid": 1, "query": "a dog"}}\n{{"qid": {qid_json}, "query": "a cat"}}\n')
    before = snapshot(tmp_path)
    argv = ["extract-text", "--queries", str(queries), "--clip", str(clip_dir), "--out", str(work / "out")]
    expect_one_line_error(capsys, argv, f"{queries}:2: qid:", needle)
    assert snapshot(tmp_path) == before  # nothing written, inside or outside --out


def test_extract_text_refuses_a_duplicate_qid_naming_both_lines(
    tmp_path: Path, clip_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"qid": 3, "query": "a"}\n{"qid": 4, "query": "b"}\n{"qid": "3", "query": "c"}\n')
    argv = ["extract-text", "--queries", str(queries), "--clip", str(clip_dir), "--out", str(tmp_path / "o")]
    expect_one_line_error(capsys, argv, f"{queries}:3: qid:", "duplicate", "first on line 1")


def test_output_paths_are_proven_inside_the_root(tmp_path: Path) -> None:
    from sadetr.core.errors import DataError
    from sadetr.core.paths import safe_child

    root = tmp_path / "root"
    root.mkdir()
    assert safe_child(root, "qid7.npz", field="qid") == root / "qid7.npz"
    (root / "link").symlink_to(tmp_path)  # a symlink inside the root that points out of it
    (root / "loop.npz").symlink_to(root / "loop.npz")
    for name in ("../x.npz", "/etc/x.npz", "a/../../x.npz", "link/x.npz", "a\x00b", "loop.npz"):
        with pytest.raises(DataError, match="leads outside"):
            safe_child(root, name, field="vid")


# ------------------------------------------------------------------ security 3: feature reads


def _escaping_annotation(synthetic_qvh: dict, tmp_path: Path, vid: str) -> Path:
    record = json.loads(synthetic_qvh["train"].read_text().splitlines()[0])
    record["vid"] = vid
    path = tmp_path / "train.jsonl"
    path.write_text("\n" + json.dumps(record) + "\n")  # the record is on line 2
    return path


@pytest.mark.parametrize("vid", ["../../x", "/etc/passwd_like", "symlink"])
def test_feature_reads_stay_inside_feat_root(
    vid: str, synthetic_qvh: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    overrides = []
    if vid == "symlink":  # a feature file inside the root that is a symlink to a file outside it
        outside = tmp_path / "secret.npz"
        np.savez(outside, features=np.zeros((75, 2304), np.float32))
        feats = tmp_path / "feats"
        for source in ("slowfast_features", "clip_features"):
            (feats / source).mkdir(parents=True)
            (feats / source / "symlink.npz").symlink_to(outside)
        (feats / "clip_text_features").symlink_to(synthetic_qvh["feat_root"] / "clip_text_features")
        overrides.append(f"data.feat_root={feats}")
    ann = _escaping_annotation(synthetic_qvh, tmp_path, vid)
    argv = _train_argv(synthetic_qvh, tmp_path / "run", f"data.train_path={ann}", *overrides)
    expect_one_line_error(capsys, argv, f"{ann}:2: vid:", "leads outside")
    assert not (tmp_path / "run" / "last.ckpt").exists()


@pytest.mark.parametrize("mode", ["error", "skip"])
@pytest.mark.parametrize(("field", "value"), [("vid", "a/../../x"), ("qid", "/../../x"), ("qid", "symlink")])
def test_training_names_stay_inside_feat_root_in_every_mode(
    mode: str, field: str, value: str, synthetic_qvh: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A record's vid or qid (or a text feature file symlinked out of the root) is refused even when bad
    samples are skipped: skipping is for broken data, not for reads outside the feature root."""
    record = json.loads(synthetic_qvh["train"].read_text().splitlines()[0])
    overrides = [f"data.on_bad_sample={mode}"]
    if value == "symlink":
        feats = tmp_path / "feats"
        feats.mkdir()
        for source in ("slowfast_features", "clip_features"):
            (feats / source).symlink_to(synthetic_qvh["feat_root"] / source)
        (feats / "clip_text_features").mkdir()
        outside = tmp_path / "secret.npz"
        np.savez(outside, last_hidden_state=np.ones((5, 512), np.float32))
        (feats / "clip_text_features" / f"qid{record['qid']}.npz").symlink_to(outside)
        overrides.append(f"data.feat_root={feats}")
    else:
        record[field] = value
    ann = tmp_path / "train.jsonl"
    ann.write_text(json.dumps(record) + "\n")
    argv = _train_argv(synthetic_qvh, tmp_path / "run", f"data.train_path={ann}", *overrides)
    expect_one_line_error(capsys, argv, f"{ann}:1: {field}:", "leads outside")
    assert not (tmp_path / "run" / "last.ckpt").exists()


@pytest.mark.parametrize(("field", "value"), [("vid", "../../x"), ("qid", "a/../../../x")])
def test_predict_reads_features_only_inside_feat_root(
    field: str, value: str, tiny_checkpoint: Path, synthetic_qvh: dict, tmp_path: Path, capsys
) -> None:
    record = {**json.loads(synthetic_qvh["val"].read_text().splitlines()[0]), field: value}
    ann = tmp_path / "split.jsonl"
    ann.write_text(json.dumps(record) + "\n")
    argv = ["predict", "--checkpoint", str(tiny_checkpoint), "--data", str(ann), "--out", str(tmp_path / "p")]
    expect_one_line_error(capsys, argv, f"{ann}:1: {field}:", "leads outside")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("key", ["data.text_source", "data.video_sources"])
def test_feature_source_names_stay_inside_feat_root(
    key: str, synthetic_qvh: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    value = "../../etc" if key == "data.text_source" else "[slowfast_features, /etc/clip]"
    argv = _train_argv(synthetic_qvh, tmp_path / "run", f"{key}={value}")
    expect_one_line_error(capsys, argv, key.split(".")[1], "leads outside")


# ------------------------------------------------------------------ extract: names, empty input


def test_extract_refuses_two_videos_with_one_name(
    tmp_path: Path, video: Path, clip_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        shutil.copy(video, tmp_path / folder / "clip.mp4")
    listing = tmp_path / "videos.txt"
    listing.write_text("d1/clip.mp4\nd2/clip.mp4\n")
    argv = ["extract", "--videos", str(listing), "--out", str(tmp_path / "o"), "--clip", str(clip_dir)]
    expect_one_line_error(capsys, argv, f"{listing}:2:", "'clip'", "line 1")
    assert not (tmp_path / "o" / "clip_features").exists()


def test_extract_refuses_an_empty_folder(
    tmp_path: Path, clip_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "notes.txt").write_text("not a video")
    argv = [
        "extract",
        "--videos",
        str(tmp_path / "videos"),
        "--out",
        str(tmp_path / "o"),
        "--clip",
        str(clip_dir),
    ]
    expect_one_line_error(capsys, argv, str(tmp_path / "videos"), "no videos")


def test_extract_logs_broken_symlinks_and_folders_named_like_videos(
    tmp_path: Path, video: Path, clip_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(video, videos / "good.mp4")
    (videos / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (videos / "folder.mp4").mkdir()
    out = tmp_path / "o"
    argv = ["extract", "--videos", str(videos), "--out", str(out), "--clip", str(clip_dir), "--device", "cpu"]
    assert main(argv) == 0
    assert "1 done, 0 already there, 2 failed" in capsys.readouterr().err
    log = dict(line.split("\t") for line in (out / "extract_failures.tsv").read_text().splitlines())
    assert "broken symlink" in log[str(videos / "dangling.mp4")]
    assert "folder" in log[str(videos / "folder.mp4")]


# ------------------------------------------------------------------ one-line errors (item 12)


def test_binary_input_files(
    tmp_path: Path, synthetic_qvh: dict, clip_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 64)
    gt = str(synthetic_qvh["val"])
    cases = [
        ["evaluate", "--submission", str(binary), "--gt", gt],
        ["evaluate", "--submission", gt, "--gt", str(binary)],
        ["extract-text", "--queries", str(binary), "--clip", str(clip_dir), "--out", str(tmp_path / "o")],
        _train_argv(synthetic_qvh, tmp_path / "run", f"data.train_path={binary}"),
        ["train", "--config", str(binary.with_suffix(".yaml")), "--out", str(tmp_path / "run")],
    ]
    binary.with_suffix(".yaml").write_bytes(binary.read_bytes())
    for argv in cases:
        expect_one_line_error(capsys, argv, "binary.")


@pytest.mark.parametrize("command", ["train", "synth", "extract", "evaluate", "predict"])
def test_out_of_the_wrong_kind(
    command: str, tmp_path: Path, synthetic_qvh: dict, video: Path, capsys: pytest.CaptureFixture
) -> None:
    a_file, a_folder = tmp_path / "taken.txt", tmp_path / "folder"
    a_file.write_text("keep me")
    a_folder.mkdir()
    gt = str(synthetic_qvh["val"])
    argv = {
        "train": _train_argv(synthetic_qvh, a_file),
        "synth": ["synth", "--out", str(a_file / "sub")],
        "extract": [
            "extract",
            "--videos",
            str(video),
            "--out",
            str(a_file),
            "--slowfast",
            str(tmp_path / "x"),
        ],
        "evaluate": ["evaluate", "--submission", gt, "--gt", gt, "--out", str(a_folder)],
        "predict": ["predict", "--checkpoint", str(tmp_path / "x.ckpt"), "--out", str(a_folder)],
    }[command]
    expect_one_line_error(
        capsys, argv, "--out", "taken.txt" if command in ("train", "synth", "extract") else "folder"
    )
    assert a_file.read_text() == "keep me" and not any(a_folder.iterdir())


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_full_disk_keeps_the_previous_output(
    where: str,
    tmp_path: Path,
    tiny_checkpoint: Path,
    synthetic_qvh: dict,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "metrics.json"
    out.write_text("previous metrics")
    preds = str(tiny_checkpoint.parent / "val_preds.jsonl")

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "write":
        monkeypatch.setattr(Path, "write_text", no_space)
    else:
        monkeypatch.setattr(os, "fsync", no_space)
    argv = ["evaluate", "--submission", preds, "--gt", str(synthetic_qvh["val"]), "--out", str(out)]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].endswith(
        f"cannot write {out}: no space left on device; the previous file is intact (temp file removed)"
    )
    monkeypatch.undo()
    assert out.read_text() == "previous metrics"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize(
    ("argv_tail", "needles"),
    [
        (["--set", "train.device=tpu"], ["train.device", "'tpu'"]),
        (["--set", "train.lr=.nan"], ["train.lr", "finite"]),
        (["--set", "train.lr=.inf"], ["train.lr", "finite"]),
        (["--set", "model.dropout=nan"], ["model.dropout", "finite"]),
    ],
)
def test_bad_config_values(
    argv_tail: list[str],
    needles: list[str],
    tmp_path: Path,
    synthetic_qvh: dict,
    capsys: pytest.CaptureFixture,
) -> None:
    expect_one_line_error(capsys, _train_argv(synthetic_qvh, tmp_path / "run") + argv_tail, *needles)
    assert not (tmp_path / "run").exists()


def test_bad_command_line_numbers_and_devices(
    tmp_path: Path, tiny_checkpoint: Path, clip_dir: Path, video: Path, capsys: pytest.CaptureFixture
) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"qid": 1, "query": "a dog"}\n')
    pred = ["predict", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "p.jsonl")]
    text = ["extract-text", "--queries", str(queries), "--clip", str(clip_dir), "--out", str(tmp_path / "o")]
    ext = ["extract", "--videos", str(video), "--out", str(tmp_path / "o"), "--clip", str(clip_dir)]
    expect_one_line_error(capsys, [*pred, "--device", "tpu"], "--device", "'tpu'")
    expect_one_line_error(capsys, [*pred, "--batch-size", "0"], "--batch-size", ">= 1")
    expect_one_line_error(capsys, [*text, "--batch-size", "0"], "--batch-size", ">= 1")
    expect_one_line_error(capsys, [*text, "--device", "cuda:x"], "--device", "'cuda:x'")
    expect_one_line_error(capsys, [*ext, "--device", "tpu"], "--device", "'tpu'")
    expect_one_line_error(capsys, [*ext, "--clip-length", "nan"], "--clip-length")
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "o" / "clip_text_features").exists()


def test_truncated_clip_safetensors(tmp_path: Path, clip_dir: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "clip"
    shutil.copytree(clip_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"qid": 1, "query": "a dog"}\n')
    argv = ["extract-text", "--queries", str(queries), "--clip", str(folder), "--out", str(tmp_path / "o")]
    expect_one_line_error(capsys, argv, str(folder), "cannot load CLIP")


def test_checkpoint_mismatch_is_summarised(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    state = torch.load(tiny_checkpoint, weights_only=True)
    weights = state["model"]
    keys = sorted(weights)
    for key in keys[:10]:
        del weights[key]
    for i in range(20):
        weights[f"extra.layer{i}.weight"] = torch.zeros(3)
    weights[keys[-1]] = torch.zeros(7, 7)
    bad = tmp_path / "bad.ckpt"
    torch.save(state, bad)
    argv = ["predict", "--checkpoint", str(bad), "--out", str(tmp_path / "p.jsonl"), "--device", "cpu"]
    line = expect_one_line_error(
        capsys, argv, str(bad), "10 missing", "20 unexpected", "1 with another shape"
    )
    assert "(+7)" in line and "(+17)" in line  # only the first few keys are listed


# ------------------------------------------------------------------ atomic writes


def test_killed_writers_temp_files_are_cleaned_on_the_next_checkpoint_write(tmp_path: Path) -> None:
    from sadetr.engine.checkpoint import save_checkpoint

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = [tmp_path / f".last.ckpt.{dead_pid}-abcd_123.tmp", tmp_path / ".last.ckpt.k2j4h5g6.tmp"]
    live = tmp_path / f".last.ckpt.{os.getppid()}-zzzzzzzz.tmp"  # a writer that still runs
    other = tmp_path / f".last.ckpt.old.{dead_pid}-abcdefgh.tmp"  # another target's temp file
    for path in (*stale, live, other):
        path.write_bytes(b"partial")
    save_checkpoint(tmp_path / "last.ckpt", {"model": {}, "epoch": 1})
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists() and (tmp_path / "last.ckpt").is_file()


def test_atomic_write_fsyncs_file_then_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sadetr.core.atomic import atomic_write_text

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(tmp_path / "x.json", "{}")
    assert events == ["fsync file", "replace", "fsync dir"]


# ------------------------------------------------------------------ the CLI's safety net


def test_io_errors_that_escape_a_read_site_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read site without its own check (stand-in: plain `json.loads(read_text())`) still gives one line."""
    import sadetr.cli.commands.evaluate as evaluate_cmd

    binary, broken, missing = tmp_path / "b.jsonl", tmp_path / "j.jsonl", tmp_path / "missing.jsonl"
    binary.write_bytes(b"\xff\xfe" * 10)
    broken.write_text("{not json")
    monkeypatch.setattr(evaluate_cmd, "load_jsonl", lambda p: json.loads(Path(p).read_text(encoding="utf-8")))
    expect_one_line_error(capsys, ["evaluate", "--submission", str(binary), "--gt", str(binary)], "UTF-8")
    expect_one_line_error(
        capsys, ["evaluate", "--submission", str(broken), "--gt", str(broken)], "invalid JSON"
    )
    expect_one_line_error(
        capsys, ["evaluate", "--submission", str(missing), "--gt", str(missing)], str(missing)
    )
