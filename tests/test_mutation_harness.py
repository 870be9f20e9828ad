"""The mutation harness (`tools/mutation.py`, `make mutation`, not in CI) locates each mutation by its
target (a function, class or module-level name, found anywhere under src/sadetr by parsing the code) and
its snippet inside that target: moving code between files keeps every mutation, and a rewritten snippet
is reported by `make mutation` instead of failing the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def harness(tool):
    """tools/mutation.py as a module."""
    return tool("mutation")


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "src" / "sadetr" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


MODULE = """SCALE = 2.0


class Head:
    def forward(self, x):
        y = x * SCALE
        return y + 1


def helper(x):
    return x * SCALE
"""


def test_a_target_is_found_in_whichever_module_defines_it(harness, tmp_path: Path) -> None:
    m = harness.Mutation("head.plus", "Head.forward", "return y + 1", "return y - 1", ())
    for name in ("a.py", "deep/moved.py"):  # the same code in another file: the same site
        root = _package(tmp_path / name.replace("/", "_"), {name: MODULE})
        site = harness.locate(m, harness.index_sources(root))
        assert site.path == root / "src" / "sadetr" / name
        assert MODULE[site.offset : site.offset + len(m.original)] == m.original
    # the snippet is searched inside the target only: `x * SCALE` occurs twice in the file, once here
    inner = harness.Mutation("head.scale", "helper", "x * SCALE", "x / SCALE", ())
    root = _package(tmp_path / "one", {"a.py": MODULE})
    assert MODULE.count("x * SCALE") == 2
    site = harness.locate(inner, harness.index_sources(root))
    assert site.offset == MODULE.rindex("x * SCALE")
    const = harness.Mutation("scale", "SCALE", "SCALE = 2.0", "SCALE = 3.0", ())
    assert harness.locate(const, harness.index_sources(root)).offset == 0


def test_what_cannot_be_located_is_reported_not_guessed(harness, tmp_path: Path) -> None:
    root = _package(tmp_path, {"a.py": MODULE, "b.py": "def helper(x):\n    return x\n"})
    index = harness.index_sources(root)
    missing = harness.locate(harness.Mutation("m", "Head.backward", "y", "z", ()), index)
    assert "no function" in missing
    twice = harness.locate(harness.Mutation("m", "helper", "return x", "return 0", ()), index)
    assert "defined 2 times" in twice
    chosen = harness.locate(harness.Mutation("m", "b:helper", "return x", "return 0", ()), index)
    assert chosen.path.name == "b.py"  # a module stem picks one of several definitions
    rewritten = harness.locate(harness.Mutation("m", "Head.forward", "return y * 2", "return y", ()), index)
    assert "occurs 0 times" in rewritten


def test_the_list_covers_the_core_math_and_most_of_it_is_located(harness) -> None:
    sites, problems = harness.check_mutations(ROOT)
    files = {site.path.relative_to(ROOT / "src" / "sadetr").as_posix() for site in sites.values()}
    assert {"span_ops.py", "matcher.py", "losses.py", "denoising.py", "decoder.py", "encoder.py"} <= {
        Path(f).name for f in files
    }
    assert len(harness.MUTATIONS) >= 150
    # a refactor may leave a few snippets to update (`make mutation` lists them); not most of them
    assert len(sites) >= 0.8 * len(harness.MUTATIONS), problems
