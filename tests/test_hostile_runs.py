"""Hostile input to train / predict / evaluate (issue 10, part B): each case asserts the outcome.

A refused command exits with code 2 and one stderr line naming the file / line / field / key, never a
traceback, and leaves what was there before byte-identical. Cases run the CLI in-process
(`sadetr.cli.main.main`), except the concurrent training, whose lock holder is a second process.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from sadetr.cli.main import main

TRAIN = ["train", "--config", "synthetic_tiny"]


def _train_argv(config: Path, out: Path, *overrides: str) -> list[str]:
    """`sadetr train` on the tiny config + `config`, with `--set` `overrides`, into `out`."""
    sets = [arg for kv in overrides for arg in ("--set", kv)]
    return [*TRAIN, "--config", str(config), *sets, "--out", str(out)]


# ----------------------------------------------------------------------------- helpers


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _dataset(
    tmp: Path,
    syn: dict[str, Path],
    train: Callable[[list[dict]], None] | None = None,
    val: Callable[[list[dict]], None] | None = None,
) -> tuple[Path, Path, Path]:
    """A dataset.yaml on the shared synthetic features with edited copies of its annotation files;
    returns (yaml, train.jsonl, val.jsonl)."""
    paths = {}
    for split, edit in (("train", train), ("val", val)):
        records = _records(syn[split])
        if edit is not None:
            edit(records)
        paths[split] = _write_records(tmp / f"{split}.jsonl", records)
    tree = yaml.safe_load(syn["config"].read_text())
    tree["data"].update(train_path=str(paths["train"]), val_path=str(paths["val"]))
    cfg = tmp / "dataset.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    return cfg, paths["train"], paths["val"]


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (lock files aside)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".sadetr.lock"
    }


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@dataclass
class Env:
    """What a case's setup may use: a private tmp dir, the shared synthetic data, a trained run."""

    tmp: Path
    syn: dict[str, Path]
    run: Path  # a copy of the tiny trained run (best.ckpt, last.ckpt, metrics.jsonl, ...)
    keep: dict[str, Any] = field(default_factory=dict)  # setup -> check


@dataclass
class Case:
    """argv from `setup(env)`; expected exit code, the substrings of the one error line, extra checks."""

    setup: Callable[[Env], list[str]]
    needles: tuple[str, ...] = ()
    rc: int = 2
    check: Callable[[Env, str, str], None] | None = None  # (env, stdout, stderr + log text)


# ----------------------------------------------------------------------------- item 4: run directory


def _existing_run(env: Env) -> list[str]:
    env.keep["before"] = _snapshot(env.run)
    return _train_argv(env.syn["config"], env.run)


def _run_unchanged(env: Env, out: str, log: str) -> None:
    assert _snapshot(env.run) == env.keep["before"]  # best.ckpt, metrics.jsonl, ... untouched


def _existing_run_resume_and_overwrite(env: Env) -> list[str]:
    env.keep["before"] = _snapshot(env.run)
    return ["train", "--resume", "--overwrite", "--out", str(env.run)]


def _locked_run(env: Env) -> list[str]:
    out = env.tmp / "busy"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from sadetr.engine.rundir import RunDirLock\n"
            "with RunDirLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    env.keep["holder"] = holder
    return _train_argv(env.syn["config"], out)


def _lock_refused(env: Env, out: str, log: str) -> None:
    holder = env.keep["holder"]
    assert holder.poll() is None  # the first training still holds the directory
    holder.kill()
    holder.wait(timeout=30)
    assert not (env.tmp / "busy" / "config.yaml").exists()


# ----------------------------------------------------------------------------- item 6: windows


def _train_record(edit: Callable[[dict], None], index: int = 2) -> Callable[[Env], list[str]]:
    def setup(env: Env) -> list[str]:
        cfg, train, _ = _dataset(env.tmp, env.syn, train=lambda recs: edit(recs[index]))
        env.keep["train"] = train
        return _train_argv(cfg, env.tmp / "out")

    return setup


def _no_run_written(env: Env, out: str, log: str) -> None:
    assert not (env.tmp / "out" / "metrics.jsonl").exists()
    assert not (env.tmp / "out" / "last.ckpt").exists()


def _set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda rec: rec.__setitem__(key, value)


# ----------------------------------------------------------------------------- item 8: predict


def _predict_video(*extra: str) -> Callable[[Env], list[str]]:
    def setup(env: Env) -> list[str]:
        video = env.tmp / "v.mp4"
        video.write_bytes(b"")
        return ["predict", "--checkpoint", str(env.run / "best.ckpt"), "--video", str(video), *extra]

    return setup


