"""Statistics tables: average rank across pairs, the Friedman test, and paired tests of
every method against a reference method on the same (pair, seed) blocks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.report.frames import Store
from bench.report.model import Cell, Column, Table
from bench.report.protocols import metric_info
from bench.report.stats import CONFIDENCE, average_ranks, friedman, holm, paired_comparison
from bench.report.tables import method_rows, method_title
from bench.selection import RULES

DEFAULT_REFERENCE = "source-only"


def reference_method(store: Store) -> str | None:
    """The grid's ``report: {reference: LABEL}``, else source-only when it ran."""
    for section in store.grid_reports.values():
        if section.get("reference"):
            return str(section["reference"])
    return DEFAULT_REFERENCE if DEFAULT_REFERENCE in set(store.trials["label"]) else None


def pair_scores(store: Store, rule: str, metric: str, oracle: bool = False) -> pd.DataFrame:
    """Blocks = pairs, columns = methods, values = the mean over seeds (finished trials)."""
    t = store.trials[store.trials["status"] != "failed"]
    if not oracle:
        t = t[t["category"] != "oracle"]
    col = f"{rule}:target_test/{metric}"
    if col not in t:
        return pd.DataFrame()
    return t.pivot_table(index="pair", columns="label", values=col, aggfunc="mean")


def comparable(scores: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The pair × method scores ranks and tests can use, and the methods left out: a method
    without a value on some pair (a grid's ``skip``: a body method on a hand pair) is left
    out when that keeps more complete pairs than dropping those pairs would."""
    partial = [c for c in scores.columns if scores[c].isna().any() and scores[c].notna().any()]
    rest = scores.drop(columns=partial)
    if partial and rest.shape[1] >= 2 and len(rest.dropna()) > len(scores.dropna()):
        return rest, partial
    return scores, []


def _seed_blocks(store: Store, rule: str, metric: str) -> pd.DataFrame:
    t = store.trials[store.trials["status"] != "failed"]
    return t.pivot_table(
        index=["pair", "seed"], columns="label", values=f"{rule}:target_test/{metric}"
    )


def statistics_table(store: Store, rule: str, metric: str) -> Table:
    info = metric_info(metric)
    trials = store.trials
    rows = method_rows(trials, oracle=False)
    reference = reference_method(store)
    one_seed = int(trials.groupby(["label", "pair"])["seed"].nunique().max()) < 2
    cols = [Column("rank", "", "Mean rank over pairs ↓", 2, True)]
    testing = reference is not None and not one_seed
    if testing:
        cols += [
            Column("diff", f"vs {method_title(reference)}", f"Δ {info.title}", info.decimals),
            Column("t", f"vs {method_title(reference)}", "paired t p", 3),
            Column("w", f"vs {method_title(reference)}", "Wilcoxon p", 3),
            Column("holm", f"vs {method_title(reference)}", "Wilcoxon p (Holm)", 3),
        ]
    notes = []
    scores, left_out = comparable(pair_scores(store, rule, metric))
    if left_out:
        notes.append(
            f"{', '.join(method_title(lb) for lb in left_out)}: left out of the ranks and the "
            "Friedman test (no value on every pair — a pair the grid skips it on, or a "
            "missing trial)."
        )
    complete = scores.dropna()
    table = Table(
        f"statistics-{metric}",
        f"Comparisons on {info.title.rsplit(' ', 1)[0]}, target test split. Model selection: "
        f"{rule} — {RULES[rule].description}. Ranks: per pair, methods are ranked on their "
        "mean over seeds (1 = best, ties share the average rank), then averaged over the "
        f"{len(complete)} pair(s) where every method has a value; oracle rows excluded.",
        cols,
        rows,
        notes=notes,
    )
    if not complete.empty:
        for label, r in average_ranks(scores, info.lower_is_better).items():
            table.put(label, "rank", Cell(value=float(r), n=len(complete)))
        table.mark_best()
    result = friedman(scores, info.lower_is_better) if not scores.empty else None
    if result is not None and result.possible:
        notes.append(
            f"Friedman test over {result.n} pairs × {result.k} methods: χ² = "
            f"{result.statistic:.2f}, p = {result.pvalue:.3g}; Iman–Davenport F = "
            f"{result.iman_davenport:.2f}, p = {result.iman_davenport_pvalue:.3g}."
        )
    elif result is not None:
        notes.append(f"No Friedman test: {result.reason}.")
    if reference is None:
        notes.append(
            "No paired tests: no reference method (the grid's report.reference, or "
            "source-only) is in the store."
        )
    elif one_seed:
        notes.append(
            "One seed per method and pair: no test over seeds is possible; the ranks are "
            "descriptive."
        )
    else:
        blocks = _seed_blocks(store, rule, metric)
        tests, p_w = {}, []
        for row in rows:
            if row.key == reference or row.key not in blocks or reference not in blocks:
                continue
            c = paired_comparison(blocks[row.key].to_numpy(), blocks[reference].to_numpy())
            tests[row.key] = c
            p_w.append(c.w_pvalue)
        adjusted = dict(zip(tests, holm(p_w), strict=True))
        for label, c in tests.items():
            half = (c.ci_high - c.ci_low) / 2 if np.isfinite(c.ci_low) else None
            table.put(
                label,
                "diff",
                Cell(value=c.mean_diff, spread=half, n=c.n, signed=True),
            )
            if c.possible:
                table.put(label, "t", Cell(value=c.t_pvalue, n=c.n))
                table.put(label, "w", Cell(value=c.w_pvalue, n=c.n))
                table.put(label, "holm", Cell(value=adjusted[label], n=c.n))
        n_min = min((c.n for c in tests.values()), default=0)
        notes.append(
            f"Paired tests against {method_title(reference)} on the (pair, seed) blocks both "
            f"ran (Δ = method minus reference, ± its {CONFIDENCE:.0%} t-interval): the paired "
            "t-test (scipy.stats.ttest_rel) and the Wilcoxon signed-rank test "
            "(scipy.stats.wilcoxon, exact for small n), both two-sided; Holm's correction over "
            f"the {len(tests)} comparisons. With {n_min} blocks the smallest possible exact "
            f"Wilcoxon p is {2 / 2**n_min if n_min else float('nan'):.3g}: a large p is no "
            "evidence of equality."
        )
        for label, c in tests.items():
            if c.reason:
                notes.append(f"{method_title(label)}: {c.reason}.")
    return table


def statistics_tables(store: Store, rule: str, metrics: Sequence[str]) -> list[Table]:
    return [statistics_table(store, rule, m) for m in metrics]


def cd_scores(store: Store, rule: str, metric: str) -> pd.DataFrame:
    """The pair × method scores a critical-difference diagram is drawn from, with the
    methods' display titles as columns."""
    scores = comparable(pair_scores(store, rule, metric))[0].dropna()
    return scores.rename(columns={lb: method_title(lb) for lb in scores.columns})
