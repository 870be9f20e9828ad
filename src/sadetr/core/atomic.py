"""Atomic file output for every layer: write a temp file beside the target, then `os.replace` it.

Readers see the old file or the new one, never a partial one. The temp file is fsynced before the
rename and the folder after it, so that a power loss cannot leave a renamed but empty file.
A write that fails (full disk, no permission) removes its temp file, leaves the previous target
untouched and raises `OutputError` saying so (`library_write_error` turns the RuntimeError that torch.save
and faiss raise for a failed write into the `OSError` this expects). A killed writer leaves at most a hidden
`.<name>.<pid>-*.tmp` file; `clean_stale=True` removes those of dead processes before the next write
of the same target. Standard library only, so the numpy-only evaluation can use it too.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sadetr.core.errors import OutputError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _default_mode() -> int:
    """0o666 minus the process umask: what `open(path, "w")` would give (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files of `path` left by writers that no longer run (on this machine); returns them."""
    path = Path(path)
    # ours: .NAME.PID-XXXXXXXX.tmp; before pids were added: .NAME.XXXXXXXX.tmp (mkstemp's 8 characters)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)-)?[a-z0-9_]{{8}}\.tmp")
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(tmp.name)
        if match is None:
            continue
        pid = int(match[1]) if match[1] else None
        if pid == os.getpid() or (pid is not None and _pid_alive(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _fsync(path: str | os.PathLike[str], directory: bool = False) -> None:
    if directory and os.name == "nt":  # Windows cannot open a folder to sync it
        return
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def library_write_error(err: BaseException, folder: str | os.PathLike[str]) -> OSError:
    """The `OSError` of a write that a library reported as another exception (torch.save: "[enforce fail
    at inline_container.cc:672] . unexpected pos ..."; faiss: "... write error ... (No space left on
    device)"): ENOSPC when it says so or when `folder`'s file system is (almost) full, else EIO with the
    library's first line."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    try:
        full = shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        full = False
    if full or "No space left" in str(err):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return OSError(errno.EIO, f"write failed ({text[:200]})")


def _output_error(path: Path, err: OSError) -> OutputError:
    why = "no space left on device" if err.errno in _NO_SPACE else (err.strerror or str(err))
    previous = "the previous file is intact" if path.exists() else "nothing was written"
    return OutputError(f"cannot write {path}: {why}; {previous} (temp file removed)")


@contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, durable: bool = True, clean_stale: bool = False
) -> Iterator[Path]:
    """Yield a temp path beside `path`; on normal exit it replaces `path`, on error it is removed.

    `durable` fsyncs the file before and its folder after the rename. An `OSError` while writing or
    renaming becomes an `OutputError` naming `path`.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if clean_stale:
            remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise _output_error(path, err) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _output_error(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        try:
            _fsync(path.parent, directory=True)
        except OSError as err:  # the new file is in place; only its durability is unconfirmed
            raise OutputError(f"wrote {path}, but syncing its folder failed: {err.strerror or err}") from None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
