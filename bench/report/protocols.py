"""What every number in a report was measured under: our metrics' titles, directions and
conventions, the conventions of the numbers papers report, and which of our pairs is which
paper pair. Tables put a number in a column only under the column's protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.errors import DabenchError


@dataclass(frozen=True)
class MetricInfo:
    key: str
    title: str  # with its unit and direction arrow
    lower_is_better: bool
    protocol: str  # the convention, stated once per column
    decimals: int = 1


METRICS: dict[str, MetricInfo] = {
    m.key: m
    for m in (
        MetricInfo(
            "mpjpe",
            "MPJPE (mm) ↓",
            True,
            "MPJPE: mean root-relative joint error in mm over all joints (ground-truth root "
            "depth lifts 2.5D predictions; no alignment)",
        ),
        MetricInfo(
            "pa_mpjpe",
            "PA-MPJPE (mm) ↓",
            True,
            "PA-MPJPE: after similarity Procrustes alignment, rotations only (no reflection), mm",
        ),
        MetricInfo(
            "pa_mpjpe_refl",
            "PA-MPJPE refl. (mm) ↓",
            True,
            "PA-MPJPE allowing reflections (FreiHAND's align_w_scale), mm",
        ),
        MetricInfo("n_mpjpe", "N-MPJPE (mm) ↓", True, "N-MPJPE: after optimal scale only, mm"),
        MetricInfo(
            "pck2d_005",
            "PCK@0.05 (%) ↑",
            False,
            "PCK@0.05: % of visible joints within 5% of the crop side, image space",
        ),
        MetricInfo(
            "pck2d_tll",
            "PCK@0.05 TLL (%) ↑",
            False,
            "TLL PCK@0.05: heatmap-space argmax of prediction and label, macro over joints",
        ),
        MetricInfo("pck3d_150", "3D PCK@150 (%) ↑", False, "3D PCK at 150 mm (3DHP), all joints"),
        MetricInfo(
            "auc3d_0_150", "AUC 0–150 (%) ↑", False, "3D AUC over 0–150 mm, 31 thresholds (3DHP)"
        ),
        MetricInfo(
            "auc_20_50", "AUC 20–50 (%) ↑", False, "hand 3D AUC, trapezoid over 20–50 mm (STB)"
        ),
        MetricInfo("err2d_px", "2D error (px) ↓", True, "mean 2D error of visible joints, px"),
        MetricInfo(
            "err2d_pct", "2D error (%) ↓", True, "mean 2D error of visible joints, % of crop side"
        ),
        MetricInfo(
            "ambiguity_pct",
            "Ambiguity (%) ↓",
            True,
            "ambiguity ratio (S003 Eq. 11 / N): views of one moment whose left/right-swapped "
            "prediction is closer, min(f, N − f)/N averaged over multi-view test moments",
        ),
        MetricInfo(
            "pckh_50",
            "PCKh@0.5 (%) ↑",
            False,
            "PCKh@0.5: visible joints within half the head size (0.6 × head-box diagonal), "
            "pelvis and thorax left out as MPII's total does",
        ),
    )
}
MAIN_METRICS = ("mpjpe", "pa_mpjpe", "pck2d_005")


def metric_info(key: str) -> MetricInfo:
    if key not in METRICS:
        raise DabenchError(f"unknown metric {key!r}; valid: {', '.join(METRICS)}")
    return METRICS[key]


# Metric names in method cards' `reported` entries: (title, direction, protocol). Hand EPE
# is its own convention: the papers do not say whether predictions were scale-aligned
# (methods.md §1.5), so it never shares a column with our MPJPE.
PAPER_METRICS: dict[str, tuple[str, bool, str]] = {
    "mpjpe_mm": (
        "MPJPE (mm) ↓",
        True,
        "published MPJPE: root-aligned, mm (paper's own joint set and root)",
    ),
    "pa_mpjpe_mm": (
        "PA-MPJPE (mm) ↓",
        True,
        "published PA-MPJPE: similarity Procrustes alignment, mm",
    ),
    "epe_mm": (
        "EPE (mm) ↓",
        True,
        "published hand EPE: mean 3D joint error over 21 joints, mm; root and scale "
        "alignment not stated by the paper",
    ),
    "pck2d_005": (
        "PCK@0.05 (%) ↑",
        False,
        "published PCK@0.05 (TLL/UniFrame code: heatmap-space argmax, 5% of the input side)",
    ),
    "pck3d_150": ("3D PCK@150 (%) ↑", False, "published 3D PCK at 150 mm"),
    "auc3d_0_150": ("AUC (%) ↑", False, "published 3D AUC over 0–150 mm"),
    "err2d_pct": (
        "2D error (%) ↓",
        True,
        "published 2D error as % of the crop side (Mask as Supervision's '2D MSE-%')",
    ),
    "ambiguity_pct": (
        "Ambiguity (%) ↓",
        True,
        "published ambiguity ratio (Mask as Supervision Eq. 11, read as divided by the views)",
    ),
    "pckh_50": ("PCKh@0.5 (%) ↑", False, "published PCKh@0.5 on MPII (head-box normalised)"),
}
# Published numbers are selected as their papers' code selects: on the target test set.
PUBLISHED_SELECTION = (
    "selection as published: not stated by the papers; their reference code selects the "
    "checkpoint on the target test set"
)


@dataclass(frozen=True)
class Reported:
    """One published number of a method card."""

    label: str
    paper: str
    setting: str
    metric: str
    pair: str  # the paper's pair, e.g. "FreiHAND→STB"
    value: float
    # a joint group of the metric ("mcp", "head"; the joint set's group names), "" overall:
    # the card keeps a table's per-group columns, the report compares the overall value
    group: str = ""

    @property
    def protocol(self) -> str:
        return PAPER_METRICS[self.metric][2]


def reported_numbers(label: str, raw: Any, where: str) -> list[Reported]:
    """The ``reported`` list of method card ``label``, checked; an entry with ``variant: V``
    belongs to the row ``label/V``."""
    out = []
    for i, entry in enumerate(raw or []):
        if not isinstance(entry, Mapping) or not {"paper", "metric", "values"} <= set(entry):
            raise DabenchError(f"{where}: reported[{i}] needs paper, metric and values")
        if entry["metric"] not in PAPER_METRICS:
            raise DabenchError(
                f"{where}: reported[{i}] metric {entry['metric']!r} has no protocol; known: "
                f"{', '.join(PAPER_METRICS)}"
            )
        # an entry may belong to one of the card's variants (an ablation row of a table)
        row = f"{label}/{entry['variant']}" if entry.get("variant") else label
        for pair, value in entry["values"].items():
            out.append(
                Reported(
                    row,
                    str(entry["paper"]),
                    str(entry.get("setting", "")),
                    str(entry["metric"]),
                    normalise_pair(str(pair)),
                    float(value),
                    str(entry.get("group", "")),
                )
            )
    return out


def normalise_pair(pair: str) -> str:
    """``"FreiHAND → STB"`` and ``"FreiHAND->STB"`` are the pair ``"FreiHAND→STB"``."""
    for arrow in ("->", "→"):
        if arrow in pair:
            source, _, target = pair.partition(arrow)
            return f"{source.strip()}→{target.strip()}"
    raise DabenchError(f"paper pair {pair!r} has no arrow (write it as 'Source→Target')")


def paper_pair(source: str, target: str, grid_map: Mapping[str, str]) -> str | None:
    """The paper pair our pair is, or None. A dataset card names its paper name
    (``paper_name``); a grid may map a pair (``report: {paper_pairs: {"a → b": "A→B"}}``).
    Synthetic datasets are never a paper's dataset, whatever a grid says."""
    from bench.data.cards import load_dataset_card

    cards = []  # a list: a pair may name one dataset twice (Human3.6M → Human3.6M)
    for name in (source, target):
        try:
            cards.append((name, load_dataset_card(name)))
        except DabenchError:
            cards.append((name, None))
    for name, card in cards:
        if card is not None and card.kind == "synthetic":
            key = f"{source} → {target}"
            if key in grid_map:
                raise DabenchError(
                    f"the grid maps {key} to the paper pair {grid_map[key]!r}, but {name} is "
                    "synthetic: a synthetic pair is never a paper's pair"
                )
            return None
    key = f"{source} → {target}"
    if key in grid_map:
        return normalise_pair(grid_map[key])
    names = [c.extra.get("paper_name") if c is not None else None for _, c in cards]
    if all(names):
        return f"{names[0]}→{names[1]}"
    return None
