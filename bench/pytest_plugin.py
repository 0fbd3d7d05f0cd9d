"""Metric-regression tests of result stores: dabench's pytest plugin.

Installed with dabench (entry point ``pytest11: dabench``), so any pytest session in an
environment with dabench has the ``dabench_regression`` fixture and the ``--dabench-update``
option::

    def test_my_metrics(dabench_regression):
        dabench_regression.check(
            "results/my-grid",               # a result store (relative: to this test file)
            "baselines/my-grid.csv",         # the committed baseline (idem)
            metrics=["mpjpe", "pa_mpjpe"],
            tolerances={"mpjpe": {"atol": 0.5}},
        )

What is compared: :func:`metric_table` of the store, one row per (label, source, target,
split, metric, rule) with ``value`` = the mean over seeds of the trials with status ``ok``
and ``n`` = how many there are, against the same table stored as CSV. A value passes if
``|new - old| <= atol + rtol * |old|`` (NaN equals NaN, NaN against a number fails); ``n``
must match exactly; rows only in the baseline (missing) or only in the store (extra) fail.

Updating: ``pytest --dabench-update`` (re)writes every baseline whose content differs and
fails those tests once with "baseline written: PATH, re-run without --dabench-update";
pytest-regressions' ``--force-regen`` rewrites only the baselines that fail the comparison
(also failing once) and ``--regen-all`` rewrites them all and passes, as in pytest-regressions.

Why not pytest-regressions' ``dataframe_regression``: it compares tables by position and
shape, so a method or seed that disappears from a store shows up as shifted rows or a shape
error instead of "missing: ddc on A → B", it has no notion of an exact integer column beside
toleranced ones, and its tolerances are keyed by column where ours are keyed by metric (a
value in a long table). The conventions are kept: the first run without a baseline fails,
tolerances are ``{"metric": {"atol": ..., "rtol": ...}}``, ``--force-regen``/``--regen-all``
are honoured, and a baseline given as None lives in the test's data directory
(``<test dir>/<test module>/<test name>.csv``, pytest-datadir's layout).

The module imports only the standard library and pytest at load time (pytest loads it in
every session of this environment); pandas, numpy and bench.store are imported on first use.
No torch, timm or ray: it runs on a laptop against records copied from a cluster.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bench.errors import DabenchError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BASELINE_COLUMNS",
    "DEFAULT_TOLERANCE",
    "KEY_COLUMNS",
    "Comparison",
    "DabenchRegression",
    "compare",
    "dabench_regression",
    "metric_table",
    "read_baseline",
    "write_baseline",
]

KEY_COLUMNS: tuple[str, ...] = ("label", "source", "target", "split", "metric", "rule")
BASELINE_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, "n", "value", "metrics_version")

DEFAULT_TOLERANCE: Mapping[str, float] = {"atol": 1e-6, "rtol": 1e-6}
"""Tolerance of a metric without its own entry in ``tolerances``.

