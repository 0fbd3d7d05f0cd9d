"""Every report table, built from a :class:`~bench.report.frames.Store` into the table model:
the main table, the selection gap, per-joint-group tables, the papers' numbers beside ours,
ablation and complementarity tables. Cells summarise seeds as mean ± 95% CI (Student t)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import DabenchError
from bench.metrics import METRICS_VERSION
from bench.report.frames import GROUP_TITLES, Store, group_key
from bench.report.model import Cell, Column, Row, Table
from bench.report.protocols import (
    PAPER_METRICS,
    PUBLISHED_SELECTION,
    Reported,
    metric_info,
    paper_pair,
    reported_numbers,
)
from bench.report.stats import mean_ci
from bench.selection import RULES

# One section per method category, in bench.config.CATEGORIES' order (checked by a test)
SECTIONS = {
    "source-only": "Source only",
    "domain-adaptation": "Domain adaptation",
    "domain-generalisation": "Domain generalisation",
    "unsupervised": "Unsupervised (target images and masks, no labels)",
    "oracle": "Oracle",
}
SPLITS = {
    "target_test": "Target test split",
    "source_val": "Held-out source training data (source-val split)",
    "source_test": "Source test split",
}
ALSO_TEST = "test@"  # bench.data.pairs.also_test_role
CI_TEXT = "± is the 95% confidence interval of the mean over seeds (Student t; shown when n > 1)"
# Ablation cells: better or worse than the full method at the printed precision.
BETTER, WORSE = "*", "†"


@functools.lru_cache(maxsize=256)
def _card(label: str):
    """Cached: a report asks for a card's title once per row of every table, and parsing
    the YAML card each time cost seconds on large stores."""
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
    card = _card(label)
    return "unknown" if card is None else card.fidelity


def _ordered_labels(trials: pd.DataFrame) -> list[str]:
    first = trials.drop_duplicates("label").set_index("label")["category"]
    return sorted(first.index, key=lambda lb: (list(SECTIONS).index(first[lb]), lb))


def method_rows(trials: pd.DataFrame, oracle: bool = True) -> list[Row]:
    """One row per method label, grouped Source only / DA / DG / Oracle; oracle rows never
    compete for best-in-column."""
    first = trials.drop_duplicates("label").set_index("label")["category"]
    return [
        Row(lb, method_title(lb), SECTIONS[first[lb]], competes=first[lb] != "oracle")
        for lb in _ordered_labels(trials)
        if oracle or first[lb] != "oracle"
    ]


def start_text(rows: pd.DataFrame) -> str:
    """What a method's trials started from: random weights, or another method's network
    and how much of it they could load (a different head starts fresh), or the method's own
    earlier stage (its pre-training)."""

    def counts(column: str) -> str:
        values = sorted({int(v) for v in rows[column].dropna()})
        return "–".join(map(str, values[:1] + values[-1:] if len(values) > 1 else values))

    if "warm_start" not in rows or rows["warm_start"].isna().all():
        own = sorted(set(rows["start_stage"].dropna())) if "start_stage" in rows else []
        if own:
            return (
                f"its own {'/'.join(own)} stage ({counts('start_loaded') or '?'} tensors "
                f"loaded, {counts('start_fresh') or '?'} fresh)"
            )
        return "random initialisation"
    starts = sorted(set(rows["warm_start"].dropna()))

    heads = sorted({str(h) for h in rows.get("head", pd.Series(dtype=object)).dropna()})
    # the start is trained with the row's own model, so its head is the row's
    head = f" with a {'/'.join(heads)} head" if heads else ""
    return (
        f"{', '.join(starts)} network{head} of the same pair and seed "
        f"({counts('start_loaded') or '?'} tensors loaded, {counts('start_fresh') or '?'} fresh)"
    )


def methods_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per method: its title, how faithful it is to its paper, its network, which
    data of which domain it trained on, its training steps per stage and what it starts
    from."""
    labels = _ordered_labels(trials)

    def distinct(label: str, column: str) -> str:
        if column not in trials:  # records of an older store
            return "?"
        values = trials.loc[trials["label"] == label, column].dropna()
        return "; ".join(dict.fromkeys(str(v) for v in values if str(v))) or "?"

    table = pd.DataFrame(
        {
            "Method": [method_title(lb) for lb in labels],
            "Fidelity": [method_fidelity(lb) for lb in labels],
            "Network": [distinct(lb, "network") for lb in labels],
            "Data": [distinct(lb, "data") for lb in labels],
            "Steps per stage": [distinct(lb, "stage_steps") for lb in labels],
            "Starts from": [start_text(trials[trials["label"] == lb]) for lb in labels],
        }
    )
    notes = [distinct(lb, "notes") if "notes" in trials else "" for lb in labels]
    if any(n and n != "?" for n in notes):  # a substitute the paper does not use
        table["Notes"] = [n if n != "?" else "" for n in notes]
    return table


