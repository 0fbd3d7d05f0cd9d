"""The project's own metric-regression test (bench.pytest_plugin on itself): the committed
quickstart store against the committed baseline. Update with
``pytest tests/test_quickstart_regression.py --dabench-update`` after an intended change to
the records or to how a store is loaded and averaged."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_quickstart_metrics_match_the_baseline(dabench_regression):
    dabench_regression.check(
        ROOT / "reports" / "quickstart" / "records",
        ROOT / "tests" / "baselines" / "quickstart-metrics.csv",
        metrics=["mpjpe", "pa_mpjpe", "n_mpjpe", "pck2d_005", "pck3d_150"],
        splits=["target_test", "source_val"],
    )
