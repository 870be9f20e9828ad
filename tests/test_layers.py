"""The floors of docs/CONTRACTS.md are enforced: `lint-imports` (run by `make lint`, so by `make test`)
passes on this tree and fails, naming the arrow, when a lower floor imports a higher one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")


def _lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [str(LINT_IMPORTS), "--config", str(ROOT / ".importlinter"), "--no-cache"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of src/ to plant imports in."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(
        ROOT / "src" / "sadetr", root / "src" / "sadetr", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def test_the_tree_keeps_its_floors(tree: Path) -> None:
    result = _lint(tree / "src", tree)
    assert result.returncode == 0, result.stdout
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, planted, arrow",
    [
        (
            "model/layers.py",
            "import sadetr.engine.trainer",
            "sadetr.model is not allowed to import sadetr.engine",
        ),
        ("engine/trainer.py", "import sadetr.inference.predictor", "sadetr.engine is not allowed to import"),
        (
            "model/span_ops.py",
            "import sadetr.data.dataset",
            "sadetr.model is not allowed to import sadetr.data",
        ),
        ("eval/moment.py", "import torch", "sadetr.eval is not allowed to import torch"),
    ],
)
def test_a_wrong_import_breaks_the_check(tree: Path, module: str, planted: str, arrow: str) -> None:
    target = tree / "src" / "sadetr" / module
    pristine = target.read_text()
    try:
        target.write_text(pristine + f"\n{planted}  # planted\n")
        result = _lint(tree / "src", tree)
    finally:
        target.write_text(pristine)
    assert result.returncode != 0
    assert arrow in result.stdout, result.stdout
