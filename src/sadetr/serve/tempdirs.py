"""A temp folder private to one server process, and the removal of those of dead processes.

The service and the browser app keep client uploads (and the app its transcoded videos) under one
folder per process, `<tmp>/<prefix><pid>-<random>/`, holding an exclusive `flock` on its `.lock` file
while the process lives. The folder is removed when the process ends normally; after a `kill -9` (or
a power cut) it is left behind, and the next server that starts with the same prefix removes every
such folder whose lock nobody holds. A lock dies with its process, so a reused pid cannot keep a
stale folder alive, and a live server's folder is never touched.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

log = logging.getLogger(__name__)

LOCK = ".lock"
GRACE_S = 60.0  # a folder without its lock file yet may be one being created right now


def _abandoned(folder: Path) -> bool:
    """True when no process holds `folder`'s lock (or it never got one and is older than GRACE_S)."""
    try:
        fh = open(folder / LOCK)  # noqa: SIM115 (closed below; flock works on a read-only handle)
    except FileNotFoundError:
        return time.time() - folder.stat().st_mtime > GRACE_S
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
    return True


def remove_stale(prefix: str, base: Path | None = None) -> list[Path]:
    """Remove the folders `<base>/<prefix>*` of this user that no live process holds; returns them."""
    base = Path(base or tempfile.gettempdir())
    removed = []
    for folder in sorted(base.glob(f"{prefix}*")):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            if _abandoned(folder):
                shutil.rmtree(folder)
                removed.append(folder)
        except OSError as err:  # another server removing it at the same time, or no permission
            log.debug("left %s: %s", folder, err)
    if removed:
        log.info("removed %d temp folder(s) left by servers that were killed: %s", len(removed), removed)
    return removed


class ProcessTempDir:
    """`with ProcessTempDir("sadetr-serve-") as path:` a locked folder of this process, removed on exit.

    Entering removes the stale folders of the same prefix first (`remove_stale`).
    """

    def __init__(self, prefix: str, base: Path | None = None) -> None:
        self.prefix = prefix
        self.base = base
        self.path: Path | None = None
        self._lock: IO[str] | None = None

    def __enter__(self) -> Path:
        remove_stale(self.prefix, self.base)
        self.path = Path(tempfile.mkdtemp(prefix=f"{self.prefix}{os.getpid()}-", dir=self.base))
        self._lock = open(self.path / LOCK, "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return self.path

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
        self.path, self._lock = None, None
