"""Files that appear whole or not at all: records, predictions, weights, checkpoints,
reports and images are written beside their final path and renamed into place; and the
file lock under which shared outputs are made once."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: renamed onto ``path`` when the block
    ends, removed if it raises. The suffix is kept (``report.partial-<pid>.md``) because
    numpy and matplotlib choose the format from it; the pid keeps concurrent writers
    apart."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing) for the block's duration, so
    that concurrent trials never make the same shard or artifact twice."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock on ``path`` now (a lock of a process that died
    is released with it)."""
    try:
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except FileNotFoundError:
        return False
    return False
