"""What a running grid tells its user: nodes done, running and failed, the time elapsed and
an estimate of what remains, so that a long run is never silent."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol


class _Node(Protocol):
    label: str
    train: dict

    @property
    def node_id(self) -> str: ...


def duration(seconds: float) -> str:
    """``7 min 05 s``, or ``42 s`` under a minute."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class GridProgress:
    """Bookkeeping of one grid run. The estimate of what remains scales each pending node
    by the seconds per training step of finished nodes of the same label (or of all
    finished nodes) and divides by the parallelism seen so far; before anything finishes
    there is none."""

    def __init__(
        self,
        nodes: Iterable[_Node],
        log: Callable[[str], None],
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pending = {n.node_id: n for n in nodes}
        self.total = len(self.pending)
        self.log, self.every, self.clock = log, every, clock
        self.start = self.last_line = clock()
        self.running: dict[str, float] = {}
        self.finished = self.failed = 0
        self.per_step: dict[str, list[float]] = {}
        self.parallel = 1

    def counter(self) -> str:
        return f"[{self.finished}/{self.total}]"

    def started(self, node_id: str) -> None:
        self.running[node_id] = self.clock()
        self.parallel = max(self.parallel, len(self.running))

    def done(self, node_id: str, ok: bool = True) -> str:
        """Mark a node finished; returns the counter to print with its result."""
        began = self.running.pop(node_id, None)
        node = self.pending.pop(node_id, None)
        self.finished += 1
        self.failed += not ok
        if ok and began is not None and node is not None:
            seconds = self.clock() - began
            self.per_step.setdefault(node.label, []).append(seconds / _steps(node))
        return self.counter()

    def remaining(self) -> float | None:
        """Estimated seconds until every node has finished; None before the first finishes."""
        if not self.per_step:
            return None
        every = statistics.median(v for vs in self.per_step.values() for v in vs)
        now = self.clock()
        work = 0.0
        for node_id, node in self.pending.items():
            rate = statistics.median(self.per_step.get(node.label, [every]))
            left = rate * _steps(node)
            if node_id in self.running:
                left = max(left - (now - self.running[node_id]), 0.0)
            work += left
        return work / self.parallel

    def line(self) -> str:
        left = self.remaining()
        estimate = "estimate after the first node" if left is None else f"~{duration(left)} left"
        return (
            f"  … {self.finished}/{self.total} done, {len(self.running)} running, "
            f"{self.failed} failed; {duration(self.clock() - self.start)} elapsed, {estimate}"
        )

    def tick(self) -> None:
        """Log the progress line if ``every`` seconds passed since the last one."""
        now = self.clock()
        if now - self.last_line >= self.every:
            self.last_line = now
            self.log(self.line())


def _steps(node: _Node) -> int:
    return max(int(node.train.get("steps", 1)), 1)


# Parts of a trial's own time, as its record's timings name them (data loading is part of
# training); set-up is what remains of the total (data views, networks, the warm start).
_TRIAL_PARTS = (
    ("train_seconds", "training"),
    ("eval_seconds", "evaluation"),
    ("checkpoint_seconds", "checkpoints"),
    ("write_seconds", "writing"),
)


def time_breakdown(
    wall: float, driver: Mapping[str, float], trial_timings: Iterable[Mapping[str, Any]]
) -> str:
    """Where a run's wall time went: the driver's phases (``prepare``, ``ray_start``,
    ``nodes``; see ``RunSummary.timings``) and, summed over the trials that ran, the parts
    of their own time with their average concurrency during the node phase."""
    phases = [("data", "prepare"), ("Ray start", "ray_start"), ("nodes", "nodes")]
    shown = [f"{name} {duration(driver[key])}" for name, key in phases if key in driver]
    rest = wall - sum(driver.get(key, 0.0) for _, key in phases)
    text = f"wall {duration(wall)} = " + " + ".join([*shown, f"other {duration(rest)}"])
    timings = [t for t in trial_timings if t.get("total_seconds")]
    total = sum(t["total_seconds"] for t in timings)
    if not total:
        return text
    parts = {label: sum(t.get(key, 0.0) for t in timings) for key, label in _TRIAL_PARTS}
    parts["set-up"] = total - sum(parts.values())
    data = sum(t.get("data_seconds", 0.0) for t in timings)
    shares = [f"{label} {100 * v / total:.0f}%" for label, v in parts.items()]
    shares[0] += f" (data loading {100 * data / total:.0f}%)"
    text += f"; trials' own time {duration(total)}: " + ", ".join(shares)
    if driver.get("nodes"):
        text += f"; {total / driver['nodes']:.2f} trials at a time on average"
    return text
