"""The README's commands run as written: every `sadetr` line of its shell blocks parses with the real
command line (flags spelled right, values of the right type), the short ones run, every Python block
compiles, and every `make` target it names exists. The README stays under 300 lines."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# Commands that finish in seconds without data or weights: run as written.
SHORT = ("sadetr --help", "sadetr reproduce")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def shell_commands() -> list[str]:
    """Every command line of the bash blocks: continuations joined, comments dropped, `a && b` split."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def sadetr_commands() -> list[str]:
    out = []
    for command in shell_commands():
        words = shlex.split(command)
        if words and words[0] in ("sadetr", ".venv/bin/sadetr"):
            out.append(shlex.join(["sadetr", *words[1:]]))
    return out


def test_the_readme_is_short_and_names_the_two_commands() -> None:
    assert len(README.splitlines()) <= 300
    assert "make demo" in README and "make test" in README
    assert not re.search(r"\b[A-Z]+_(ROW|TABLE)\b", README)  # no unfilled placeholder
    assert "NOTES.md" not in README


def test_every_make_target_it_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    named = {w.split()[1] for w in re.findall(r"`make [\w-]+", README)} | {
        c.split()[1] for c in shell_commands() if c.startswith("make ")
    }
    assert named and named <= targets, named - targets


@pytest.mark.parametrize("command", sadetr_commands())
def test_every_sadetr_command_parses(command: str) -> None:
    from sadetr.cli.main import build_parser

    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: 0 after --help, 2 for a usage error
        assert exit_.code == 0, f"{command!r} does not parse"


@pytest.mark.parametrize("command", [c for c in sadetr_commands() if c.startswith(SHORT)])
def test_the_short_commands_run(command: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "sadetr", *shlex.split(command)[1:]], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()


def test_the_short_commands_exist() -> None:
    assert any(c.startswith("sadetr reproduce") for c in sadetr_commands())


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_every_python_block_compiles(index: int) -> None:
    source = blocks("python")[index]
    compile(source, f"README.md python block {index}", "exec")
    for module in re.findall(r"^from (sadetr[\w.]*) import", source, flags=re.M):
        __import__(module)  # the imports name real modules


def test_every_relative_link_points_to_a_file_of_the_repository() -> None:
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", README) if "://" not in t]
    files = [t for t in targets if t]
    assert files, "expected links to the docs"
    assert [t for t in files if not (ROOT / t).exists()] == []