Tight on purpose: a baseline is normally checked against records of the same code, so
only the CSV round trip (exact: values are written with ``repr``) and the summation order of
the mean over seeds (~1e-15 relative) separate the numbers, and anything larger is a change
someone should see. Loosen it per metric when the store is re-trained rather than re-read
(non-deterministic GPU kernels), e.g. ``{"mpjpe": {"atol": 0.5}}`` (mm) or
``{"pck2d_005": {"atol": 0.5}}`` (percentage points)."""

UPDATE_OPTION = "--dabench-update"


# ---------------------------------------------------------------------------------------
# the compared table


def metric_table(
    results: Path | str,
    *,
    metrics: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    rules: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The table a regression test compares: one row per (label, source, target, split,
    metric, rule) of the store at ``results``, sorted, with ``n`` (trials with status ``ok``
    of that label and pair, one per seed), ``value`` (their mean; NaN if a trial has no value
    or ``n`` is 0) and ``metrics_version``. A (label, pair) whose trials all diverged or
    failed is kept with ``n`` 0, so that losing it is a visible change.

    ``metrics``/``splits``/``rules`` keep only those (default: all in the store). Raises
    DabenchError for an empty store, an unknown filter value (naming the valid ones), trials
    with different ``metrics_version`` values, or two finished trials of one label, pair and
    seed."""
    import pandas as pd

    from bench import store
    from bench.selection import SELECTION_RULES

    frame = store.load(results)
    if frame.empty:
        raise DabenchError(f"no trial records in the result store {results}")
    versions = frame["metrics_version"].astype(str).value_counts().sort_index()
    if len(versions) > 1:
        found = ", ".join(f"{v!r} ({c} trials)" for v, c in versions.items())
        raise DabenchError(
            f"the result store {results} mixes records of metrics_version {found}; numbers of "
            "different metric definitions cannot be compared — keep one version per store"
        )
    version = str(versions.index[0])

    columns = {}  # "<rule>:<split>/<metric>" -> (rule, split, metric)
    for column in frame.columns:
        rule, sep, rest = str(column).partition(":")
        split, slash, metric = rest.partition("/")
        if sep and slash and rule in SELECTION_RULES:
            columns[column] = (rule, split, metric)
    if not columns:
        raise DabenchError(f"no per-rule metrics (metrics_by_rule) in the result store {results}")
    chosen = {}
    for position, name, wanted in (
        (2, "metric", metrics),
        (1, "split", splits),
        (0, "rule", rules),
    ):
        valid = sorted({parts[position] for parts in columns.values()})
        if wanted is not None:
            wanted = [wanted] if isinstance(wanted, str) else list(wanted)
            unknown = [w for w in wanted if w not in valid]
            if not wanted or unknown:
                raise DabenchError(
                    f"unknown {name} {', '.join(map(repr, unknown)) or '(none given)'} for "
                    f"{results}; valid: {', '.join(valid)}"
                )
        chosen[position] = set(valid if wanted is None else wanted)
    columns = {c: p for c, p in columns.items() if all(p[i] in chosen[i] for i in chosen)}

    ok = frame[frame["status"] == "ok"]
    twice = ok[ok.duplicated(["label", "source", "target", "seed"], keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        ids = ", ".join(sorted(twice["trial_id"]))[:120]
        raise DabenchError(
            f"the result store {results} holds {len(twice)} trials with status ok of the same "
            f"label, pair and seed, e.g. {first['label']} {first['source']} → "
            f"{first['target']} seed {first['seed']} (trials {ids}); a "
            "regression baseline needs one trial per seed — keep one grid per store"
        )
    groups = frame[["label", "source", "target"]].drop_duplicates()
    rows = []
    for group in groups.itertuples(index=False):
        done = ok[
            (ok["label"] == group.label)
            & (ok["source"] == group.source)
            & (ok["target"] == group.target)
        ]
        for column, (rule, split, metric) in columns.items():
            values = pd.to_numeric(done[column], errors="coerce").to_numpy(dtype=float)
            value = float(values.mean()) if len(values) else math.nan
            rows.append((*group, split, metric, rule, len(values), value, version))
    table = pd.DataFrame(rows, columns=list(BASELINE_COLUMNS))
    return _sorted(table)


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# the baseline file


def write_baseline(table: pd.DataFrame, path: Path | str) -> Path:
    """Write :func:`metric_table`'s ``table`` as CSV at ``path``: rows sorted by key, values
    as Python's ``repr`` (the shortest text that reads back as the same float, so a
    re-written unchanged baseline has no diff), NaN as ``nan``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(baseline_text(table))
    return path


def baseline_text(table: pd.DataFrame) -> str:
    """The CSV text :func:`write_baseline` writes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BASELINE_COLUMNS)
    for row in _sorted(table)[list(BASELINE_COLUMNS)].itertuples(index=False):
        record = row._asdict()
        value = float(record["value"])
        record["value"] = "nan" if math.isnan(value) else repr(value)
        record["n"] = int(record["n"])
        writer.writerow([record[c] for c in BASELINE_COLUMNS])
    return buffer.getvalue()


def read_baseline(path: Path | str) -> pd.DataFrame:
    """A baseline CSV back as the table :func:`metric_table` makes (keys as text, never
    parsed as numbers or NaN)."""
    import pandas as pd

    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if [c for c in BASELINE_COLUMNS if c not in header]:
                raise DabenchError(
                    f"{path} is not a dabench baseline: its header is {','.join(header)}, "
                    f"expected {','.join(BASELINE_COLUMNS)}"
                )
            rows = [
                {
                    **{c: r[c] for c in BASELINE_COLUMNS},
                    "n": int(r["n"]),
                    "value": float(r["value"]),
                }
                for r in reader
            ]
    except (OSError, ValueError, TypeError) as exc:
        raise DabenchError(f"cannot read the baseline {path}: {exc}") from exc
    return _sorted(pd.DataFrame(rows, columns=list(BASELINE_COLUMNS)))


# ---------------------------------------------------------------------------------------
# the comparison


@dataclass
class Comparison:
    """The outcome of :func:`compare`; ``ok`` if nothing moved, ``message()`` otherwise."""

    compared: int
    moved: pd.DataFrame
    missing: pd.DataFrame
    extra: pd.DataFrame
    seeds: pd.DataFrame
    versions: tuple[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.moved.empty and self.missing.empty and self.extra.empty and self.seeds.empty

    def message(self) -> str:
        parts = []
        if self.versions:
            old, new = self.versions
            parts.append(
                f"metrics_version changed from {old!r} (baseline) to {new!r} (store): the metric "
                "definitions changed; review the differences, then update the baseline"
            )
        if not self.moved.empty:
            parts.append(
                f"{len(self.moved)} of {self.compared} values moved beyond tolerance "
                "(pass: |new - baseline| <= atol + rtol * |baseline|):\n" + _table(self.moved)
            )
        if not self.missing.empty:
            parts.append(
                f"{_rows(self.missing)} missing from the store (in the baseline only):\n"
                + _table(self.missing)
            )
        if not self.extra.empty:
            parts.append(
                f"{_rows(self.extra)} extra in the store (not in the baseline):\n"
                + _table(self.extra)
            )
        if not self.seeds.empty:
            parts.append(
                f"the seed count n changed for {len(self.seeds)} (label, source, target):\n"
                + _table(self.seeds)
            )
        return "\n\n".join(parts)


def _tolerances(
    metrics: set[str],
    tolerances: Mapping[str, Mapping[str, float]] | None,
    default_tolerance: Mapping[str, float] | None,
) -> dict[str, tuple[float, float]]:
    def checked(where: str, tol: Mapping[str, float]) -> dict[str, float]:
        if not isinstance(tol, Mapping) or set(tol) - {"atol", "rtol"}:
            raise DabenchError(f"{where} must be a mapping with keys atol and/or rtol, got {tol!r}")
        for key, value in tol.items():
            if not isinstance(value, int | float) or not value >= 0:
                raise DabenchError(f"{where} {key} must be a number >= 0, got {value!r}")
        return {k: float(v) for k, v in tol.items()}

    default = {**DEFAULT_TOLERANCE, **checked("default_tolerance", default_tolerance or {})}
    tolerances = dict(tolerances or {})
    unknown = sorted(set(tolerances) - metrics)
    if unknown:
        raise DabenchError(
            f"tolerances for {', '.join(map(repr, unknown))}, which are not metrics of the "
            f"compared table; valid: {', '.join(sorted(metrics))}"
        )
    result = {}
    for metric in metrics:
        tol = {**default, **checked(f"tolerances[{metric!r}]", tolerances.get(metric, {}))}
        result[metric] = (tol["atol"], tol["rtol"])
    return result


def compare(
    new: pd.DataFrame,
    baseline: pd.DataFrame,
    *,
    tolerances: Mapping[str, Mapping[str, float]] | None = None,
    default_tolerance: Mapping[str, float] | None = None,
) -> Comparison:
    """Compare two :func:`metric_table` tables by key. ``tolerances`` maps a metric to
    ``{"atol": a, "rtol": r}``; a metric without an entry, and a missing ``atol``/``rtol`` in
    an entry, takes ``default_tolerance``'s, and a missing one there :data:`DEFAULT_TOLERANCE`'s.
    A value passes if ``|new - baseline| <= atol + rtol * |baseline|``, or if both are NaN
    (or the same infinity). Raises DabenchError for a tolerance key that is not a metric of
    either table."""
    import numpy as np

    keys = list(KEY_COLUMNS)
    tol = _tolerances(set(new["metric"]) | set(baseline["metric"]), tolerances, default_tolerance)
    both = baseline.merge(new, on=keys, how="outer", suffixes=("_old", "_new"), indicator=True)
    missing = both[both["_merge"] == "left_only"][[*keys, "n_old", "value_old"]]
    extra = both[both["_merge"] == "right_only"][[*keys, "n_new", "value_new"]]
    common = both[both["_merge"] == "both"].copy()

    old, now = common["value_old"].to_numpy(float), common["value_new"].to_numpy(float)
    atol = common["metric"].map(lambda m: tol[m][0]).to_numpy(float)
    rtol = common["metric"].map(lambda m: tol[m][1]).to_numpy(float)
    with np.errstate(invalid="ignore"):
        diff = now - old
        passed = (
            (np.isnan(old) & np.isnan(now))
            | (old == now)
            | (np.abs(diff) <= atol + rtol * np.abs(old))
        )
    common["difference"], common["atol"], common["rtol"] = diff, atol, rtol
    moved = common[~passed][[*keys, "value_old", "value_new", "difference", "atol", "rtol"]]
    moved = moved.rename(columns={"value_old": "baseline", "value_new": "new"})

    seeds = common[common["n_old"] != common["n_new"]][
        ["label", "source", "target", "n_old", "n_new"]
    ].drop_duplicates()
    seeds = seeds.rename(columns={"n_old": "baseline n", "n_new": "new n"})

    old_versions = sorted(set(baseline["metrics_version"].astype(str)))
    new_versions = sorted(set(new["metrics_version"].astype(str)))
    versions = None
    if old_versions and new_versions and old_versions != new_versions:
        versions = (", ".join(old_versions), ", ".join(new_versions))
    return Comparison(
        compared=len(common),
        moved=moved.sort_values(keys).reset_index(drop=True),
        missing=missing.rename(columns={"n_old": "n", "value_old": "value"})
        .sort_values(keys)
        .reset_index(drop=True),
        extra=extra.rename(columns={"n_new": "n", "value_new": "value"})
        .sort_values(keys)
        .reset_index(drop=True),
        seeds=seeds.sort_values(["label", "source", "target"]).reset_index(drop=True),
        versions=versions,
    )


def _rows(frame: pd.DataFrame) -> str:
    return f"{len(frame)} row{'' if len(frame) == 1 else 's'}"


def _cell(value: Any, column: str) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        if math.isnan(value):
            return "nan"
        if column == "difference":
            return f"{value:+.4g}"
        if column in ("atol", "rtol"):
            return f"{value:g}"
        if column in ("n", "baseline n", "new n"):
            return str(int(value))
        return f"{value:.10g}"
    return str(value)


def _table(frame: pd.DataFrame) -> str:
    from tabulate import tabulate

    rows = [
        [_cell(v, c) for c, v in zip(frame.columns, row, strict=True)]
        for row in frame.itertuples(index=False)
    ]
    return tabulate(rows, headers=list(frame.columns), tablefmt="github", disable_numparse=True)


# ---------------------------------------------------------------------------------------
# pytest: option and fixture


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dabench", "dabench metric regression")
    group.addoption(
        UPDATE_OPTION,
        action="store_true",
        default=False,
        help="(re)write the metric baselines of dabench_regression.check that differ from "
        "their result store; those tests fail once, re-run without the option.",
    )


class DabenchRegression:
    """What the ``dabench_regression`` fixture gives a test: :meth:`check` a result store
    against a baseline CSV, :meth:`table` to look at what would be compared."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request

    def _path(self, path: Path | str) -> Path:
        path = Path(path)
        return (path if path.is_absolute() else self.request.path.parent / path).resolve()

    def default_baseline(self) -> Path:
        """``<test dir>/<test module>/<test name>.csv`` (pytest-regressions' data directory;
        parametrised names made file-safe)."""
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.request.node.name)
        return self.request.path.parent / self.request.path.stem / f"{name}.csv"

    def table(
        self,
        results: Path | str,
        *,
        metrics: Sequence[str] | None = None,
        splits: Sequence[str] | None = None,
        rules: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """:func:`metric_table` of ``results`` (relative: to the test file's directory)."""
        return metric_table(self._path(results), metrics=metrics, splits=splits, rules=rules)

    def check(
        self,
        results: Path | str,
        baseline: Path | str | None = None,
        *,
        tolerances: Mapping[str, Mapping[str, float]] | None = None,
        default_tolerance: Mapping[str, float] | None = None,
        metrics: Sequence[str] | None = None,
        splits: Sequence[str] | None = None,
        rules: Sequence[str] | None = None,
    ) -> None:
        """Fail the test unless :func:`metric_table` of the store ``results`` matches the
        baseline CSV within tolerance (see :func:`compare`). Relative paths are taken from
        the test file's directory; ``baseline`` None is :meth:`default_baseline`.

        Without a baseline file, or with ``--dabench-update`` and a table that differs from
        the file, the baseline is written and the test fails once; with pytest-regressions'
        ``--force-regen`` it is rewritten only if the comparison fails, and with
        ``--regen-all`` it is rewritten and the test passes."""
        config = self.request.config
        update = config.getoption("dabench_update", default=False)
        force_regen = _option(config, "force_regen")
        regen_all = _option(config, "regen_all")
        path = Path(baseline) if baseline is not None else self.default_baseline()
        path = self._path(path)
        try:
            new = self.table(results, metrics=metrics, splits=splits, rules=rules)
            text = baseline_text(new)
            if regen_all:
                write_baseline(new, path)
                return
            if update:
                if path.is_file() and path.read_text() == text:
                    return
                write_baseline(new, path)
                pytest.fail(
                    f"baseline written: {path}, re-run without {UPDATE_OPTION}", pytrace=False
                )
            if not path.is_file():
                pytest.fail(
                    f"no metric baseline at {path}; create it from the store {self._path(results)} "
                    f"with `pytest {UPDATE_OPTION} {self.request.node.nodeid}`, review it and "
                    "commit it",
                    pytrace=False,
                )
            comparison = compare(
                new,
                read_baseline(path),
                tolerances=tolerances,
                default_tolerance=default_tolerance,
            )
        except DabenchError as exc:
            pytest.fail(f"dabench regression: {exc}", pytrace=False)
        if comparison.ok:
            return
        header = f"the result store {self._path(results)} no longer matches the baseline {path}"
        if force_regen:
            write_baseline(new, path)
            pytest.fail(
                f"{header}; --force-regen set, baseline written: {path}, re-run without it\n\n"
                + comparison.message(),
                pytrace=False,
            )
        pytest.fail(
            f"{header}\n\n{comparison.message()}\n\nIf the change is intended: "
            f"pytest {UPDATE_OPTION} {self.request.node.nodeid}",
            pytrace=False,
        )


def _option(config: pytest.Config, name: str) -> bool:
    try:
        return bool(config.getoption(name, default=False))
    except ValueError:  # pragma: no cover - pytest raises ValueError for unknown names
        return False


@pytest.fixture
def dabench_regression(request: pytest.FixtureRequest) -> DabenchRegression:
    """Check a dabench result store's metrics against a committed baseline CSV:
    ``dabench_regression.check(results, baseline, tolerances={"mpjpe": {"atol": 0.5}})``.
    Create or update baselines with ``pytest --dabench-update``."""
    return DabenchRegression(request)
