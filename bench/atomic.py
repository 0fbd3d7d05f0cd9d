"""Files that appear whole or not at all: records, predictions, weights, checkpoints,
reports and images are written beside their final path and renamed into place."""

from __future__ import annotations

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
