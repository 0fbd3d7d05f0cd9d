"""A result store read once, as the tidy frames every table, statistic and plot is built
from. Torch-free: ``dabench report`` must start fast on a laptop."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import DabenchError
from bench.store import frame, records

# The grid's `report:` section, written into the store by the runner (one file per grid),
# so that a report stays a function of the store alone.
GRID_REPORTS = "_report"

# The papers' column order: hands root → tip (MCP, PIP, DIP, tip), bodies head → feet, "all"
# last; other groups alphabetically before "all".
GROUP_ORDER = (
    "mcp",
    "pip",
    "dip",
    "tip",
    "head",
    "neck",
    "shoulder",
    "elbow",
    "wrist",
    "torso",
    "hip",
    "knee",
    "ankle",
)
GROUP_TITLES = {"mcp": "MCP", "pip": "PIP", "dip": "DIP", "tip": "Tip", "all": "All"}


def group_key(group: str) -> tuple[int, str]:
    if group == "all":
        return (2, "")
    return (0, f"{GROUP_ORDER.index(group):02d}") if group in GROUP_ORDER else (1, group)


_KEY = ["trial_id", "label", "category", "source", "target", "pair", "seed", "status"]


def short_pair(source: str, target: str) -> str:
    """``synth-hand-clean → synth-hand-wild`` reads better as ``hand-clean → hand-wild``."""
    strip = "synth-" if source.startswith("synth-") and target.startswith("synth-") else ""
    return f"{source.removeprefix(strip)} → {target.removeprefix(strip)}"


@dataclass(frozen=True)
class Store:
    """``trials``: one row per trial (:func:`bench.store.frame`, with ``pair`` shortened);
    ``groups``: per-joint-group metrics under each record's own selection rule, one row per
    (trial, split, group, metric); ``curves``: the evaluations during training, one row per
    (trial, step, split, metric); ``losses``: the logged training-loss terms, one row per
    (trial, step, term; the learning rate is the term ``lr``); ``grid_reports``: the grids'
    ``report:`` sections."""

    path: Path
    trials: pd.DataFrame
    groups: pd.DataFrame
    curves: pd.DataFrame
    losses: pd.DataFrame
    grid_reports: Mapping[str, Mapping[str, Any]]


def open_store(results: Path | str) -> Store:
    """Read every record of ``results`` once; a store without records is an error."""
    path = Path(results)
    recs = records(path)
    if not recs:
        raise DabenchError(
            f"no trial records in {path} (a result store holds <trial id>/record.json; "
            "run a grid first: dabench run GRID --results DIR)"
        )
    trials = frame(recs)
    trials["pair"] = [
        short_pair(s, t) for s, t in zip(trials["source"], trials["target"], strict=True)
    ]
    return Store(path, trials, _groups(recs), _curves(recs), _losses(recs), read_grid_reports(path))


def _ids(rec: Mapping[str, Any]) -> dict[str, Any]:
    source, target = rec["pair"]["source"], rec["pair"]["target"]
    return {
        "trial_id": rec["trial_id"],
        "label": rec["label"],
        "category": rec["category"],
        "source": source,
        "target": target,
        "pair": short_pair(source, target),
        "seed": rec["seed"],
        "status": rec["status"],
    }


def _groups(recs: list[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for rec in recs:
        ids = _ids(rec)
        rule = rec["selection"]["rule"]
        for split, block in rec["metrics"].items():
            for group, values in block.get("per_group", {}).items():
                for metric, value in values.items():
                    rows.append((*ids.values(), rule, split, group, metric, value))
    columns = [*_KEY, "rule", "split", "group", "metric", "value"]
    return pd.DataFrame(rows, columns=columns).astype({"value": float})


def _curves(recs: list[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for rec in recs:
        ids = _ids(rec)
        for entry in rec["curves"].get("evaluations", []):
            for split, values in entry.items():
                if not isinstance(values, Mapping):
                    continue  # "step", "stage"
                for metric, value in values.items():
                    rows.append(
                        (*ids.values(), entry.get("step"), entry.get("stage"), split, metric, value)
                    )
    columns = [*_KEY, "step", "stage", "split", "metric", "value"]
    return pd.DataFrame(rows, columns=columns).astype({"value": float})


def _losses(recs: list[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for rec in recs:
        ids = _ids(rec)
        for entry in rec["curves"].get("losses", []):
            for term, value in entry.items():
                if term not in ("step", "stage") and isinstance(value, int | float):
                    rows.append((*ids.values(), entry.get("step"), entry.get("stage"), term, value))
    columns = [*_KEY, "step", "stage", "term", "value"]
    return pd.DataFrame(rows, columns=columns).astype({"value": float})


def read_grid_reports(results: Path) -> dict[str, dict[str, Any]]:
    """The ``report:`` sections the grids run into ``results`` asked for, by grid name."""
    out = {}
    for p in sorted((Path(results) / GRID_REPORTS).glob("*.json")):
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DabenchError(f"cannot read the grid's report settings {p}: {exc}") from exc
    return out
