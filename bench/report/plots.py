"""The report's figures, drawn from the tidy frames of :mod:`bench.report.frames`:
learning curves, training-loss curves, per-joint-group bars and the model-selection gap.

Each figure is written as PNG and PDF that are byte-for-byte the same for the same inputs
in the same environment, because the committed example report is regenerated and
compared. Torch-free, and pyplot-free: figures are plain :class:`Figure` objects, so no
global figure registry or GUI backend is involved and nothing leaks between reports."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from scipy import stats

from bench.atomic import atomic_path
from bench.config import CATEGORIES
from bench.errors import DabenchError
from bench.report.frames import group_key

# The same order as the main table, so that colours and legends read like it.
CATEGORY_ORDER = CATEGORIES

# Target first: it is the number the benchmark is about; source validation is context.
SPLIT_ORDER = ("target_test", "source_val")

# Matplotlib writes the software version and the time into the files by default; either
# would make a regenerated report differ from the committed one.
_PNG_METADATA: dict[str, str | None] = {"Software": None}
_PDF_METADATA: dict[str, str | None] = {"Creator": None, "Producer": None, "CreationDate": None}

_PANEL_WIDTH = 3.4  # inches per pair
_PANEL_HEIGHT = 2.6


@contextmanager
def _theme() -> Iterator[None]:
    """The report's look, applied to the rcParams only for the block: a report must not
    depend on, or change, the style of whoever calls it."""
    with ExitStack() as stack:
        stack.enter_context(sns.axes_style("whitegrid"))
        stack.enter_context(sns.plotting_context("paper"))
        yield


def save_figure(fig: Figure, stem: Path, dpi: int = 150, tight: bool = False) -> list[Path]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` with no timestamps or software
    versions in them. Both appear or neither does: a failure while drawing either leaves
    no file (and no partial file) behind. ``tight`` crops to the drawn artists (labels
    drawn outside the axes, as a CD diagram's, would be cut off otherwise); it costs one
    more draw, so figures that size themselves do without."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    # with_name, not with_suffix: a stem such as "curves_pck2d_0.05" has a dot in it.
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    box = "tight" if tight else None
    with atomic_path(png) as tmp_png, atomic_path(pdf) as tmp_pdf:
        fig.savefig(tmp_png, format="png", dpi=dpi, metadata=_PNG_METADATA, bbox_inches=box)
        fig.savefig(tmp_pdf, format="pdf", dpi=dpi, metadata=_PDF_METADATA, bbox_inches=box)
    return [png, pdf]


def _ci95(values: pd.Series | np.ndarray) -> tuple[float, float]:
    """Student-t 95% interval of the mean over seeds. Chosen over seaborn's bootstrap CI
    because reports have 2-5 seeds, where a bootstrap interval is far too narrow (with two
    seeds it never leaves [min, max]); it also needs no random numbers to be reproducible."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        mean = float(x.mean()) if len(x) else float("nan")
        return mean, mean
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return float(x.mean() - half), float(x.mean() + half)


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DabenchError(
            f"the {what} frame lacks the column(s) {', '.join(missing)} "
            f"(it has: {', '.join(map(str, df.columns))})"
        )


def _available(df: pd.DataFrame, column: str) -> str:
    values = sorted(map(str, df[column].dropna().unique())) if column in df else []
    return ", ".join(values) if values else "none"


def _method_names(df: pd.DataFrame, titles: Mapping[str, str]) -> dict[str, str]:
    """label -> legend name, in legend order: by category as in the main table, then label.
    Two labels given the same title keep their labels, so that they never merge."""
    labels = df["label"].astype(str)
    if "category" in df:
        rank = {c: i for i, c in enumerate(CATEGORY_ORDER)}
        firsts = df.assign(label=labels).drop_duplicates("label")
        keys = {
            lab: (rank.get(str(cat), len(rank)), lab)
            for lab, cat in zip(firsts["label"], firsts["category"], strict=True)
        }
        order = sorted(keys, key=keys.__getitem__)
    else:
        order = sorted(labels.unique())
    names = {lab: str(titles.get(lab, lab)) for lab in order}
    counts = pd.Series(list(names.values())).value_counts()
    return {lab: (f"{n} ({lab})" if counts[n] > 1 and n != lab else n) for lab, n in names.items()}


def _palette(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    # colorblind has 10 distinguishable colours; beyond that husl spaces hues evenly.
    colours = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, colours, strict=True))


def _pairs(df: pd.DataFrame) -> list[str]:
    return sorted(map(str, df["pair"].unique()))


def _splits(df: pd.DataFrame) -> list[str]:
    present = set(map(str, df["split"].unique()))
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


def _figure(n_cols: int, n_rows: int, names: Sequence[str], height: float = _PANEL_HEIGHT):
    """A figure with room for an ``n_rows`` × ``n_cols`` grid and, to its right, a legend
    of ``names``: the panels keep their size however many methods there are."""
    legend_width = 0.6 + 0.065 * max((len(n) for n in names), default=0)
    fig = Figure(
        figsize=(_PANEL_WIDTH * n_cols + legend_width, height * n_rows), layout="constrained"
    )
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, axes


