"""bench.pytest_plugin: the dabench_regression fixture run in small in-process pytest
sessions (pytester) against tiny stores written here, plus its pure functions directly."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench import store
from bench.errors import DabenchError
from bench.pytest_plugin import compare, metric_table, read_baseline, write_baseline
from bench.selection import SELECTION_RULES

pytest_plugins = ["pytester"]

QUICKSTART = Path(__file__).parents[1] / "reports" / "quickstart" / "records"
TEMPLATE: dict[str, Any] = json.loads(
    next(iter(sorted(QUICKSTART.glob("*/record.json")))).read_text()
)
PAIR = ("synth-hand-clean", "synth-hand-wild")


def add_trial(
    results: Path,
    label: str,
    seed: int = 0,
    *,
    mpjpe: float = 100.0,
    pck: float = 80.0,
    pair: tuple[str, str] = PAIR,
    version: str = "2",
    status: str = "ok",
) -> None:
    """A valid record (a quickstart one, edited) with target-test ``mpjpe`` (+1 per rule,
    so that rules differ) and ``pck2d_005`` under every selection rule."""
    rec = copy.deepcopy(TEMPLATE)
    trial_id = hashlib.sha1(f"{label}|{pair}|{seed}".encode()).hexdigest()[:12]
    rec.update(trial_id=trial_id, label=label, seed=seed, status=status, metrics_version=version)
    rec["pair"] = {**rec["pair"], "source": pair[0], "target": pair[1]}
    rec["metrics_by_rule"] = {
        rule: {"metrics": {"target_test": {"mpjpe": mpjpe + i, "pck2d_005": pck}}, "step": 10}
        for i, rule in enumerate(SELECTION_RULES)
    }
    store.write_trial(results, rec, None)


@pytest.fixture
def results(tmp_path) -> Path:
    """A store: ddc seeds 0, 1 (mpjpe 100, 102) and dann seed 0 (mpjpe 120)."""
    path = tmp_path / "results"
    add_trial(path, "ddc", 0, mpjpe=100.0)
    add_trial(path, "ddc", 1, mpjpe=102.0)
    add_trial(path, "dann", 0, mpjpe=120.0)
    return path


def session(pytester, results: Path, baseline: Path, *args: str, **check: Any):
    """Run a one-test session that checks ``results`` against ``baseline``."""
    # a basename of its own: a full run has already imported tests/test_metrics.py
    pytester.makepyfile(
        test_user_store_regression=f"""
def test_metrics(dabench_regression):
    dabench_regression.check({str(results)!r}, {str(baseline)!r}, **{check!r})
