"""The mutation harness (`tools/mutation.py`, run by `make mutation`, not in CI) stays usable: every
mutation's original snippet occurs exactly once in its source file, so a code change that moves or
rewrites a snippet fails here instead of silently dropping the mutation from the score."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def harness(tool):
    """tools/mutation.py as a module."""
    return tool("mutation")


def test_every_mutation_applies_exactly_once(harness) -> None:
    assert harness.check_mutations(ROOT) == []


def test_the_list_covers_the_core_math(harness) -> None:
    files = {m.path for m in harness.MUTATIONS}
    core = {
        "model/span_ops.py", "model/matcher.py", "model/losses.py", "model/denoising.py", "model/decoder.py",
        "model/encoder.py", "model/query_init.py", "eval/moment.py", "eval/highlight.py",
    }  # fmt: skip
    assert core <= files
    assert len(harness.MUTATIONS) >= 79


def test_check_reports_a_rotten_snippet(harness, tmp_path: Path) -> None:
    # a snippet that no longer occurs (code rewritten) and one that occurs twice are both reported
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
