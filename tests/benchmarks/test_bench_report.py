"""Report generation for a large store: end-to-end seconds and peak memory of
``dabench report`` (every format, figures included) in its own process, which must not
import torch.

CI runs it once on a small store; the figures in docs/benchmarks.md come from
``DABENCH_BENCH_RECORDS=2000 pytest tests/benchmarks/test_bench_report.py -s
--benchmark-enable``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest
from report_store import BODY, HAND, make_store

RECORDS = int(os.environ.get("DABENCH_BENCH_RECORDS", "40"))
# CI checks the path once without figures (tests/test_report.py draws them); the measured
# run (DABENCH_BENCH_RECORDS set) makes every format
FORMATS = "md,tex,csv" if "DABENCH_BENCH_RECORDS" in os.environ else "tex,csv"
LABELS = [
    "source-only",
    "oracle",
    "ddc",
    "ddc/lambda-1",
    "ddc/mixed-bn-only",
    "dan",
    "dann",
    "causal-interventions",
    "causal-interventions/no-vae",
    "causal-interventions/sd-ud",
]
PAIRS = [
    HAND,
    BODY,
    ("synth-hand-clean", "synth-hand-style"),
    ("synth-body-clean", "synth-body-style"),
]

CODE = """
import resource, sys, time
from bench.cli import main
start = time.perf_counter()
assert main(['report', sys.argv[1], '--out', sys.argv[2], '--format', sys.argv[3]]) == 0
wall = time.perf_counter() - start
heavy = sorted({'torch', 'timm', 'ray'} & set(sys.modules))
print(f"WALL {wall:.2f} RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} HEAVY {heavy}")
"""


def _value(label: str, pair: tuple[str, str], seed: int, metric: str) -> float:
    return 50.0 + 3 * LABELS.index(label) + (seed % 7) * 0.5 + 10 * PAIRS.index(pair)


@pytest.mark.slow
def test_report_of_a_large_store(tmp_path, benchmark):
    seeds = max(1, RECORDS // (len(LABELS) * len(PAIRS)))
    results = make_store(tmp_path / "results", LABELS, PAIRS, range(seeds), _value)
    n = len(list(results.glob("*/record.json")))

    def run() -> str:
        return subprocess.run(
            [sys.executable, "-c", CODE, str(results), str(tmp_path / "report"), FORMATS],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    start = time.perf_counter()
    out = benchmark.pedantic(run, rounds=1, iterations=1)
    total = time.perf_counter() - start
    line = next(x for x in out.splitlines() if x.startswith("WALL"))
    _, wall, _, rss, _, heavy = line.split(" ", 5)
    benchmark.extra_info.update(records=n, wall_s=float(wall), peak_rss_mb=int(rss) / 1024)
    print(
        f"\n{n} records: report {float(wall):.1f} s in-process, {total:.1f} s with the "
        f"interpreter start, peak RSS {int(rss) / 1024:.0f} MiB, heavy imports {heavy}"
    )
    assert heavy == "[]", f"dabench report imported {heavy}"
    assert (tmp_path / "report" / "tables.tex").exists()
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss > 0
