"""The main results table: rows = methods grouped Source only / Domain adaptation /
Oracle, columns = pair × metric, mean ± std over seeds, best per column in bold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

GROUPS = {
    "source-only": "Source only",
    "domain-adaptation": "Domain adaptation",
    "domain-generalisation": "Domain generalisation",
    "oracle": "Oracle",
}


@dataclass(frozen=True)
class MetricColumn:
    key: str  # overall metric name in the records
    title: str
    lower_is_better: bool
    decimals: int = 1


MAIN_METRICS = (
    MetricColumn("mpjpe", "MPJPE (mm) ↓", True),
    MetricColumn("pa_mpjpe", "PA-MPJPE (mm) ↓", True),
    MetricColumn("pck2d_005", "PCK@0.05 (%) ↑", False),
)


def _card(label: str):
    """The method card of ``method`` or ``method/variant`` (None if there is none)."""
    from bench.errors import DabenchError
    from bench.methods.cards import load_method_card
    from bench.methods.spec import split_label

    try:
        return load_method_card(split_label(label)[0])
    except DabenchError:
        return None


def method_title(label: str) -> str:
    """The card's title for ``method`` or ``method/variant`` (the label if no card)."""
    card = _card(label)
    if card is None:
        return label
    variant = label.partition("/")[2]
    return f"{card.title} — {variant}" if variant else card.title


def method_fidelity(label: str) -> str:
    """The fidelity level of ``method`` or ``method/variant`` ("unknown" without a card)."""
    card = _card(label)
    return "unknown" if card is None else card.fidelity


def methods_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per method of the table: its title and how faithful it is to its paper."""
    labels = sorted(
        set(df["label"]),
        key=lambda lb: (list(GROUPS).index(df.loc[df["label"] == lb, "category"].iloc[0]), lb),
    )
    return pd.DataFrame(
        {
            "Method": [method_title(lb) for lb in labels],
            "Fidelity": [method_fidelity(lb) for lb in labels],
            "Starts from": [start_text(df[df["label"] == lb]) for lb in labels],
        }
    )


def start_text(rows: pd.DataFrame) -> str:
    """What a method's trials started from: random weights, or another method's network
    and how much of it they could load (a different head starts fresh)."""
    if "warm_start" not in rows or rows["warm_start"].isna().all():
        return "random initialisation"
    starts = sorted(set(rows["warm_start"].dropna()))

    def counts(column: str) -> str:
        values = sorted({int(v) for v in rows[column].dropna()})
        return "–".join(map(str, values[:1] + values[-1:] if len(values) > 1 else values))

    heads = sorted({str(h) for h in rows.get("head", pd.Series(dtype=object)).dropna()})
    # the start is trained with the row's own model, so its head is the row's
    head = f" with a {'/'.join(heads)} head" if heads else ""
    return (
        f"{', '.join(starts)} network{head} of the same pair and seed "
        f"({counts('start_loaded') or '?'} tensors loaded, {counts('start_fresh') or '?'} fresh)"
    )


def short_pair(source: str, target: str) -> str:
    """``synth-hand-clean → synth-hand-wild`` reads better as ``hand-clean → hand-wild``."""
    strip = "synth-" if source.startswith("synth-") and target.startswith("synth-") else ""
    return f"{source.removeprefix(strip)} → {target.removeprefix(strip)}"


def summarise(
    df: pd.DataFrame,
    rule: str,
    split: str = "target_test",
    metrics: Sequence[MetricColumn] = MAIN_METRICS,
) -> pd.DataFrame:
    """Mean, std and count over seeds for every (method row, pair, metric); failed trials
    are left out of the statistics and counted separately."""
    rows = []
    for (category, label, source, target), sub in df.groupby(
        ["category", "label", "source", "target"], sort=False
    ):
        ok = sub[sub["status"] != "failed"]
        for m in metrics:
            col = f"{rule}:{split}/{m.key}"
            values = ok[col].astype(float).to_numpy() if col in ok else np.array([])
            values = values[np.isfinite(values)]
            rows.append(
                {
                    "category": category,
                    "label": label,
                    "pair": short_pair(source, target),
                    "metric": m.key,
                    "mean": values.mean() if len(values) else np.nan,
                    "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                    "n": len(values),
                    "failed": int((sub["status"] == "failed").sum()),
                }
            )
    return pd.DataFrame(rows)


def _best(stats: pd.DataFrame, metrics: Sequence[MetricColumn]) -> set[tuple[str, str, str]]:
    """(label, pair, metric) cells that are best in their column at the printed precision,
    oracle rows excluded from the competition; ties are all bold."""
    best = set()
    for (pair, metric), sub in stats.groupby(["pair", "metric"], sort=False):
        m = next(c for c in metrics if c.key == metric)
        comp = sub[(sub["category"] != "oracle") & np.isfinite(sub["mean"])]
        if comp.empty:
            continue
        rounded = comp["mean"].round(m.decimals)
        target = rounded.min() if m.lower_is_better else rounded.max()
        for label in comp.loc[rounded == target, "label"]:
            best.add((label, pair, metric))
    return best


def main_table(
    df: pd.DataFrame, rule: str, metrics: Sequence[MetricColumn] = MAIN_METRICS
) -> pd.DataFrame:
    """The table as strings, ready for markdown/LaTeX: a ``Setting`` and ``Method`` column,
    then one column per (pair, metric)."""
    stats = summarise(df, rule, metrics=metrics)
    best = _best(stats, metrics)
    pairs = sorted(set(stats["pair"]))
    order = [c for c in GROUPS if c in set(stats["category"])]
    lines = []
    for category in order:
        labels = sorted(set(stats.loc[stats["category"] == category, "label"]))
        for i, label in enumerate(labels):
            row = {"Setting": GROUPS[category] if i == 0 else "", "Method": method_title(label)}
            for pair in pairs:
                for m in metrics:
                    cell = stats[
                        (stats["label"] == label)
                        & (stats["pair"] == pair)
                        & (stats["metric"] == m.key)
                    ]
                    row[f"{pair}<br>{m.title}"] = _cell(cell, m, (label, pair, m.key) in best)
            lines.append(row)
    return pd.DataFrame(lines)


def _cell(cell: pd.DataFrame, m: MetricColumn, bold: bool) -> str:
    if cell.empty:
        return "–"
    c = cell.iloc[0]
    if c["n"] == 0:
        return "failed" if c["failed"] else "–"
    text = f"{c['mean']:.{m.decimals}f}"
    if c["n"] > 1:
        text += f" ± {c['std']:.{m.decimals}f}"
    if c["failed"]:
        text += f" ({c['failed']} failed)"
    return f"**{text}**" if bold else text