"""
    )
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_the_plugin_is_loaded_by_its_entry_point(pytester):
    config = pytester.parseconfig()
    assert config.pluginmanager.get_plugin("dabench") is not None
    assert "--dabench-update" in pytester.runpytest("--help").stdout.str()


def test_update_writes_the_baseline_and_fails_once(pytester, results, tmp_path):
    baseline = tmp_path / "baselines" / "metrics.csv"
    first = session(pytester, results, baseline)
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*no metric baseline at*--dabench-update*"])
    assert not baseline.exists()

    written = session(pytester, results, baseline, "--dabench-update")
    written.assert_outcomes(failed=1)
    written.stdout.fnmatch_lines(
        [f"*baseline written: {baseline}, re-run without --dabench-update*"]
    )
    text = baseline.read_text()
    assert text.splitlines()[0] == "label,source,target,split,metric,rule,n,value,metrics_version"
    assert "dann,synth-hand-clean,synth-hand-wild,target_test,mpjpe,last,1,120.0,2" in text
    assert "ddc,synth-hand-clean,synth-hand-wild,target_test,mpjpe,last,2,101.0,2" in text

    session(pytester, results, baseline).assert_outcomes(passed=1)
    # unchanged: nothing to write, no failure, file untouched
    session(pytester, results, baseline, "--dabench-update").assert_outcomes(passed=1)
    assert baseline.read_text() == text


def baseline_of(results: Path, tmp_path: Path) -> Path:
    return write_baseline(metric_table(results), tmp_path / "metrics.csv")


def test_a_value_beyond_its_tolerance_fails_with_a_table(pytester, results, tmp_path):
    baseline = baseline_of(results, tmp_path)
    add_trial(results, "ddc", 1, mpjpe=103.5)  # ddc mean 101 -> 101.75 under every rule
    run = session(pytester, results, baseline, tolerances={"mpjpe": {"atol": 0.5}})
    run.assert_outcomes(failed=1)
    out = run.stdout.str()
    assert "3 of 12 values moved beyond tolerance" in out
    run.stdout.fnmatch_lines(
        [
            "*| label*| source*| target*| split*| metric*| rule*| baseline*| new*"
            "| difference*| atol*| rtol*|",
            "*| ddc*| synth-hand-clean*| synth-hand-wild*| target_test*| mpjpe*"
            "| last*| 101*| 101.75*| +0.75*| 0.5*| 1e-06*|",
        ]
    )
    assert "pck2d_005" not in out.split("values moved")[1].split("If the change")[0]
    assert "dann" not in out.split("values moved")[1]


def test_a_value_within_its_tolerance_passes(pytester, results, tmp_path):
    baseline = baseline_of(results, tmp_path)
    add_trial(results, "ddc", 1, mpjpe=102.6)  # mean moves by 0.3
    session(pytester, results, baseline, tolerances={"mpjpe": {"atol": 0.5}}).assert_outcomes(
        passed=1
    )
    # the default tolerance (1e-6) does not let it through
    session(pytester, results, baseline).assert_outcomes(failed=1)


def test_missing_and_extra_rows_are_named(pytester, results, tmp_path):
    baseline = baseline_of(results, tmp_path)
    for path in results.glob("*/record.json"):
        if json.loads(path.read_text())["label"] == "dann":
            path.unlink()
    add_trial(results, "dan", 0)
    run = session(pytester, results, baseline)
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(
        [
            "*6 rows missing from the store (in the baseline only):*",
            "*| dann*| synth-hand-clean*",
            "*6 rows extra in the store (not in the baseline):*",
            "*| dan*| synth-hand-clean*",
        ]
    )


def test_a_changed_seed_count_fails(pytester, results, tmp_path):
    baseline = baseline_of(results, tmp_path)
    add_trial(results, "dann", 1, mpjpe=120.0)  # same mean, one more seed
    run = session(pytester, results, baseline)
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(
        [
            "*the seed count n changed for 1 (label, source, target):*",
            "*| dann*| synth-hand-clean*| synth-hand-wild*| 1*| 2*|",
        ]
    )
    assert "moved beyond tolerance" not in run.stdout.str()


def test_a_trial_that_stopped_finishing_counts_as_a_lost_seed(results, tmp_path):
    baseline = read_baseline(baseline_of(results, tmp_path))
    add_trial(results, "dann", 0, status="diverged")
    new = metric_table(results)
    assert set(new.loc[new["label"] == "dann", "n"]) == {0}
    assert new.loc[new["label"] == "dann", "value"].isna().all()
    assert len(compare(new, baseline).seeds) == 1


def test_mixed_metrics_versions_are_an_error(pytester, results, tmp_path):
    baseline = baseline_of(results, tmp_path)
    add_trial(results, "dan", 0, version="3")
    run = session(pytester, results, baseline)
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(["*mixes records of metrics_version '2' (3 trials), '3' (1 trials)*"])


def test_an_unknown_metric_filter_lists_the_valid_ones(pytester, results, tmp_path):
    run = session(pytester, results, tmp_path / "x.csv", metrics=["mpjp"])
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(["*unknown metric 'mpjp' for *; valid: mpjpe, pck2d_005*"])


def test_pytest_regressions_regen_options_are_honoured(pytester, results, tmp_path):
    baseline = baseline_of(results, tmp_path)
    text = baseline.read_text()
    session(pytester, results, baseline, "--force-regen").assert_outcomes(passed=1)
    assert baseline.read_text() == text
    add_trial(results, "dann", 0, mpjpe=121.0)
    run = session(pytester, results, baseline, "--force-regen")
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(["*--force-regen set, baseline written:*"])
    session(pytester, results, baseline).assert_outcomes(passed=1)
    add_trial(results, "dann", 0, mpjpe=122.0)
    session(pytester, results, baseline, "--regen-all").assert_outcomes(passed=1)
    assert "dann,synth-hand-clean,synth-hand-wild,target_test,mpjpe,last,1,122.0,2" in (
        baseline.read_text()
    )


def test_filters_select_rows(results):
    table = metric_table(results, metrics=["mpjpe"], rules=["last", "target-oracle"])
    assert set(table["metric"]) == {"mpjpe"} and set(table["rule"]) == {"last", "target-oracle"}
    ddc = table[(table["label"] == "ddc") & (table["rule"] == "last")].iloc[0]
    assert (ddc["n"], ddc["value"], ddc["split"]) == (2, 101.0, "target_test")
    assert list(table.columns) == [
        *("label", "source", "target", "split", "metric", "rule"),
        *("n", "value", "metrics_version"),
    ]
    with pytest.raises(DabenchError, match="unknown rule 'best'.*valid: last, source-val"):
        metric_table(results, rules=["best"])
    with pytest.raises(DabenchError, match="unknown split 'val'.*valid: target_test"):
        metric_table(results, splits=["val"])


def test_an_empty_store_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DabenchError, match="no trial records"):
        metric_table(tmp_path / "empty")
    with pytest.raises(DabenchError, match="no result store"):
        metric_table(tmp_path / "absent")


def test_two_trials_of_one_seed_are_an_error(results):
    rec = store.read_record(next(iter(sorted(results.glob("*/record.json")))))
    store.write_trial(results, {**rec, "trial_id": "0123456789ab"}, None)
    with pytest.raises(DabenchError, match="2 trials with status ok of the same label"):
        metric_table(results)


def test_the_baseline_round_trips_exactly(results, tmp_path):
    add_trial(results, "oracle", 0, mpjpe=1 / 3, pck=math.nan)
    table = metric_table(results)
    again = read_baseline(write_baseline(table, tmp_path / "b.csv"))
    pd.testing.assert_frame_equal(again, table, check_dtype=False)
    assert "nan" in (tmp_path / "b.csv").read_text()
    assert compare(table, again).ok


def test_nan_equals_nan_but_not_a_number(results):
    table = metric_table(results)
    table.loc[0, "value"] = math.nan
    assert compare(table, table.copy()).ok
    other = table.copy()
    other.loc[0, "value"] = 1.0
    assert len(compare(other, table).moved) == 1
    assert len(compare(table, other).moved) == 1


def test_tolerances_are_checked(results):
    table = metric_table(results)
    with pytest.raises(DabenchError, match="'pa_mpjpe', which are not metrics.*valid: mpjpe"):
        compare(table, table, tolerances={"pa_mpjpe": {"atol": 1.0}})
    with pytest.raises(DabenchError, match="keys atol and/or rtol"):
        compare(table, table, tolerances={"mpjpe": {"abs": 1.0}})
    with pytest.raises(DabenchError, match=">= 0"):
        compare(table, table, default_tolerance={"rtol": -1})
    moved = table.copy()
    moved["value"] = moved["value"] * 1.01  # 1 % everywhere
    assert compare(moved, table, default_tolerance={"rtol": 0.011}).ok
    assert not compare(moved, table, tolerances={"mpjpe": {"rtol": 0.011}}).ok  # pck moved
    loose = {"mpjpe": {"rtol": 0.011}, "pck2d_005": {"atol": 0.81}}
    assert compare(moved, table, tolerances=loose).ok
