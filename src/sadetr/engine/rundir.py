"""The run directory's guard: one training at a time (an exclusive lock), and no silent overwrite.

`RunDirLock(run_dir)` takes a non-blocking exclusive lock on `<run_dir>/.sadetr.lock` (an OS file lock
via `filelock`: released when the process ends, even by kill -9, so a stale lock file never blocks a
resume). `check_fresh` refuses to start a new run over a directory that already holds one, unless
`--overwrite` asked for it; `clear_run` then removes the old run's files so that none of them (an old
`best.ckpt`, old TensorBoard events) survives into the new run.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import TracebackType

from sadetr.core.errors import ConfigError

LOCK_NAME = ".sadetr.lock"
# files a training writes into its run directory (trainer.py, seeds.py)
RUN_FILES = (
    "config.yaml",
    "last.ckpt",
    "best.ckpt",
    "metrics.jsonl",
    "best_metrics.json",
    "seeds_summary.json",
)
_SEED_DIR = re.compile(r"seed-?\d+")


def _holds_run_files(path: Path) -> list[str]:
    names = [name for name in RUN_FILES if (path / name).exists()]
    names += sorted(p.name for p in path.glob("*_preds.jsonl"))
    if (path / "tb").is_dir():
        names.append("tb/")
    return names


def existing_run_files(run_dir: str | Path) -> list[str]:
    """The files of an earlier training in `run_dir` (its own and those of `seed<k>/` sub-runs)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = _holds_run_files(run_dir)
    for sub in sorted(run_dir.iterdir()):
        if sub.is_dir() and _SEED_DIR.fullmatch(sub.name) and _holds_run_files(sub):
            found.append(f"{sub.name}/")
    return found


def check_fresh(run_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse a new training in a directory that already holds a run (unless `overwrite`)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a directory", key="--out")
    found = existing_run_files(run_dir)
    if found and not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ConfigError(
            f"{run_dir} already holds a run ({shown}): continue it with --resume, pick a new --out, "
            "or replace it with --overwrite",
            key="--out",
        )


def clear_run(run_dir: str | Path) -> list[str]:
    """Remove the files of an earlier run from `run_dir` (for `--overwrite`); returns what was removed.

    Only the run's own files go (`RUN_FILES`, `*_preds.jsonl`, `tb/`, `seed<k>/` sub-runs); anything
    else the user keeps in the directory stays.
    """
    run_dir = Path(run_dir)
    removed = existing_run_files(run_dir)
    for name in removed:
        path = run_dir / name.rstrip("/")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return removed


class RunDirLock:
    """Exclusive, non-blocking lock on a run directory; a second holder gets a `ConfigError`.
    `holder` and `key` name the kind of writer and the option in the refusal (a corpus index uses it too).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with RunDirLock(d):
    ...     RunDirLock(d).acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sadetr.core.errors.ConfigError: --out: ... is in use by another training (lock file .../.sadetr.lock)
    """

    def __init__(self, run_dir: str | Path, holder: str = "training", key: str = "--out") -> None:
        from filelock import FileLock

        self.run_dir = Path(run_dir)
        self.holder, self.key = holder, key
        self.path = self.run_dir / LOCK_NAME
        self._lock = FileLock(str(self.path), timeout=0)

    def acquire(self) -> RunDirLock:
        from filelock import Timeout

        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"{self.run_dir} exists and is not a directory", key=self.key)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:
            raise ConfigError(
                f"{self.run_dir} is in use by another {self.holder} (lock file {self.path})", key=self.key
            ) from None
        except OSError as err:  # read-only or full file system, a file in the way of a parent, ...
            raise ConfigError(
                f"cannot create or lock {self.run_dir}: {err.strerror or err}", key=self.key
            ) from None
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
