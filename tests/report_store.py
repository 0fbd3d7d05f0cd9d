"""Small synthetic result stores for report tests and benchmarks: valid records (a
quickstart record, edited) whose metrics are given by a function of (label, pair, seed)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import store
from bench.selection import SELECTION_RULES

QUICKSTART = Path(__file__).parents[1] / "reports" / "quickstart" / "records"
# the body oracle of the committed quickstart run (one evaluation), whatever its trial id
TEMPLATE: dict[str, Any] = next(
    rec
    for rec in (json.loads(p.read_text()) for p in sorted(QUICKSTART.glob("*/record.json")))
    if rec["label"] == "oracle" and rec["pair"]["source"] == "synth-body-clean"
)
CATEGORIES = {"source-only": "source-only", "oracle": "oracle"}
HAND = ("synth-hand-clean", "synth-hand-wild")
BODY = ("synth-body-clean", "synth-body-wild")


def record(
    label: str,
    pair: tuple[str, str],
    seed: int,
    value: Callable[[str, tuple[str, str], int, str], float],
    *,
    status: str = "ok",
    version: str = "2",
    grid: str = "tiny-report",
    oracle_bonus: float = 0.0,
) -> dict[str, Any]:
    """A record whose target-test metric ``m`` under the rules last and source-val is
    ``value(label, pair, seed, m)``; under target-oracle it is ``oracle_bonus`` better."""
    rec = copy.deepcopy(TEMPLATE)
    method, _, variant = label.partition("/")
    text = f"{grid}|{label}|{pair}|{seed}"
    rec.update(
        trial_id=hashlib.sha1(text.encode()).hexdigest()[:12],
        grid=grid,
        method=method,
        variant=variant or None,
        label=label,
        category=CATEGORIES.get(method, "domain-adaptation"),
        seed=seed,
        status=status,
        metrics_version=version,
        error=None if status != "failed" else {"type": "RuntimeError", "message": "boom"},
    )
    rec["pair"] = {**rec["pair"], "source": pair[0], "target": pair[1]}
    rec["spec"] = {**rec["spec"], "method": method, "variant": variant or None}
    overall = rec["metrics"]["target_test"]["overall"]
    values = {m: value(label, pair, seed, m) for m in overall}
    for m, v in values.items():
        overall[m] = v
    groups = rec["metrics"]["target_test"]["per_group"]
    for g, block in groups.items():
        for m in block:
            block[m] = values[m] * (1.0 + 0.01 * len(g))
    better = {m: -1.0 if m.startswith(("mpjpe", "pa_", "n_", "err")) else 1.0 for m in values}
    rec["metrics_by_rule"] = {
        rule: {
            "metrics": {
                "target_test": {
                    m: v + (better[m] * oracle_bonus if rule == "target-oracle" else 0.0)
                    for m, v in values.items()
                },
                "source_val": dict(rec["metrics_by_rule"]["last"]["metrics"]["source_val"]),
            },
            "step": rec["selection"]["step"],
        }
        for rule in SELECTION_RULES
    }
    if status == "failed":
        rec["metrics"], rec["metrics_by_rule"] = {}, {}
    return rec


def make_store(
    results: Path,
    labels: Iterable[str],
    pairs: Iterable[tuple[str, str]],
    seeds: Iterable[int],
    value: Callable[[str, tuple[str, str], int, str], float],
    **kwargs: Any,
) -> Path:
    for label in labels:
        for pair in pairs:
            for seed in seeds:
                store.write_trial(results, record(label, pair, seed, value, **kwargs), None)
    return results


def grid_report(results: Path, grid: str, section: dict[str, Any]) -> None:
    """What the runner writes for a grid with a ``report:`` section."""
    from bench.report.frames import GRID_REPORTS

    (results / GRID_REPORTS).mkdir(parents=True, exist_ok=True)
    (results / GRID_REPORTS / f"{grid}.json").write_text(json.dumps(section))
