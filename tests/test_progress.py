"""The grid progress line: counts, elapsed time and the estimate of what remains."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bench.progress import GridProgress, duration, time_breakdown


@dataclass
class FakeNode:
    node_id: str
    label: str
    train: dict = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_duration_reads_as_minutes_and_seconds():
    assert duration(42.4) == "42 s"
    assert duration(425) == "7 min 05 s"


def test_estimate_scales_finished_nodes_by_their_steps_and_the_parallelism():
    clock, lines = Clock(), []
    nodes = [
        FakeNode("a", "source-only", {"steps": 1000}),
        FakeNode("b", "source-only", {"steps": 1000}),
        FakeNode("c", "ddc", {"steps": 100}),
        FakeNode("d", "dann", {"steps": 200}),
    ]
    p = GridProgress(nodes, lines.append, every=30.0, clock=clock)
    assert p.remaining() is None and "estimate after the first node" in p.line()
    p.started("a")
    p.started("b")
    clock.now = 100.0
    assert p.done("a") == "[1/4]"  # 0.1 s per step of source-only, two at a time
    # b: 1000 steps at 0.1 s, 100 s already spent -> 0; c, d: no rate of their own, the
    # median of all finished (0.1 s/step) -> 10 s + 20 s; over 2 in parallel
    assert p.remaining() == pytest.approx(15.0)
    p.started("c")
    clock.now = 130.0
    p.done("b", ok=False)  # a failed node counts, but teaches no rate
    assert p.per_step == {"source-only": [0.1]}
    line = p.line()
    assert "2/4 done, 1 running, 1 failed; 2 min 10 s elapsed" in line


def test_progress_line_is_logged_at_most_every_interval():
    clock, lines = Clock(), []
    p = GridProgress([FakeNode("a", "x")], lines.append, every=30.0, clock=clock)
    clock.now = 10.0
    p.tick()
    assert lines == []
    clock.now = 31.0
    p.tick()
    p.tick()
    assert len(lines) == 1 and "0/1 done, 0 running" in lines[0]


def test_time_breakdown_accounts_for_the_wall_time_and_the_trials_own_time():
    driver = {"prepare": 20.0, "ray_start": 10.0, "nodes": 100.0}
    trials = [
        {
            "total_seconds": 100.0,
            "train_seconds": 80.0,
            "data_seconds": 4.0,
            "eval_seconds": 10.0,
            "checkpoint_seconds": 1.0,
            "write_seconds": 1.0,
        },
        {
            "total_seconds": 60.0,
            "train_seconds": 48.0,
            "data_seconds": 2.0,
            "eval_seconds": 6.0,
            "checkpoint_seconds": 1.0,
            "write_seconds": 1.0,
        },
        {"total_seconds": 0.0},  # failed before it started: no time to share
    ]
    text = time_breakdown(135.0, driver, trials)
    assert text.startswith("wall 2 min 15 s = data 20 s + Ray start 10 s + nodes 1 min 40 s")
    assert "other 5 s" in text
    assert "trials' own time 2 min 40 s: training 80% (data loading 4%)" in text
    assert "evaluation 10%, checkpoints 1%, writing 1%, set-up 8%" in text
    assert text.endswith("1.60 trials at a time on average")
    local = time_breakdown(50.0, {"prepare": 1.0, "nodes": 48.0}, [])
    assert local == "wall 50 s = data 1 s + nodes 48 s + other 1 s"