def _legend(fig: Figure, palette: Mapping[str, tuple], kind: str, title: str = "method") -> None:
    """One legend for the whole figure, built from the palette rather than from an axes:
    a method missing from the first panel must still be listed."""
    if kind == "line":
        handles = [Line2D([], [], color=c, marker="o", markersize=4) for c in palette.values()]
    else:
        handles = [Patch(facecolor=c) for c in palette.values()]
    fig.legend(handles, list(palette), loc="outside right upper", title=title, frameon=False)


def _with_methods(df: pd.DataFrame, names: Mapping[str, str]) -> pd.DataFrame:
    out = df.assign(method=df["label"].astype(str).map(names))
    return out[np.isfinite(out["value"].astype(float))]


def _lines(sub: pd.DataFrame, palette: Mapping[str, tuple], ax: Any, markersize: float) -> None:
    """Value against step, one line per method: the mean over seeds with a t-interval band."""
    sns.lineplot(
        data=sub,
        x="step",
        y="value",
        hue="method",
        hue_order=[m for m in palette if m in set(sub["method"])],
        palette=palette,
        estimator="mean",
        errorbar=_ci95,
        marker="o",
        markersize=markersize,
        legend=False,
        ax=ax,
    )


def _learning_curves_figure(
    curves: pd.DataFrame,
    metric: str,
    titles: Mapping[str, str] = {},
    metric_title: str | None = None,
) -> Figure:
    _require(curves, ["label", "pair", "seed", "step", "split", "metric", "value"], "curves")
    df = curves[curves["metric"] == metric]
    if df.empty:
        raise DabenchError(
            f"no learning curves for the metric {metric!r} "
            f"(metrics with curves: {_available(curves, 'metric')})"
        )
    names = _method_names(df, titles)
    palette = _palette(list(names.values()))
    df = _with_methods(df, names)
    pairs, splits = _pairs(df), _splits(df)
    with _theme():
        fig, axes = _figure(len(pairs), len(splits), list(palette))
        for i, split in enumerate(splits):
            for j, pair in enumerate(pairs):
                ax = axes[i, j]
                sub = df[(df["split"] == split) & (df["pair"] == pair)]
                if not sub.empty:
                    _lines(sub, palette, ax, markersize=4)
                ax.set_title(f"{pair} · {split}")
                ax.set_xlabel("step")
                ax.set_ylabel(metric_title or metric)
        _legend(fig, palette, "line")
    return fig


def learning_curves(
    curves: pd.DataFrame,
    metric: str,
    stem: Path,
    titles: Mapping[str, str] = {},
    metric_title: str | None = None,
) -> list[Path]:
    """``metric`` during training against the step: one column of panels per pair, one row
    per split (target test first, then source validation, where present), one line per
    method, named by ``titles`` (else its label). Lines are the mean over seeds with a
    Student-t 95% confidence band (not seaborn's bootstrap: with 2-5 seeds a bootstrap
    interval is too narrow, and this one needs no random state to be reproducible);
    markers make a curve of a single evaluation visible. Returns [png, pdf]."""
    with _theme():
        return save_figure(_learning_curves_figure(curves, metric, titles, metric_title), stem)


def _loss_curves_figure(losses: pd.DataFrame, term: str, titles: Mapping[str, str] = {}) -> Figure:
    _require(losses, ["label", "pair", "seed", "step", "term", "value"], "losses")
    df = losses[losses["term"] == term]
    if df.empty:
        raise DabenchError(
            f"no logged training-loss term {term!r} (terms logged: {_available(losses, 'term')})"
        )
    names = _method_names(df, titles)
    palette = _palette(list(names.values()))
    df = _with_methods(df, names)
    pairs = _pairs(df)
    with _theme():
        fig, axes = _figure(len(pairs), 1, list(palette))
        for j, pair in enumerate(pairs):
            ax = axes[0, j]
            sub = df[df["pair"] == pair]
            if not sub.empty:
                _lines(sub, palette, ax, markersize=3)
                values = sub["value"].to_numpy(dtype=float)
                # Losses fall by orders of magnitude; on a linear axis the end is flat.
                if (values > 0).all() and values.max() > 100 * values.min():
                    ax.set_yscale("log")
            ax.set_title(pair)
            ax.set_xlabel("step")
            ax.set_ylabel(f"training loss: {term}")
        _legend(fig, palette, "line")
    return fig


def loss_curves(
    losses: pd.DataFrame, term: str, stem: Path, titles: Mapping[str, str] = {}
) -> list[Path]:
    """The logged training-loss ``term`` (``pose`` for the supervised loss, ``lr`` for the
    learning rate, ...) against the step: one panel per pair, one line per method that logs
    it. Mean over seeds with a Student-t 95% band (reproducible without random state, and
    honest with few seeds); a log axis when the loss spans more than two decades.
    Returns [png, pdf]."""
    with _theme():
        return save_figure(_loss_curves_figure(losses, term, titles), stem)


