"""The driver's cost per trial on a large grid: CPU seconds of the process that runs
``run_grid`` (Tune's event loop, the DAG searcher, progress, records) and its memory, over a
grid of tiny trials (a 0.24 M-parameter network, one training step, one evaluation). What
must stay flat as grids grow to thousands of trials is the driver's CPU per trial in the
last quarter of the grid against the first, and its memory.

CI runs it once with a small grid; the figures in docs/benchmarks.md come from
``DABENCH_BENCH_TRIALS=1000 pytest tests/benchmarks/test_bench_driver.py -s
--benchmark-enable``.
"""

from __future__ import annotations

import os
import resource
import threading
import time

import psutil
import pytest
import yaml

from bench.grid import load_grid
from bench.runner import TUNE_RUN_NODES, run_grid

TRIALS = int(os.environ.get("DABENCH_BENCH_TRIALS", "20"))


def tiny_grid(directory, trials: int):
    seeds = list(range((trials + 1) // 2))
    grid = {
        "name": "driver-scale",
        "methods": ["source-only", "oracle"],
        "pairs": [{"source": "synth-hand-clean", "target": "synth-hand-wild"}],
        "seeds": seeds,
        "data": {"n_train": 32, "n_test": 8, "size": 32},
        "model": {"backbone": "regnetx_002", "feature_stride": 16},
        "train": {
            "steps": 1,
            "batch_size": 8,
            "eval_every": 1,
            "warmup_steps": 0,
            "eval_batch_size": 8,
            "log_every": 1,
        },
    }
    path = directory / "driver-scale.yaml"
    path.write_text(yaml.safe_dump(grid))
    return load_grid(path)


class _Sampler(threading.Thread):
    """Every second: records written so far, the driver's CPU seconds and its RSS."""

    def __init__(self, results) -> None:
        super().__init__(daemon=True)
        self.results, self.samples, self.stop = results, [], threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.wait(1.0):
            usage = resource.getrusage(resource.RUSAGE_SELF)
            done = len(list(self.results.glob("*/record.json")))
            self.samples.append((done, usage.ru_utime + usage.ru_stime, me.memory_info().rss))


@pytest.mark.slow
@pytest.mark.benchmark(group="driver")
def test_driver_cost_per_trial_stays_flat(benchmark, tmp_path):
    grid = tiny_grid(tmp_path, TRIALS)
    data = tmp_path / "data"
    results = tmp_path / "results"
    sampler = _Sampler(results)
    figures = {}

    def run():
        sampler.start()
        started = time.perf_counter()
        summary = run_grid(
            grid, results, executor="ray", data_root=data, progress=False, log=lambda m: None
        )
        figures["wall"] = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        return summary

    summary = benchmark.pedantic(run, rounds=1, iterations=1)
    n = len(grid.trials)
    assert summary.ran == n and not summary.failed
    samples = sampler.samples
    quarter = n // 4

    def cpu_at(count: int) -> float:  # driver CPU seconds when `count` records existed
        return next(cpu for done, cpu, _ in samples if done >= count)

    first = (cpu_at(quarter) - cpu_at(1)) / max(1, quarter - 1)
    last = (cpu_at(n) - cpu_at(n - quarter)) / quarter

    def rss_at(count: int) -> float:  # driver RSS in MiB when `count` records existed
        return next(rss for done, _, rss in samples if done >= count) / 2**20

    peak = max(rss for *_, rss in samples) / 2**20
    own = sum(r["timings"]["total_seconds"] for r in summary.records)
    text = (
        f"{n} trials in {figures['wall']:.0f} s wall (trials' own time {own:.0f} s); driver "
        f"CPU per trial {first * 1e3:.0f} ms in the first quarter, {last * 1e3:.0f} ms in "
        f"the last; driver RSS {rss_at(quarter):.0f} MiB at a quarter, {rss_at(n):.0f} MiB "
        f"at the end ({(rss_at(n) - rss_at(quarter)) * 1024 / (n - quarter):.0f} kiB per "
        f"trial), peak {peak:.0f} MiB; Tune runs of {TUNE_RUN_NODES} nodes"
    )
    print("\n" + text)
    benchmark.extra_info["summary"] = text
