"""The CLI imports a command's module only when it runs: `--help`, `evaluate`, `synth` never import torch."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sadetr.cli import commands
from sadetr.cli.main import COMMANDS, build_parser, command_module

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _torch_free(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `main(argv)` in a fresh interpreter; it prints whether torch got imported, as its last line."""
    code = textwrap.dedent(
        f"""
        import sys
        from sadetr.cli.main import main
        try:
            rc = main({argv!r})
        except SystemExit as exit:
            rc = exit.code
        print("torch imported:", "torch" in sys.modules, "rc:", rc)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )


HELPS = [["--help"], ["evaluate", "--help"], ["synth", "--help"], ["bench", "--help"]]


@pytest.mark.parametrize("argv", HELPS)
def test_help_does_not_import_torch(argv: list[str], tmp_path: Path) -> None:
    proc = _torch_free(argv, tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "torch imported: False rc: 0", proc.stderr
    assert "usage: sadetr" in proc.stdout


def test_evaluate_does_not_import_torch(tmp_path: Path) -> None:
    sub = SHARED_DATA / "eval_reference" / "sample_val_preds.jsonl"
    gt = SHARED_DATA / "qvhighlights" / "highlight_val_release.jsonl"
    out = tmp_path / "metrics.json"
    proc = _torch_free(["evaluate", "--submission", str(sub), "--gt", str(gt), "--out", str(out)], tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "torch imported: False rc: 0", proc.stderr
    reference = json.loads((SHARED_DATA / "eval_reference" / "sample_val_preds_metrics_raw.json").read_text())
    assert json.loads(out.read_text())["brief"]["MR-full-mAP"] == reference["brief"]["MR-full-mAP"]


def test_synth_does_not_import_torch(tmp_path: Path) -> None:
    out = tmp_path / "data"
    proc = _torch_free(["synth", "--out", str(out), "--n-train", "2", "--n-val", "1"], tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "torch imported: False rc: 0", proc.stderr
    assert (out / "dataset.yaml").is_file()


def test_command_table_matches_the_modules() -> None:
    """Every command module is in COMMANDS (so `--help` stays light) with the help its parser declares."""
    modules = {m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")}
    assert {command_module(name) for name in COMMANDS} == modules
    for name in COMMANDS:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"sadetr.cli.commands.{command_module(name)}").register(sub)
        (action,) = sub._choices_actions
        assert (action.dest, action.help) == (name, COMMANDS[name])


def test_lazy_parser_parses_a_command() -> None:
    args = build_parser().parse_args(["evaluate", "--submission", "a.jsonl", "--gt", "b.jsonl"])
    assert (args.command, args.submission, args.gt) == ("evaluate", "a.jsonl", "b.jsonl")
    assert args.allow_partial is False
    assert callable(args.func)
