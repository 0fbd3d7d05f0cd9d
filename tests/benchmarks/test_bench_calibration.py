"""The calibration figure (bench/calibration.py): samples/s of a bare regnetx_002 training
step on one thread. Every wall time in docs/benchmarks.md is stated with it, and the
quickstart's cost is wall seconds × this figure.

Run with ``pytest tests/benchmarks/test_bench_calibration.py --benchmark-enable -s``.
"""

from __future__ import annotations

import pytest

from bench.calibration import calibrate


@pytest.mark.benchmark(group="calibration")
def test_calibration_figure(benchmark):
    rounds = 1 if benchmark.disabled else 5
    cal = benchmark.pedantic(calibrate, kwargs={"rounds": rounds}, rounds=1, iterations=1)
    print(f"\ncalibration: {cal}")
    assert cal.low <= cal.samples_per_s <= cal.high
