"""Stops the local Ray a ``dabench run`` started if the run dies without stopping it.

Ray's GCS and raylet share the driver's fate, but its agents (dashboard and runtime-env
agents) outlive a driver killed with SIGKILL and hold memory and ports until the machine
restarts. ``watch()`` starts this module as a separate process that notes the driver's
descendants every second (Ray's raylet starts its agents after ``ray.init`` returns) while it
waits on a pipe from the driver; when the pipe closes — at the end of a normal run, after
``ray.shutdown`` — or the driver dies, it kills whichever of them remain.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psutil


def _descendants(pid: int, known: dict[int, float]) -> None:
    """Add ``pid``'s descendants (except this process) to ``known`` (pid → creation time)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for child in children:
        try:
            if child.pid != os.getpid():
                known.setdefault(child.pid, child.create_time())
        except psutil.NoSuchProcess:
            continue


@contextmanager
def watch() -> Iterator[None]:
    """Call right after ``ray.init`` started a local Ray; the block is the run, and it must
    end after ``ray.shutdown``."""
    reaper = subprocess.Popen(
        [sys.executable, "-m", "bench.reaper", str(os.getpid())], stdin=subprocess.PIPE
    )
    try:
        yield
    finally:
        assert reaper.stdin is not None
        reaper.stdin.close()
        try:
            reaper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            reaper.kill()


def reap(known: dict[int, float], grace: float = 5.0) -> int:
    """Terminate, then kill, those of ``known`` still alive (the creation time guards
    against a reused pid); returns how many there were."""
    alive = []
    for pid, created in known.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, stubborn = psutil.wait_procs(alive, timeout=grace)
    for proc in stubborn:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    return len(alive)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def main(driver: int) -> None:
    known: dict[int, float] = {}
    try:
        parent = psutil.Process(driver)
    except psutil.NoSuchProcess:
        return
    while _alive(parent):
        _descendants(driver, known)
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
        if ready and not os.read(sys.stdin.fileno(), 1):  # closed: the run is over
            break
    reap(known)


if __name__ == "__main__":
    main(int(sys.argv[1]))
