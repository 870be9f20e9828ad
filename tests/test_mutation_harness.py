"""The mutation harness (`tools/mutation.py`, run by `make mutation`, not in CI) stays usable: every
mutation's original snippet occurs exactly once in its source file, so a code change that moves or
rewrites a snippet fails here instead of silently dropping the mutation from the score."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _harness():
    """tools/mutation.py as a module (registered first: its dataclass needs `sys.modules`)."""
    name = "sadetr_mutation_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "mutation.py")
        assert spec is not None and spec.loader is not None
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_every_mutation_applies_exactly_once() -> None:
    harness = _harness()
    assert harness.check_mutations(ROOT) == []


def test_the_list_covers_the_core_math() -> None:
    harness = _harness()
    files = {m.path for m in harness.MUTATIONS}
    core = {
        "model/span_ops.py", "model/matcher.py", "model/losses.py", "model/denoising.py", "model/decoder.py",
        "model/encoder.py", "model/query_init.py", "eval/moment.py", "eval/highlight.py",
    }  # fmt: skip
    assert core <= files
    assert len(harness.MUTATIONS) >= 79


def test_check_reports_a_rotten_snippet(tmp_path: Path) -> None:
    # a snippet that no longer occurs (code rewritten) and one that occurs twice are both reported
    harness = _harness()
    m = harness.MUTATIONS[0]
    src = tmp_path / "src" / "sadetr" / m.path
    src.parent.mkdir(parents=True)
    (tmp_path / "tests").mkdir()
    for t in {t for x in harness.MUTATIONS for t in x.tests}:
        (tmp_path / "tests" / t).touch()
    for text, count in (("", 0), (m.original * 2, 2)):
        src.write_text(text)
        problems = [p for p in harness.check_mutations(tmp_path) if p.startswith(m.name + ":")]
        assert problems == [f"{m.name}: the original snippet occurs {count} times in {m.path}"]
