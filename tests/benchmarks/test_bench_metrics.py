"""Metric suite speed: :func:`bench.metrics.evaluate` on a hand21 test set.

Run for real with ``pytest tests/benchmarks/test_bench_metrics.py --benchmark-enable``
(100,000 samples; target < 2 s on the 2-core dev machine); ``extra_info["seconds"]`` holds the
median.  Under the default ``--benchmark-disable`` it runs once on 5,000 samples as a test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from statistics import median
from typing import Any

import numpy as np

from bench.metrics import evaluate

K, SIZE = 21, 256


def random_set(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt3d = rng.normal(0, 40, (n, K, 3)) + np.array([0.0, 0.0, 600.0])
    gt2d = rng.uniform(-0.5, SIZE - 0.5, (n, K, 2))
    return {
        "pred2d": gt2d + rng.normal(0, 6, gt2d.shape),
        "gt2d": gt2d,
        "pred3d": gt3d + rng.normal(0, 15, gt3d.shape),
        "gt3d": gt3d,
        "vis": rng.random((n, K)) < 0.85,
    }


def timed(fn: Callable[[], Any], times: list[float]) -> Callable[[], Any]:
    def run() -> Any:
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        return out

    return run


def test_bench_evaluate_hand21(benchmark: Any) -> None:
    n = 5_000 if benchmark.disabled else 100_000
    d = random_set(n)
    times: list[float] = []
    report = benchmark.pedantic(
        timed(lambda: evaluate(**d, joint_set="hand21", image_size=SIZE), times),
        rounds=3,
        iterations=1,
    )
    assert report.per_sample["err3d"].shape == (n, K)
    assert np.isfinite(report.overall["mpjpe"])
    benchmark.extra_info["samples"] = n
    benchmark.extra_info["seconds"] = round(median(times), 3)
