"""Atomic writes: the target is replaced whole or not at all, with normal file permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sadetr.core.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_creates_parents_and_uses_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.json"
    old = os.umask(0o022)
    try:
        atomic_write_text(target, "{}")
    finally:
        os.umask(old)
    assert target.read_text() == "{}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0o600


def test_failed_write_keeps_old_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.bin"]


def test_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