# ----------------------------------------------------------------------------- item 9: skip count


def _skip_in_workers(env: Env) -> list[str]:
    def spoil(recs: list[dict]) -> None:
        for rec in recs[:3]:  # features of 2 s clips no longer cover the duration: fails at load
            rec["duration"] = rec["duration"] * 3

    cfg, train, _ = _dataset(env.tmp, env.syn, train=spoil)
    env.keep["train"] = train
    return _train_argv(
        cfg, env.tmp / "out", "data.on_bad_sample=skip", "train.num_workers=2", "train.epochs=1"
    )


def _skips_counted(env: Env, out: str, log: str) -> None:
    assert f"skipped 3 bad sample(s) (on_bad_sample=skip); first: {env.keep['train']}:" in log
    assert "does not match the duration" in log


# ----------------------------------------------------------------------------- item 10: non-finite


def _diverging(env: Env) -> list[str]:
    return _train_argv(env.syn["config"], env.tmp / "out", "train.lr=1e4", "train.checkpoint_every_steps=1")


def _diverged(env: Env, out: str, log: str) -> None:
    from sadetr.engine.checkpoint import first_non_finite, load_checkpoint

    ckpt = env.tmp / "out" / "last.ckpt"
    if ckpt.exists():  # the checkpoint it names holds finite weights
        assert f"last good checkpoint: {ckpt}" in log
        assert first_non_finite(load_checkpoint(ckpt)["model"]) is None
    else:
        assert "no checkpoint written yet" in log


def _nan_checkpoint(env: Env) -> list[str]:
    state = torch.load(env.run / "best.ckpt", weights_only=True)
    name = sorted(state["model"])[5]
    state["model"][name].view(-1)[0] = float("nan")
    bad = env.tmp / "nan.ckpt"
    torch.save(state, bad)
    env.keep.update(name=name, bad=bad)
    return ["predict", "--checkpoint", str(bad), "--out", str(env.tmp / "preds.jsonl")]


def _names_nan_parameter(env: Env, out: str, log: str) -> None:
    assert not (env.tmp / "preds.jsonl").exists()


# ----------------------------------------------------------------------------- item 11: evaluate


def _empty_prediction(env: Env) -> list[str]:
    gt = _records(env.syn["val"])[:4]
    for g in gt:  # one GT window each: a prediction equal to it has AP 1
        g["relevant_windows"] = g["relevant_windows"][:1]
    sub = [{"qid": g["qid"], "pred_relevant_windows": [[*g["relevant_windows"][0], 1.0]]} for g in gt]
    sub[0]["pred_relevant_windows"] = []
    _write_records(env.tmp / "gt.jsonl", gt)
    _write_records(env.tmp / "sub.jsonl", sub)
    return ["evaluate", "--submission", str(env.tmp / "sub.jsonl"), "--gt", str(env.tmp / "gt.jsonl")]


def _scored_zero(env: Env, out: str, log: str) -> None:
    from sadetr.eval import evaluate

    gt, sub = _records(env.tmp / "gt.jsonl"), _records(env.tmp / "sub.jsonl")
    brief = evaluate(sub, gt)["brief"]
    assert brief["MR-full-R1@0.7"] == 75.0  # 3 of 4 queries exact, the empty one scores 0
    assert brief["MR-full-mAP"] == 75.0
    assert "MR-full-mAP" in out


def _qid_types(env: Env) -> list[str]:
    gt = _records(env.syn["val"])[:1]
    sub = [{"qid": str(g["qid"]), "pred_relevant_windows": [[0.0, 2.0, 1.0]]} for g in gt]
    _write_records(env.tmp / "gt.jsonl", gt)
    _write_records(env.tmp / "sub.jsonl", sub)
    env.keep["qid"] = gt[0]["qid"]
    return ["evaluate", "--submission", str(env.tmp / "sub.jsonl"), "--gt", str(env.tmp / "gt.jsonl")]


# ----------------------------------------------------------------------------- item 13: early checks


def _typo_metric(env: Env) -> list[str]:
    return _train_argv(env.syn["config"], env.tmp / "out", "train.selection_metric=MR-ful-mAP")


def _val_without_windows(env: Env) -> list[str]:
    cfg, _, val = _dataset(env.tmp, env.syn, val=lambda recs: recs[4].pop("relevant_windows"))
    env.keep["val"] = val
    return _train_argv(cfg, env.tmp / "out")


