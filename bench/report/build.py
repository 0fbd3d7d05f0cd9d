"""``dabench report DIR``: a report folder, a function of the result store only —
``report.md`` (every table, linking the figures), ``tables.tex`` (every table; also one
file each under ``tables/``), ``csv/`` (every table's numbers and the trials), ``figures/``
(PNG and PDF). Everything is made in a temporary folder first, so a bad input leaves the
previous report untouched, and the same records give the same bytes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench.errors import DabenchError
from bench.methods.cards import FIDELITY
from bench.report import render
from bench.report.comparisons import cd_scores, statistics_tables
from bench.report.frames import Store, open_store
from bench.report.model import Table
from bench.report.protocols import MAIN_METRICS, METRICS, metric_info
from bench.report.tables import (
    ablation_tables,
    complementarity_tables,
    diagnostics_tables,
    gap_table,
    group_tables,
    main_table,
    method_title,
    methods_table,
    paper_table,
    reuse_text,
    unseen_tables,
)
from bench.selection import SELECTION_RULES

FORMATS = ("md", "tex", "csv")
# What a report folder holds; a new report replaces exactly these.
ENTRIES = ("report.md", "tables.tex", "tables", "csv", "figures")


def _check(store: Store, rule: str | None, metrics: Sequence[str] | None) -> tuple[str, list[str]]:
    trials = store.trials
    versions = sorted(set(trials["metrics_version"]))
    if len(versions) > 1:
        counts = trials["metrics_version"].value_counts().sort_index()
        raise DabenchError(
            f"{store.path} mixes records of metric-suite versions "
            f"{', '.join(f'v{v} ({n} trials)' for v, n in counts.items())}: their numbers are "
            "defined differently and cannot share a table; report each version's trials "
            "from its own store"
        )
    if rule is None:
        rule = trials["selection"].mode().sort_values().iloc[0]
    if rule not in SELECTION_RULES:
        raise DabenchError(f"unknown selection rule {rule!r}; valid: {', '.join(SELECTION_RULES)}")
    metrics = list(metrics or MAIN_METRICS)
    for m in metrics:
        metric_info(m)  # unknown → error naming the valid metrics
        if f"{rule}:target_test/{m}" not in trials:
            present = sorted(k for k in METRICS if f"{rule}:target_test/{k}" in trials)
            raise DabenchError(
                f"metric {m!r} is not in the records under rule {rule!r}; present: "
                f"{', '.join(present) or 'none'}"
            )
    return rule, metrics


def build_tables(store: Store, rule: str, metrics: Sequence[str], papers: bool | None) -> dict:
    """Every table of the report, by section."""
    return {
        "main": [main_table(store, rule, metrics)],
        "unseen": unseen_tables(store, rule, metrics),
        "gap": [t for t in [gap_table(store, rule, metrics)] if t is not None],
        "groups": group_tables(store, metrics),
        "papers": []
        if papers is False
        else [t for t in [paper_table(store, rule, metrics, required=bool(papers))] if t],
        "ablations": ablation_tables(store, rule, metrics),
        "complementarity": complementarity_tables(store, rule, metrics),
        "statistics": statistics_tables(store, rule, metrics),
        "diagnostics": diagnostics_tables(store),
    }


SECTION_TITLES = {
    "main": "Main table",
    "unseen": "Datasets never trained on",
    "gap": "Selection gap",
    "groups": "Per joint group",
    "papers": "Published numbers beside ours",
    "ablations": "Ablations",
    "complementarity": "Complementarity",
    "statistics": "Statistics",
    "diagnostics": "Method diagnostics",
}


def _figures(store: Store, rule: str, metrics: Sequence[str], folder: Path) -> dict[str, list]:
    """Every plot, by section: (caption, png path relative to the report)."""
    from bench.report import plots
    from bench.report.stats import cd_diagram

    titles = {lb: method_title(lb) for lb in set(store.trials["label"])}
    out: dict[str, list[tuple[str, str]]] = {k: [] for k in ("curves", "groups", "gap", "cd")}
    fig = folder / "figures"

    def add(section: str, caption: str, paths: list[Path]) -> None:
        out[section].append((caption, paths[0].relative_to(folder).as_posix()))

    first = metrics[0]
    info = metric_info(first)
    curves = store.curves[store.curves["metric"] == first]
    if not curves.empty:
        add(
            "curves",
            f"{info.title} during training (target test and source-val)",
            plots.learning_curves(store.curves, first, fig / f"curves-{first}", titles, info.title),
        )
    if not store.losses.empty and "pose" in set(store.losses["term"]):
        add(
            "curves",
            "Pose loss during training",
            plots.loss_curves(store.losses, "pose", fig / "loss-pose", titles),
        )
    # bars for the primary metric only: the tables give every metric per group, and each
    # bar plot of a large grid costs seconds to draw
    for m in metrics[:1]:
        g = store.groups[(store.groups["metric"] == m) & (store.groups["split"] == "target_test")]
        if not g.empty:
            add(
                "groups",
                f"{metric_info(m).title} per joint group",
                plots.group_bars(
                    store.groups,
                    m,
                    "target_test",
                    fig / f"groups-{m}",
                    titles,
                    metric_info(m).title,
                ),
            )
    if rule != "target-oracle":
        a, b = f"target-oracle:target_test/{first}", f"{rule}:target_test/{first}"
        t = store.trials[store.trials["status"] != "failed"]
        if a in t and b in t:
            gap = pd.DataFrame(
                {
                    "label": t["label"],
                    "category": t["category"],
                    "pair": t["pair"],
                    "seed": t["seed"],
                    "gap": t[a] - t[b],
                }
            ).dropna()
            gap.attrs["rule"] = rule
            if not gap.empty:
                add(
                    "gap",
                    f"Selection gap of {info.title}",
                    plots.selection_gap(gap, fig / f"gap-{first}", titles, info.title),
                )
    for m in metrics:
        scores = cd_scores(store, rule, m)
        if scores.shape[1] >= 3 and scores.shape[0] >= 2:
            figure = cd_diagram(scores, metric_info(m).lower_is_better, metric_info(m).title)
            add(
                "cd",
                f"Critical-difference diagram, {metric_info(m).title}",
                plots.save_figure(figure, fig / f"cd-{m}", tight=True),
            )
    return out


def _markdown(
    store: Store, rule: str, tables: dict[str, list[Table]], figures: dict[str, list]
) -> str:
    trials = store.trials
    grids = ", ".join(sorted(set(trials["grid"])))
    parts = [f"# Results: {grids}", ""]

    def images(section: str) -> list[str]:
        return [f"![{c}]({p})" for c, p in figures.get(section, [])] + (
            [""] if figures.get(section) else []
        )

    for section, title in SECTION_TITLES.items():
        found = tables[section]
        figs = {"main": "curves", "gap": "gap", "groups": "groups", "statistics": "cd"}
        if not found and not figures.get(figs.get(section, ""), []):
            continue
        parts += [f"## {title}", ""]
        for t in found:
            parts += [render.markdown(t)]
        if section in figs:
            parts += images(figs[section])
    if not tables["papers"]:
        parts += [
            "## Published numbers beside ours",
            "",
            "No pair of this store is a paper's pair (synthetic pairs never are), so no "
            "published number is shown.",
            "",
        ]
    methods = methods_table(trials)
    levels = set(methods["Fidelity"])
    status = trials["status"].value_counts().to_dict()
    parts += [
        "## Methods",
        "",
        methods.to_markdown(index=False, tablefmt="github"),
        "",
        *[f"- {level}: {FIDELITY[level]}." for level in FIDELITY if level in levels],
        "",
        "## Trials",
        "",
        f"{len(trials)} trials: " + ", ".join(f"{v} {k}" for k, v in sorted(status.items())) + ".",
    ]
    reuse = reuse_text(trials)
    if reuse:
        parts += ["", reuse]
    failed = trials[trials["status"] == "failed"].sort_values(["label", "pair", "seed"])
    for _, row in failed.iterrows():
        parts.append(
            f"- failed: {row['label']} {row['pair']} seed {row['seed']} (trial {row['trial_id']})"
        )
    devices = sorted({str(d) for d in trials["device"] if d})
    parts += [
        "",
        (f"Devices: {', '.join(devices)}. " if devices else "")
        + "Generated by `dabench report` from the records; do not edit by hand. Model "
        f"selection throughout: {rule}.",
    ]
    return "\n".join(parts) + "\n"


def write_report(
    results: Path | str,
    out: Path | str | None = None,
    formats: Sequence[str] = FORMATS,
    rule: str | None = None,
    metrics: Sequence[str] | None = None,
    papers: bool | None = None,
) -> Path:
    """Write the report folder (default ``<results>/report``) and return it. ``papers``:
    True requires published numbers (an error when no pair maps to a paper), False leaves
    them out, None shows them where a pair maps."""
    bad = sorted(set(formats) - set(FORMATS))
    if bad or not formats:
        raise DabenchError(f"unknown report format(s) {bad}; valid: {', '.join(FORMATS)}")
    store = open_store(results)
    rule, metrics = _check(store, rule, metrics)
    tables = build_tables(store, rule, metrics, papers)
    every = [t for ts in tables.values() for t in ts]
    out = Path(out) if out is not None else Path(results) / "report"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=out.parent) as tmp:
        new = Path(tmp) / "new"
        new.mkdir()
        if "md" in formats:
            figures = _figures(store, rule, metrics, new)
            (new / "report.md").write_text(_markdown(store, rule, tables, figures))
        if "tex" in formats:
            (new / "tables").mkdir()
            texts = []
            for t in every:
                text = render.latex(t)
                (new / "tables" / f"{t.name}.tex").write_text(text)
                texts.append(text)
            (new / "tables.tex").write_text("\n".join(texts))
        if "csv" in formats:
            (new / "csv").mkdir()
            for t in every:
                (new / "csv" / f"{t.name}.csv").write_text(render.csv(t))
            trials = store.trials.sort_values("trial_id").drop(columns=["device"])
            trials.to_csv(new / "csv" / "trials.csv", index=False, float_format="%.10g")
        _swap(new, out, Path(tmp) / "old")
    return out


def _swap(new: Path, out: Path, old: Path) -> None:
    """Replace the report's entries in ``out`` by those of ``new``, each by a rename; entries
    the new report does not have (another format) are removed, other files are kept."""
    out.mkdir(parents=True, exist_ok=True)
    old.mkdir()
    for name in ENTRIES:
        if (out / name).exists():
            (out / name).rename(old / name)
        if (new / name).exists():
            (new / name).rename(out / name)
    shutil.rmtree(old)
