"""Paths built from user-controlled names, and output locations checked before any work starts.

A name read from a file (a `vid`, a `qid`, a video's stem) becomes a path only through `safe_child`,
which proves that the result stays inside its root: no absolute names, no `..` components, and,
after resolving symlinks, still below the (resolved) root. A root may itself be a symlink (a feature
folder on another disk); what lies inside it may not point out of it. The names of such roots (a
feature source read from a checkpoint) are checked lexically by `check_relative`.
`ensure_out_dir` / `ensure_out_file` refuse an `--out` of the wrong kind with one line before a run
starts, instead of a traceback (or lost work) when the first file is written. `read_user_text` reads a
user's text file, turning unreadable or non-UTF-8 content into one line naming it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from sadetr.core.errors import ConfigError, DataError

DEMO_DIR = Path("runs/demo")  # where `make demo` (`sadetr demo --out runs/demo`) writes
SAFE_QID = re.compile(r"[A-Za-z0-9_.-]+")


def safe_child(
    root: str | os.PathLike[str],
    name: str,
    *,
    field: str,
    path: str | os.PathLike[str] | None = None,
    line: int | None = None,
) -> Path:
    """`root / name`, refused with a `DataError` naming `path:line: field` when it would leave `root`.

    >>> str(safe_child("/data/feats", "vid_1.npz", field="vid"))
    '/data/feats/vid_1.npz'
    >>> safe_child("/data/feats", "../etc/x.npz", field="vid", path="a.jsonl", line=3)
    Traceback (most recent call last):
    ...
    sadetr.core.errors.DataError: a.jsonl:3: vid: '../etc/x.npz' leads outside /data/feats (a '..' component)
    """
    root = Path(root)
    check_relative(name, field=field, root=root, path=path, line=line)
    child = root / PurePosixPath(name)
    try:
        real_root, real_child = root.resolve(), child.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise DataError(f"{name!r} leads outside {root} (a symlink loop)", path, line, field) from None
    if not real_child.is_relative_to(real_root):
        raise DataError(f"{name!r} leads outside {root} (a symlink to {real_child})", path, line, field)
    return child


def check_relative(
    name: object,
    *,
    field: str,
    root: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    line: int | None = None,
) -> str:
    """`name` as a relative path that cannot climb out of the folder it is joined to: a non-empty
    string, no NUL, not absolute, no `..` component. Lexical only: `safe_child` also resolves symlinks;
    this alone is for names of folders that may themselves be symlinks (a feature source on another disk).

    >>> check_relative("clip_features", field="video_sources")
    'clip_features'
    """
    where = f"leads outside {root}" if root is not None else "must stay inside its folder"

    def refuse(why: str) -> DataError:
        return DataError(f"{name!r} {where} ({why})", path=path, line=line, field=field)

    if not isinstance(name, str) or not name:
        raise DataError(f"expected a non-empty name, got {name!r}", path=path, line=line, field=field)
    if "\x00" in name:
        raise refuse("a NUL byte")
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        raise refuse("an absolute path")
    if any(part == ".." for part in re.split(r"[/\\]", name)):
        raise refuse("a '..' component")
    return name


def check_qid(value: object, *, path: str | os.PathLike[str] | None = None, line: int | None = None) -> str:
    """A qid as it appears in a file name: an int, or a string of letters, digits, `_`, `.`, `-`.

    >>> check_qid(17), check_qid("q-17.b")
    ('17', 'q-17.b')
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and SAFE_QID.fullmatch(value):
        return value
    kind = "a boolean" if isinstance(value, bool) else type(value).__name__
    raise DataError(
        f"must be an integer or a string of letters, digits, '_', '.', '-', got {value!r} ({kind})",
        path=path,
        line=line,
        field="qid",
    )


def ensure_out_dir(path: str | os.PathLike[str], key: str = "--out") -> Path:
    """`path` as an output folder (made later, by the writers): an existing file, or a file where one of
    its parent folders should be, is refused."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            where = "is" if parent == path else f"is under {parent}, which is"
            raise ConfigError(f"{path} {where} an existing file, not a folder", key=key)
    return path


def ensure_out_file(path: str | os.PathLike[str], key: str = "--out") -> Path:
    """`path` as an output file: an existing folder (or a file where its folder should be) is refused."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is an existing folder; give a file name", key=key)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{path} is under {parent}, which is a file, not a folder", key=key)
    return path


def read_user_text(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of a user's file; unreadable or not UTF-8: a one-line `DataError` naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not a UTF-8 {what} ({err.reason} at byte {err.start})", path=path) from None
    except OSError as err:
        raise DataError(f"cannot read {what}: {err.strerror or err}", path=path) from None
