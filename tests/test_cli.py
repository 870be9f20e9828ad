"""`sadetr train` -> `sadetr predict` -> evaluation end to end on a tiny synthetic dataset; user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sadetr.cli.main import main


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_train_predict_evaluate(tmp_path: Path, synthetic_qvh: dict, capsys: pytest.CaptureFixture) -> None:
    from sadetr.eval import evaluate

    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--config",
            "synthetic_tiny",
            "--config",
            str(synthetic_qvh["config"]),
            "--set",
            "train.epochs=2",
            "--set",
            "train.tensorboard=true",
            "--out",
            str(run),
        ]
    )
    assert rc == 0
    for name in (
        "config.yaml",
        "last.ckpt",
        "best.ckpt",
        "metrics.jsonl",
        "val_preds.jsonl",
        "best_metrics.json",
    ):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    out = capsys.readouterr().out
    assert "MR-full-mAP" in out and str(run) in out
    records = _jsonl(run / "metrics.jsonl")
    train_recs = [r for r in records if r["kind"] == "train"]
    assert {"loss", "lr", "loss_l1", "loss_giou", "loss_quality", "loss_vtc", "loss_dn_l1"} <= set(
        train_recs[0]
    )
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1, 2]

    preds = tmp_path / "preds.jsonl"
    # same batch size as training's evaluation (train.batch_size = 8), so the padding is identical
    assert (
        main(["predict", "--checkpoint", str(run / "best.ckpt"), "--out", str(preds), "--batch-size", "8"])
        == 0
    )
    assert "MR-full-mAP" in capsys.readouterr().out
    got, during_training = _jsonl(preds), _jsonl(run / "val_preds.jsonl")
    gt = _jsonl(synthetic_qvh["val"])
    assert [p["qid"] for p in got] == [g["qid"] for g in gt]
    # the reloaded checkpoint reproduces the predictions the trainer scored for best.ckpt
    assert got == during_training
    best = json.loads((run / "best_metrics.json").read_text())["metrics"]["brief"]
    assert evaluate(got, gt)["brief"] == pytest.approx(best)
    first = got[0]
    assert set(first) >= {"qid", "query", "vid", "pred_relevant_windows", "pred_saliency_scores"}
    scores = [w[2] for w in first["pred_relevant_windows"]]
    assert scores == sorted(scores, reverse=True)


def test_predict_a_test_split_without_ground_truth(
    tmp_path: Path, synthetic_qvh: dict, tiny_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    test_file = tmp_path / "test.jsonl"
    rows = []
    for rec in _jsonl(synthetic_qvh["val"])[:5]:
        rows.append({k: rec[k] for k in ("qid", "query", "vid", "duration")})
    test_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sub.jsonl"
    assert (
        main(["predict", "--checkpoint", str(tiny_checkpoint), "--data", str(test_file), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "MR-full-mAP" not in printed  # nothing to score against
    got = _jsonl(out)
    assert [g["qid"] for g in got] == [r["qid"] for r in rows]
    for g, r in zip(got, rows):
        assert all(0 <= w[0] <= w[1] <= r["duration"] for w in g["pred_relevant_windows"])
        assert len(g["pred_saliency_scores"]) == int(r["duration"] // 2)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--config", "synthetic_tiny", "--set", "model.hiden=1"], "model.hiden: unknown key"),
        (["train", "--config", "synthetic_tiny", "--set", "train.epochs"], "expected section.key=value"),
        (["train", "--config", "nope_config"], "no such config file"),
        (["train", "--config", "synthetic_tiny", "--set", "data.feat_root=/nonexistent/feats"], "not found"),
        (["train", "--config", "synthetic_tiny", "--preset", "table4.zz"], "table4.zz"),
        (["train", "--resume", "/nonexistent/run"], "no run directory"),
        (["train", "--config", "synthetic_tiny", "--seeds", "1,x"], "--seeds"),
    ],
)
def test_user_errors_are_one_line(
    argv: list[str], fragment: str, tmp_path: Path, synthetic_qvh: dict, capsys: pytest.CaptureFixture
) -> None:
    if "--config" in argv and "feat_root" not in " ".join(argv):
        argv = [*argv, "--config", str(synthetic_qvh["config"])]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1 and err.startswith("sadetr train: error:")


def test_bad_checkpoint_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sadetr",
            "predict",
            "--checkpoint",
            str(bad),
            "--out",
            str(tmp_path / "p.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "unreadable checkpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_seeds_summary(tmp_path: Path, synthetic_qvh: dict, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "seeds"
    argv = ["train", "--config", "synthetic_tiny", "--config", str(synthetic_qvh["config"])]
    assert main([*argv, "--set", "train.epochs=1", "--seeds", "0,5", "--out", str(run)]) == 0
    summary = json.loads((run / "seeds_summary.json").read_text())
    assert summary["seeds"] == [0, 5] and (run / "seed0" / "best.ckpt").is_file()
    vals = [summary["per_seed"][s]["MR-full-mAP"] for s in ("0", "5")]
    stats = summary["summary"]["MR-full-mAP"]
    assert stats["mean"] == pytest.approx(sum(vals) / 2)
    assert stats["std"] == pytest.approx(abs(vals[0] - vals[1]) / 2**0.5)  # sample std of two values
    assert "MR-full-mAP" in capsys.readouterr().out