def _group_order(groups: pd.Series) -> list[str]:
    # the tables' order: the papers' (root → tip, head → feet), "all" — a summary — last
    return sorted(set(map(str, groups)), key=group_key)


def _group_bars_figure(
    groups: pd.DataFrame,
    metric: str,
    split: str,
    titles: Mapping[str, str] = {},
    metric_title: str | None = None,
) -> Figure:
    _require(groups, ["label", "pair", "seed", "split", "group", "metric", "value"], "groups")
    of_metric = groups[groups["metric"] == metric]
    if of_metric.empty:
        raise DabenchError(
            f"no per-group values for the metric {metric!r} "
            f"(metrics with per-group values: {_available(groups, 'metric')})"
        )
    df = of_metric[of_metric["split"] == split]
    if df.empty:
        raise DabenchError(
            f"no per-group values of {metric!r} on the split {split!r} "
            f"(splits with {metric!r}: {_available(of_metric, 'split')})"
        )
    names = _method_names(df, titles)
    palette = _palette(list(names.values()))
    df = _with_methods(df, names)
    pairs, order = _pairs(df), _group_order(df["group"])
    with _theme():
        fig, axes = _figure(len(pairs), 1, list(palette))
        for j, pair in enumerate(pairs):
            ax = axes[0, j]
            sub = df[df["pair"] == pair]
            present = set(sub["group"])
            if not sub.empty:
                sns.barplot(
                    data=sub,
                    x="group",
                    y="value",
                    order=[g for g in order if g in present],
                    hue="method",
                    hue_order=[m for m in palette if m in set(sub["method"])],
                    palette=palette,
                    estimator="mean",
                    errorbar=_ci95,
                    capsize=0.1,
                    err_kws={"linewidth": 0.8},
                    legend=False,
                    ax=ax,
                )
            ax.set_title(f"{pair} · {split}")
            ax.set_xlabel("joint group")
            ax.set_ylabel(metric_title or metric)
            ax.tick_params(axis="x", labelrotation=45)
        _legend(fig, palette, "bar")
    return fig


def group_bars(
    groups: pd.DataFrame,
    metric: str,
    split: str,
    stem: Path,
    titles: Mapping[str, str] = {},
    metric_title: str | None = None,
) -> list[Path]:
    """``metric`` per joint group on ``split``: one panel per pair, groups on the x axis in
    the order they first appear with ``all`` last, one bar per method. Bars are the mean
    over seeds, error bars a Student-t 95% confidence interval (reproducible without random
    state, and not as falsely narrow as a bootstrap over 2-5 seeds). Returns [png, pdf]."""
    with _theme():
        return save_figure(_group_bars_figure(groups, metric, split, titles, metric_title), stem)


def _selection_gap_figure(
    gap: pd.DataFrame, titles: Mapping[str, str] = {}, metric_title: str | None = None
) -> Figure:
    _require(gap, ["label", "pair", "seed", "gap"], "selection-gap")
    if gap.empty:
        raise DabenchError("no selection gaps to plot (the gap frame has no rows)")
    rule = str(gap.attrs.get("rule", "chosen rule"))
    names = _method_names(gap, titles)
    palette = _palette(list(names.values()))
    df = _with_methods(gap.rename(columns={"gap": "value"}), names)
    if df.empty:
        raise DabenchError("no finite selection gaps to plot (every gap is NaN)")
    pairs = _pairs(df)
    height = max(_PANEL_HEIGHT, 0.9 + 0.28 * len(palette))
    with _theme():
        # the method names are the y labels: room for them once, on the first panel only
        fig, axes = _figure(len(pairs), 1, list(palette), height=height)
        order = list(palette)
        for j, pair in enumerate(pairs):
            ax = axes[0, j]
            sub = df[df["pair"] == pair]
            sns.barplot(
                data=sub,
                x="value",
                y="method",
                order=order,
                hue="method",
                hue_order=order,
                palette=palette,
                estimator="mean",
                errorbar=_ci95,
                capsize=0.2,
                err_kws={"linewidth": 0.8},
                orient="h",
                legend=False,
                ax=ax,
            )
            ax.axvline(0.0, color="0.2", linewidth=0.8)
            ax.set_title(pair)
            ax.set_xlabel(f"{metric_title or 'metric'}: target-oracle − {rule}")
            ax.set_ylabel("")
            if j:
                ax.tick_params(labelleft=False)
    return fig


def selection_gap(
    gap: pd.DataFrame,
    stem: Path,
    titles: Mapping[str, str] = {},
    metric_title: str | None = None,
) -> list[Path]:
    """How much better each method would look if its checkpoint were chosen on target test
    labels: the per-trial ``gap`` (metric under the target-oracle rule minus under the
    chosen rule, ``gap.attrs["rule"]``) as horizontal bars, one panel per pair, with a line
    at 0. Bars are the mean over seeds, error bars a Student-t 95% confidence interval
    (reproducible without random state, honest with few seeds). Methods are named on the
    y axis, so there is no legend. Returns [png, pdf]."""
    with _theme():
        return save_figure(_selection_gap_figure(gap, titles, metric_title), stem)
