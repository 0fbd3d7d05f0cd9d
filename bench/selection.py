"""Model-selection rules as named objects (pytorch-adapt's validators, DomainBed's
``SelectionMethod``): each states the split and metric it needs and picks one evaluation
of a trial's evaluated stages. Torch-free, so that reports and plugins use the same rules
as the trial."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.errors import DabenchError


@dataclass(frozen=True)
class SelectionRule:
    """Pick the evaluation with the lowest ``metric`` on ``split`` (None: the last one)."""

    name: str
    split: str | None
    metric: str | None
    description: str

    def choose(self, evaluations: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """The chosen entry of ``evaluations`` (each ``{"step", "stage", "metrics":
        {split: {"overall": {...}}}}``, in step order), or None if there is none. Entries
        whose target MPJPE is not finite (a diverged checkpoint) are never chosen unless
        nothing else is there."""
        if not evaluations:
            return None
        usable = [e for e in evaluations if _finite(_overall(e, "target_test", "mpjpe"))]
        if not usable:
            return evaluations[-1]
        if self.split is None:
            return evaluations[-1]
        if self.split not in usable[0]["metrics"]:
            raise DabenchError(
                f"selection rule {self.name!r} needs the {self.split} split, which was not "
                "evaluated (train.source_val_fraction is 0?)"
            )
        return min(usable, key=lambda e: _overall(e, self.split, self.metric))


def _overall(entry: Mapping[str, Any], split: str, metric: str | None) -> float:
    value = entry["metrics"].get(split, {}).get("overall", {}).get(metric)
    return math.inf if value is None else float(value)


def _finite(value: float) -> bool:
    return math.isfinite(value)


RULES: dict[str, SelectionRule] = {
    r.name: r
    for r in (
        SelectionRule("last", None, None, "the last checkpoint (no model selection)"),
        SelectionRule(
            "source-val",
            "source_val",
            "mpjpe",
            "the checkpoint with the lowest MPJPE on held-out source training data "
            "(no target labels)",
        ),
        SelectionRule(
            "target-oracle",
            "target_test",
            "mpjpe",
            "the checkpoint with the lowest MPJPE on the target test set itself — an "
            "optimistic upper bound, as published pose-DA code reports",
        ),
    )
}
SELECTION_RULES: tuple[str, ...] = tuple(RULES)


def get_rule(name: str) -> SelectionRule:
    if name not in RULES:
        raise DabenchError(f"unknown selection rule {name!r}; valid: {', '.join(SELECTION_RULES)}")
    return RULES[name]