def reuse_text(trials: pd.DataFrame) -> str:
    """What storing the earlier stages of multi-stage methods (pre-training, a segmenter)
    once saved against every trial computing its own; "" when no two trials share one."""
    if "own_artifacts" not in trials:
        return ""
    used = [a for arts in trials["own_artifacts"] for a in arts]
    unique = dict(used)
    if len(used) == len(unique):  # nothing shared
        return ""
    made, scratch = sum(unique.values()), sum(s for _, s in used)
    users = int(sum(bool(a) for a in trials["own_artifacts"]))
    total = float(trials["total_seconds"].fillna(0).sum()) + made
    saved = scratch - made
    return (
        f"Stage artifacts: {len(unique)} earlier stages of the methods' own plans were "
        f"computed once ({made:,.0f} s) and used by {users} trials; computing them for "
        f"every trial would have taken {scratch:,.0f} s, so reusing them saved {saved:,.0f} s "
        f"({saved / (total + saved):.0%} of what these trials and stages would have cost "
        "without it)."
    )


def warm_start_text(trials: pd.DataFrame) -> str:
    if "warm_start" not in trials or trials["warm_start"].isna().all():
        return ""
    warm = trials["warm_start"].notna()
    adapt = sorted(set(trials.loc[warm, "steps"]))
    base = sorted(set(trials.loc[~warm, "steps"]))
    starts = ", ".join(sorted(set(trials["warm_start"].dropna())))
    heads = sorted({str(h) for h in trials.loc[warm, "head"].dropna()})
    own = (
        f"; each trained with the row's own head, {' or '.join(heads)}: see Methods"
        if len(heads) > 1
        else ""
    )
    return (
        f"Domain-adaptation rows start from the pair's {starts} weights (same seed{own}) and "
        f"adapt for {', '.join(map(str, adapt))} steps; the other rows train "
        f"{', '.join(map(str, base))} steps from scratch. "
    )


def seeds_text(trials: pd.DataFrame) -> str:
    seeds = trials.groupby(["label", "source", "target"])["seed"].nunique()
    lo, hi = int(seeds.min()), int(seeds.max())
    return f"{lo if lo == hi else f'{lo}–{hi}'} seed(s) per cell"


def split_text(split: str) -> str:
    """What a split is, in words."""
    if split.startswith(ALSO_TEST):
        return (
            f"Test split of {split[len(ALSO_TEST) :]}, a dataset the trials never trained on "
            "(the pair's also_test: cross-dataset generalisation; each trial's step is the "
            "one its rule chose on its own pair)"
        )
    return SPLITS.get(split, split)


def caption(trials: pd.DataFrame, rule: str, split: str = "target_test") -> str:
    """The main table's caption: split, starts, selection rule, seeds, what ± means, metric
    suite. Every table's caption names the selection rule."""
    return (
        f"{split_text(split)}. {warm_start_text(trials)}Model selection: {rule} — "
        f"{RULES[rule].description}. {seeds_text(trials)}; {CI_TEXT}. Bold: best per column, "
        f"oracle rows excluded. Metric suite v{METRICS_VERSION}."
    )