CASES: dict[str, Case] = {
    "4-existing-run-refused": Case(
        _existing_run, ("--out", "already holds a run", "--resume", "--overwrite"), check=_run_unchanged
    ),
    "4-resume-and-overwrite-conflict": Case(
        _existing_run_resume_and_overwrite, ("--overwrite", "give one"), check=_run_unchanged
    ),
    "4-second-training-refused": Case(
        _locked_run, ("busy", "in use by another training"), check=_lock_refused
    ),
    "6-empty-windows-in-train": Case(
        _train_record(_set("relevant_windows", [])),
        ("train.jsonl:3: relevant_windows: empty", "data.allow_empty_windows"),
        check=_no_run_written,
    ),
    "6-missing-windows-in-train": Case(
        _train_record(lambda rec: rec.pop("relevant_windows")),
        ("train.jsonl:3: relevant_windows: missing",),
        check=_no_run_written,
    ),
    "6-window-past-the-end": Case(
        _train_record(lambda rec: rec.__setitem__("relevant_windows", [[0, rec["duration"] + 30]])),
        ("train.jsonl:3: relevant_windows[0]:", "outside [0, duration="),
        check=_no_run_written,
    ),
    "6-window-before-0": Case(
        _train_record(_set("relevant_windows", [[-5, 4]])),
        ("train.jsonl:3: relevant_windows[0]:", "outside"),
        check=_no_run_written,
    ),
    "6-window-start-after-end": Case(
        _train_record(_set("relevant_windows", [[8, 4]])),
        ("train.jsonl:3: relevant_windows[0]: start >= end",),
        check=_no_run_written,
    ),
    "8-blank-query": Case(_predict_video("--query", "   "), ("--query", "non-empty")),
    "8-negative-top-k": Case(_predict_video("--query", "a dog", "--top-k", "-3"), ("--top-k", ">= 1")),
    "9-skip-count-from-workers": Case(_skip_in_workers, rc=0, check=_skips_counted),
    "10-diverging-run": Case(
        _diverging,
        ("training diverged at epoch 1, step", "non-finite"),
        check=_diverged,
    ),
    "10-nan-checkpoint": Case(_nan_checkpoint, ("nan.ckpt", "holds NaN/inf"), check=_names_nan_parameter),
    "11-empty-prediction-scores-0": Case(_empty_prediction, rc=0, check=_scored_zero),
    "11-qid-types-shown": Case(_qid_types, ("(int)", "(str)", "differ only in type")),
    "13-selection-metric-typo": Case(
        _typo_metric, ("train.selection_metric", "'MR-ful-mAP'", "MR-full-mAP"), check=_no_run_written
    ),
    "13-val-record-without-windows": Case(
        _val_without_windows,
        ("val.jsonl:5: relevant_windows: missing", "evaluation split"),
        check=_no_run_written,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_cli_input(
    name: str,
    tmp_path: Path,
    synthetic_qvh: dict[str, Path],
    tiny_checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import shutil

    case = CASES[name]
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint.parent, run, ignore=shutil.ignore_patterns(".sadetr.lock", "tb"))
    env = Env(tmp_path, synthetic_qvh, run)
    argv = case.setup(env)
    try:
        with caplog.at_level("INFO"):
            rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == case.rc, err
        if case.rc == 2:
            line = _one_error_line(err)
            for needle in case.needles:
                assert needle in line, line
            if name == "10-nan-checkpoint":
                assert repr(env.keep["name"]) in line
            if name == "11-qid-types-shown":
                qid = env.keep["qid"]
                assert f"{qid} (int), '{qid}' (str)" in line
        else:
            assert "Traceback" not in err
        if case.check is not None:
            case.check(env, out, err + caplog.text)
    finally:
        if "holder" in env.keep and env.keep["holder"].poll() is None:
            env.keep["holder"].kill()


def test_overwrite_replaces_the_run_after_validation(
    tmp_path: Path, synthetic_qvh: dict[str, Path], tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--overwrite with a bad config keeps the old run; with a good one it starts over in place."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint.parent, run)
    (run / "tb").mkdir(exist_ok=True)
    (run / "tb" / "events.old").write_text("old")
    before = _snapshot(run)
    base = [*TRAIN, "--config", str(synthetic_qvh["config"]), "--out", str(run), "--overwrite"]
    assert main([*base, "--set", "train.selection_metric=nope"]) == 2
    assert _snapshot(run) == before
    assert main([*base, "--set", "train.epochs=1", "--set", "train.eval_every=0"]) == 0
    capsys.readouterr()
    assert not (run / "best.ckpt").exists() and not (run / "tb" / "events.old").exists()
    assert not (run / "val_preds.jsonl").exists() and (run / "last.ckpt").is_file()
    epochs = {json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert epochs == {1}


def test_allow_empty_windows_opts_in(tmp_path: Path, synthetic_qvh: dict[str, Path], tiny_config) -> None:
    from sadetr.core.errors import DataError
    from sadetr.engine.trainer import Trainer

    _, train, _ = _dataset(tmp_path, synthetic_qvh, train=lambda r: r[1].pop("relevant_windows"))
    cfg = tiny_config(f"data.train_path={train}")
    with pytest.raises(DataError, match=r"train\.jsonl:2: relevant_windows: missing"):
        Trainer(cfg, tmp_path / "a")
    trainer = Trainer(
        tiny_config(f"data.train_path={train}", "data.allow_empty_windows=true"), tmp_path / "b"
    )
    qid = _records(train)[1]["qid"]
    sample = next(trainer.train_set[i] for i, a in enumerate(trainer.train_set.annotations) if a.qid == qid)
    assert sample["spans"].shape == (0, 2)  # trained as "no moment"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"query": "  \t"}, "query: must be a non-empty string"),
        ({"query": ""}, "query: must be a non-empty string"),
        ({"max_moments": -3}, "max_moments: must be an integer >= 0"),
        ({"overlap": 1.5}, r"overlap: must be in \[0, 1\)"),
        ({"duration": 0.1}, r"duration: 0.1 s is shorter than one clip \(2 s\)"),
        ({"duration": float("nan")}, "duration: must be a positive number"),
    ],
)
def test_predictor_refuses_degenerate_requests(tiny_checkpoint: Path, kwargs: dict, match: str) -> None:
    from sadetr.core.errors import SadetrError
    from sadetr.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    feats = np.random.default_rng(0).normal(size=(1, sum(predictor.video_dims))).astype(np.float32)
    text = np.ones((4, predictor.text_dim), np.float32)
    args = {"query": "a dog runs", "duration": None, **kwargs}
    with pytest.raises(SadetrError, match=match):
        predictor.predict(args.pop("query"), feats, text_features=text, duration=args.pop("duration"), **args)
    one_clip = predictor.predict("a dog runs", feats, text_features=text)  # exactly one clip is fine
    assert one_clip["duration"] == predictor.clip_len
    assert all(0 <= s <= e <= predictor.clip_len for s, e, _ in one_clip["pred_relevant_windows"])


def test_span_ops_survive_nan_spans() -> None:
    from sadetr.model.span_ops import temporal_align

    feats = torch.randn(2, 6, 3)  # [B, L, D]
    spans = torch.tensor([[[float("nan"), 0.2], [0.5, float("inf")]], [[0.5, 0.2], [-float("inf"), 0.1]]])
    out = temporal_align(feats, spans, torch.ones(2, 6, dtype=torch.bool), 4)  # no index error
    assert out.shape == (2, 2, 4, 3)


def test_lock_is_released_by_a_killed_holder(tmp_path: Path) -> None:
    """kill -9 of a training frees its run directory (an OS lock, not a stale lock file)."""
    from sadetr.engine.rundir import RunDirLock

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from sadetr.engine.rundir import RunDirLock\n"
            "lock = RunDirLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    from sadetr.core.errors import ConfigError

    with pytest.raises(ConfigError, match="in use by another training"):
        RunDirLock(tmp_path).acquire()
    holder.kill()
    holder.wait(timeout=30)
    with RunDirLock(tmp_path) as lock:  # the lock file is still there, but nobody holds it
        assert lock.path.exists()


def test_a_checkpoint_with_nan_weights_is_never_written(tmp_path: Path, tiny_config) -> None:
    """The path named as "last good checkpoint" keeps finite weights: save() refuses NaN weights."""
    from sadetr.core.errors import DivergedError
    from sadetr.engine.checkpoint import first_non_finite, load_checkpoint
    from sadetr.engine.trainer import Trainer

    trainer = Trainer(tiny_config("train.eval_every=0"), tmp_path)
    trainer.save("last.ckpt")
    before = (tmp_path / "last.ckpt").read_bytes()
    name, param = next(iter(trainer.model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("inf")
    with pytest.raises(
        DivergedError, match=rf"non-finite weights: {name}; last good checkpoint: .*last\.ckpt"
    ):
        trainer.save("last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == before
    assert first_non_finite(load_checkpoint(tmp_path / "last.ckpt")["model"]) is None