def _values(sub: pd.DataFrame, column: str) -> np.ndarray:
    if column not in sub:
        return np.array([])
    values = sub[column].astype(float).to_numpy()
    return values[np.isfinite(values)]


def summary_cell(values: np.ndarray, failed: int, protocol: str, signed: bool = False) -> Cell:
    """Mean ± 95% CI half-width over the finite values."""
    if not len(values):
        return Cell(failed=failed, protocol=protocol, signed=signed)
    ci = mean_ci(values)
    return Cell(
        value=float(ci.mean),
        spread=float(ci.half_width) if ci.n > 1 else None,
        n=ci.n,
        failed=failed,
        signed=signed,
        protocol=protocol,
    )


def _pairs(trials: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(source, target, display) for every pair, in a stable order."""
    firsts = trials.drop_duplicates(["source", "target"])
    return sorted(zip(firsts["source"], firsts["target"], firsts["pair"], strict=True))


def _metric_columns(trials: pd.DataFrame, metrics: Sequence[str]) -> list[Column]:
    cols = []
    for source, target, pair in _pairs(trials):
        for m in metrics:
            info = metric_info(m)
            cols.append(
                Column(
                    f"{source}|{target}|{m}",
                    pair,
                    info.title,
                    info.decimals,
                    info.lower_is_better,
                    info.protocol,
                )
            )
    return cols


def _cells(
    table: Table,
    trials: pd.DataFrame,
    value_of: Any,
    signed: bool = False,
    columns: Sequence[Column] | None = None,
) -> None:
    """Fill every (row, column) of a pair × metric table (or of ``columns``) with
    ``value_of(sub, metric)`` → per-trial values of the row's finished trials of that
    pair."""
    for (label, source, target), sub in trials.groupby(["label", "source", "target"]):
        if label not in {r.key for r in table.rows}:
            continue
        failed = int((sub["status"] == "failed").sum())
        done = sub[sub["status"] != "failed"]
        for col in table.columns if columns is None else columns:
            s, t, metric = col.key.split("|")
            if (s, t) != (source, target):
                continue
            values = value_of(done, metric)
            table.put(label, col.key, summary_cell(values, failed, col.protocol, signed))


def protocol_notes(metrics: Sequence[str]) -> list[str]:
    return [metric_info(m).protocol + "." for m in metrics]


def main_table(
    store: Store, rule: str, metrics: Sequence[str], split: str = "target_test"
) -> Table:
    trials = store.trials
    table = Table(
        "main",
        caption(trials, rule, split),
        _metric_columns(trials, metrics),
        method_rows(trials),
        notes=protocol_notes(metrics),
    )
    _cells(table, trials, lambda sub, m: _values(sub, f"{rule}:{split}/{m}"))
    table.mark_best()
    return table


def unseen_tables(store: Store, rule: str, metrics: Sequence[str]) -> list[Table]:
    """One table per dataset that pairs were also tested on (``also_test``): the report's
    metrics defined there (a 2D-only set has no 3D ones), and PCKh where the set has head
    sizes. The rows selected their step by ``rule`` on the pair's own target, never on it."""
    trials = store.trials
    tables = []
    for card in _also_tested(trials, rule):
        split = ALSO_TEST + card
        columns = [c for c in trials if c.startswith(f"{rule}:{split}/")]
        sub = trials[trials[columns].notna().any(axis=1)]
        shown = [m for m in (*metrics, "pckh_50") if len(_values(sub, f"{rule}:{split}/{m}"))]
        if not shown:
            continue
        table = Table(
            f"unseen-{card}",
            caption(sub, rule, split),
            _metric_columns(sub, shown),
            method_rows(sub),
            notes=protocol_notes(shown),
        )
        _cells(table, sub, lambda rows, m, sp=split: _values(rows, f"{rule}:{sp}/{m}"))
        table.mark_best()
        tables.append(table)
    return tables


def gap_table(store: Store, rule: str, metrics: Sequence[str]) -> Table | None:
    """The same cell selected on the target test set (``target-oracle``) minus selected by
    ``rule``: how much a published, oracle-selected number flatters a method. None when the
    rule is the oracle itself."""
    if rule == "target-oracle":
        return None
    trials = store.trials
    table = Table(
        "selection-gap",
        f"Selection gap on the target test split: the value under target-oracle selection "
        f"({RULES['target-oracle'].description}) minus the value under {rule} selection "
        f"({RULES[rule].description}), per trial, averaged over seeds; {CI_TEXT}. Negative "
        "for errors and positive for PCK/AUC: oracle selection looks better. Every published "
        "pose-DA number we know of is oracle-selected.",
        [
            Column(c.key, c.group, c.title, c.decimals, None, c.protocol)
            for c in _metric_columns(trials, metrics)
        ],
        method_rows(trials),
    )

    def gap(sub: pd.DataFrame, m: str) -> np.ndarray:
        a = f"target-oracle:target_test/{m}"
        b = f"{rule}:target_test/{m}"
        if a not in sub or b not in sub:
            return np.array([])
        d = sub[a].astype(float).to_numpy() - sub[b].astype(float).to_numpy()
        return d[np.isfinite(d)]

    _cells(table, trials, gap, signed=True)
    if all(c.missing or c.value == 0 for c in table.cells.values()):
        table.notes.append(
            "Every gap is zero: each trial was evaluated once (train.eval_every ≥ the budget), "
            "so every rule picks the same checkpoint."
        )
    return table


def group_tables(store: Store, metrics: Sequence[str], split: str = "target_test") -> list[Table]:
    """Per-joint-group tables (the papers' MCP/PIP/DIP/tip and body-part columns), one per
    metric, under each record's own selection rule (the only rule records keep groups for)."""
    groups = store.groups[(store.groups["split"] == split) & (store.groups["status"] != "failed")]
    if groups.empty:
        return []
    rules = sorted(set(groups["rule"]))
    tables = []
    for m in metrics:
        sub = groups[groups["metric"] == m]
        if sub.empty:
            continue
        info = metric_info(m)
        cols = []
        for source, target, pair in _pairs(store.trials):
            names = sorted(set(sub.loc[sub["pair"] == pair, "group"]), key=group_key)
            cols += [
                Column(
                    f"{source}|{target}|{g}",
                    pair,
                    GROUP_TITLES.get(g, g.capitalize()),
                    info.decimals,
                    info.lower_is_better,
                    info.protocol,
                )
                for g in names
            ]
        table = Table(
            f"groups-{m}",
            f"{info.title.rsplit(' ', 1)[0]} per joint group, {SPLITS.get(split, split)}. Model "
            f"selection: {', '.join(rules)} (the records' own rule). {seeds_text(store.trials)}; "
            f"{CI_TEXT}. 'All' is the joint set's own 'all' group (for bodies in the MPII-16 "
            "order: the 12 limb joints, as TLL's tables). Bold: best per column, oracle rows "
            "excluded.",
            cols,
            method_rows(store.trials),
            notes=[info.protocol + "."],
        )
        for (label, source, target, group), g in sub.groupby(
            ["label", "source", "target", "group"]
        ):
            values = g["value"].to_numpy()
            values = values[np.isfinite(values)]
            key = f"{source}|{target}|{group}"
            table.put(label, key, summary_cell(values, 0, info.protocol))
        table.mark_best()
        tables.append(table)
    return tables


def _grid_setting(store: Store, key: str) -> dict[str, Any]:
    """A ``report:`` setting merged over the grids of the store (mappings) or listed."""
    merged: dict[str, Any] = {}
    for section in store.grid_reports.values():
        value = section.get(key)
        if isinstance(value, Mapping):
            merged.update(value)
    return merged


def _also_tested(rows: pd.DataFrame, rule: str) -> list[str]:
    """The datasets ``rows`` were also tested on (their pairs' also_test), sorted."""
    prefix = f"{rule}:{ALSO_TEST}"
    return sorted(
        {
            c[len(prefix) :].split("/")[0]
            for c in rows
            if c.startswith(prefix) and rows[c].notna().any()
        }
    )


def paper_table(store: Store, rule: str, metrics: Sequence[str], required: bool) -> Table | None:
    """Ours beside the papers' numbers for every pair that is a paper's pair: per pair, our
    columns (our protocols) and one published column per published protocol, each with its
    protocol as a footnote. A dataset a pair was also tested on (also_test) is a paper pair
    of its own — source → that dataset, as a generalisation table reports it — measured on
    that dataset's test split. ``required``: no mappable pair is an error."""
    trials = store.trials
    grid_map = _grid_setting(store, "paper_pairs")
    # (source, target, dataset tested: "" for the pair's own target) → paper pair
    mapped: dict[tuple[str, str, str], str] = {}
    for s, t, _ in _pairs(trials):
        if (p := paper_pair(s, t, grid_map)) is not None:
            mapped[(s, t, "")] = p
        for card in _also_tested(trials[(trials["source"] == s) & (trials["target"] == t)], rule):
            if (p := paper_pair(s, card, grid_map)) is not None:
                mapped[(s, t, card)] = p
    if not mapped:
        if required:
            pairs = ", ".join(d for _, _, d in _pairs(trials))
            raise DabenchError(
                f"paper numbers were asked for, but no pair of the store maps to a paper's pair "
                f"({pairs}): a real dataset's card names its paper_name, a grid may map a pair "
                "with report: {paper_pairs: {'source → target': 'Paper→Pair'}}; synthetic pairs "
                "never map"
            )
        return None
    labels = _ordered_labels(trials)
    reported: list[Reported] = []
    for method in sorted({lb.partition("/")[0] for lb in labels}):
        card = _card(method)
        if card is not None:
            numbers = reported_numbers(method, card.reported, f"method card {card.name}")
            reported += [r for r in numbers if r.label in labels and not r.group]

    def split_of(tested: str) -> str:
        return ALSO_TEST + tested if tested else "target_test"

    def ours(sub: pd.DataFrame, token: str) -> np.ndarray:
        metric, _, tested = token.partition("@")
        return _values(sub, f"{rule}:{split_of(tested)}/{metric}")

    cols: list[Column] = []
    footnotes: dict[str, str] = {}
    published: dict[tuple[str, str, str, str], str] = {}  # (source, target, tested, protocol)
    extra_notes: list[str] = []
    for (source, target, tested), ppair in sorted(mapped.items()):
        display = trials.loc[
            (trials["source"] == source) & (trials["target"] == target), "pair"
        ].iloc[0]
        group = f"{display}{f', tested on {tested}' if tested else ''} ({ppair})"
        suffix = f"@{tested}" if tested else ""
        rows = trials[(trials["source"] == source) & (trials["target"] == target)]
        shown = [m for m in metrics if not tested or len(ours(rows, m + suffix))]
        if tested and len(ours(rows, "pckh_50" + suffix)):
            shown.append("pckh_50")
            extra_notes = ["pckh_50"]
        for m in shown:
            info = metric_info(m)
            cols.append(
                Column(
                    f"{source}|{target}|{m}{suffix}",
                    group,
                    f"ours: {info.title}",
                    info.decimals,
                    info.lower_is_better,
                    info.protocol,
                )
            )
        for r in reported:
            if r.pair != ppair or (source, target, tested, r.protocol) in published:
                continue
            mark = chr(ord("a") + len(footnotes))
            footnotes[mark] = f"{r.protocol}; {PUBLISHED_SELECTION}"
            key = f"{source}|{target}|paper:{r.metric}{suffix}"
            title, lower, _ = PAPER_METRICS[r.metric]
            cols.append(Column(key, group, f"published: {title} ({mark})", 1, lower, r.protocol))
            published[(source, target, tested, r.protocol)] = key
    table = Table(
        "papers",
        f"Our numbers beside the published ones, {SPLITS['target_test']} (or the test split "
        f"of the dataset a column group names). Ours: model "
        f"selection {rule} — {RULES[rule].description}; {seeds_text(trials)}; {CI_TEXT}. "
        "Published: the method card's reported numbers for the same method and pair (where "
        "a card lists several settings for one pair, the first is shown; see the card).",
        cols,
        method_rows(trials),
        footnotes=footnotes,
        notes=protocol_notes([*metrics, *extra_notes]),
    )
    mine = [c for c in cols if c.key not in published.values()]
    _cells(table, trials, ours, columns=mine)
    for r in reported:
        for (source, target, tested), ppair in mapped.items():
            key = published.get((source, target, tested, r.protocol))
            if r.pair == ppair and key and (r.label, key) not in table.cells:
                table.put(r.label, key, Cell(value=r.value, n=1, protocol=r.protocol))
    return table


def _delta_table(
    name: str,
    caption_text: str,
    store: Store,
    rule: str,
    metrics: Sequence[str],
    rows: list[Row],
    reference: str,
) -> Table:
    """Rows' values, each non-reference row as its signed difference to ``reference`` with
    a mark for better (*) or worse (†) at the printed precision."""
    trials = store.trials[store.trials["label"].isin([r.key for r in rows])]
    table = Table(
        name,
        caption_text,
        [
            Column(c.key, c.group, c.title, c.decimals, None, c.protocol)
            for c in _metric_columns(trials, metrics)
        ],
        rows,
        footnotes={
            BETTER: f"better than {reference} at the printed precision",
            WORSE: f"worse than {reference} at the printed precision",
        },
    )
    _cells(table, trials, lambda sub, m: _values(sub, f"{rule}:target_test/{m}"))
    for col in table.columns:
        base = table.cell(reference, col.key)
        lower = metric_info(col.key.split("|")[2]).lower_is_better
        for row in rows:
            cell = table.cell(row.key, col.key)
            if row.key == reference or cell.missing or base.missing:
                continue
            delta = round(cell.value - base.value, col.decimals)
            mark = () if delta == 0 else (BETTER,) if (delta < 0) == lower else (WORSE,)
            table.cells[(row.key, col.key)] = Cell(
                value=cell.value - base.value,
                spread=None,
                n=min(cell.n, base.n),
                failed=cell.failed,
                signed=True,
                marks=mark,
                protocol=col.protocol,
            )
    return table


def ablation_tables(store: Store, rule: str, metrics: Sequence[str]) -> list[Table]:
    """One table per ``ablation_groups`` entry of a card with at least two of its variants
    in the store, laid out as the papers' ablation tables: the full method's values, every
    other variant as its difference to them."""
    labels = set(store.trials["label"])
    tables = []
    for method in sorted({lb.partition("/")[0] for lb in labels}):
        card = _card(method)
        if card is None:
            continue
        for group, members in (card.ablation_groups or {}).items():
            present = [m for m in members if m in labels]
            if len(present) < 2:
                continue
            full = method if method in present else present[0]
            rows = [Row(m, method_title(m) + (" (full)" if m == full else "")) for m in present]
            tables.append(
                _delta_table(
                    f"ablation-{method}-{group}",
                    f"Ablation {group!r} of {card.title}, {SPLITS['target_test']}: the full "
                    f"method ({full}) as measured, every other row as its difference to it "
                    f"(sign: row minus full). Model selection: {rule} — "
                    f"{RULES[rule].description}. {seeds_text(store.trials)}; mean over seeds.",
                    store,
                    rule,
                    metrics,
                    rows,
                    full,
                )
            )
    return tables


COMPLEMENTARITY_KEYS = ("baseline", "a", "b", "both")


def complementarity_tables(store: Store, rule: str, metrics: Sequence[str]) -> list[Table]:
    """Baseline, +A, +B, +A+B — where a grid asks with ``report: {complementarity: [{name,
    baseline, a, b, both}]}`` (method labels)."""
    tables = []
    labels = set(store.trials["label"])
    for grid, section in sorted(store.grid_reports.items()):
        for i, spec in enumerate(section.get("complementarity") or []):
            where = f"grid {grid}: report.complementarity[{i}]"
            if not isinstance(spec, Mapping) or set(spec) - {"name", *COMPLEMENTARITY_KEYS}:
                raise DabenchError(
                    f"{where} must map {', '.join(COMPLEMENTARITY_KEYS)} (and a name) to "
                    f"method labels, got {spec!r}"
                )
            missing = [k for k in COMPLEMENTARITY_KEYS if spec.get(k) not in labels]
            if missing:
                raise DabenchError(
                    f"{where}: {', '.join(f'{k}={spec.get(k)!r}' for k in missing)} not in the "
                    f"store; labels present: {', '.join(sorted(labels))}"
                )
            b = spec["baseline"]
            names = {
                "baseline": method_title(b),
                "a": f"+ A: {method_title(spec['a'])}",
                "b": f"+ B: {method_title(spec['b'])}",
                "both": f"+ A + B: {method_title(spec['both'])}",
            }
            rows = [Row(spec[k], names[k]) for k in COMPLEMENTARITY_KEYS]
            name = str(spec.get("name") or f"{grid}-{i}")
            tables.append(
                _delta_table(
                    f"complementarity-{name}",
                    f"Complementarity {name!r}: does A add to B? The baseline as measured, "
                    "every other row as its difference to it (row minus baseline), "
                    f"{SPLITS['target_test']}. Model selection: {rule} — "
                    f"{RULES[rule].description}. {seeds_text(store.trials)}; mean over seeds.",
                    store,
                    rule,
                    metrics,
                    rows,
                    b,
                )
            )
    return tables


def diagnostics_tables(store: Store) -> list[Table]:
    """One table per method card that declares ``diagnostics`` and has trials logging them:
    how one of the method's parts did (MIM-FCR-AR's segmenter IoU on the target test
    images), per pair, the last value each trial logged, mean ± CI over seeds."""
    losses = store.losses
    if losses.empty:
        return []
    last = losses.sort_values("step", kind="stable").groupby(["trial_id", "term"])["value"].last()
    trials = store.trials
    method_of = trials["label"].str.partition("/")[0]
    tables = []
    for name in sorted(set(method_of)):
        card = _card(name)
        if card is None or not card.diagnostics:
            continue
        mine = trials[method_of == name]
        present = last.index.to_frame(index=False)  # (trial_id, term) pairs logged
        present = present[
            present["trial_id"].isin(mine["trial_id"]) & present["term"].isin(card.diagnostics)
        ]
        if present.empty:
            continue
        logged = {t: d for t, d in card.diagnostics.items() if t in set(present["term"])}
        logging = set(mine.loc[mine["trial_id"].isin(present["trial_id"]), "label"])
        labels = [lb for lb in _ordered_labels(mine) if lb in logging]
        columns = [
            Column(
                f"{s}|{t}|{term}",
                pair,
                d.title,
                d.decimals,
                None if d.higher_is_better is None else not d.higher_is_better,
                d.protocol,
            )
            for s, t, pair in _pairs(mine)
            for term, d in logged.items()
        ]
        table = Table(
            f"diagnostics-{name}",
            f"{card.title}: how the method's parts did, the last value each trial logged "
            f"(rows whose trials log none are left out). {seeds_text(mine)}; {CI_TEXT}.",
            columns,
            [Row(lb, method_title(lb)) for lb in labels],
            notes=[f"{d.title}: {d.protocol}." for d in logged.values()],
        )
        scales = {term: d.scale for term, d in logged.items()}
        _cells(table, mine, functools.partial(_last_logged, last=last, scales=scales))
        table.mark_best()
        tables.append(table)
    return tables


def _last_logged(
    sub: pd.DataFrame, term: str, *, last: pd.Series, scales: Mapping[str, float]
) -> np.ndarray:
    values = [last.get((tid, term), np.nan) * scales[term] for tid in sub["trial_id"]]
    return np.array([v for v in values if np.isfinite(v)])
