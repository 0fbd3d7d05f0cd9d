"""The table model every report table is built into once, and every renderer reads: cells
with value, spread, count, failures, best-in-column and footnote marks. No markup here —
markdown, LaTeX and CSV are the renderers' business."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from bench.errors import DabenchError


@dataclass(frozen=True)
class Cell:
    """One number of a table: ``value`` (None: nothing to show), ``spread`` (the ± part, None
    when there is none), ``n`` (how many values it summarises), ``failed`` (trials that gave
    no value), ``best`` (bold), ``marks`` (footnote marks), ``signed`` (a difference: printed
    with its sign), ``protocol`` (the convention it was measured under; must equal its
    column's)."""

    value: float | None = None
    spread: float | None = None
    n: int = 0
    failed: int = 0
    best: bool = False
    marks: tuple[str, ...] = ()
    signed: bool = False
    protocol: str = ""

    @property
    def missing(self) -> bool:
        return self.value is None or not math.isfinite(self.value)


@dataclass(frozen=True)
class Column:
    """``group`` is the spanning header (a pair), ``title`` the column's own header (a metric).
    Every cell of a column carries the column's ``protocol``: numbers measured under
    different conventions never share a column."""

    key: str
    group: str
    title: str
    decimals: int = 1
    lower_is_better: bool | None = None  # None: no best-in-column
    protocol: str = ""


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    section: str = ""  # rows of one section are printed together under its name
    competes: bool = True  # whether it can be best in its column (oracle rows cannot)


@dataclass
class Table:
    """``name`` is the file stem and the LaTeX label's suffix; ``notes`` are sentences under
    the table; ``footnotes`` explain the marks cells carry."""

    name: str
    caption: str
    columns: list[Column]
    rows: list[Row]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    footnotes: dict[str, str] = field(default_factory=dict)
    row_header: str = "Method"

    def put(self, row: str, column: str, cell: Cell) -> None:
        col = self.column(column)
        if row not in {r.key for r in self.rows}:
            raise DabenchError(f"table {self.name}: no row {row!r}")
        if cell.protocol != col.protocol:
            raise DabenchError(
                f"table {self.name}: column {col.group} / {col.title} holds numbers measured "
                f"under {col.protocol!r}; a number measured under {cell.protocol!r} cannot "
                "share it (different conventions are not comparable)"
            )
        self.cells[(row, column)] = cell

    def column(self, key: str) -> Column:
        for c in self.columns:
            if c.key == key:
                return c
        raise DabenchError(f"table {self.name}: no column {key!r}")

    def cell(self, row: str, column: str) -> Cell:
        return self.cells.get((row, column), Cell(protocol=self.column(column).protocol))

    def mark_best(self) -> None:
        """Bold the best competing cell of every directed column, compared at the printed
        precision so that printed ties are all bold."""
        competing = [r.key for r in self.rows if r.competes]
        for col in self.columns:
            if col.lower_is_better is None:
                continue
            values = {
                r: round(c.value, col.decimals)
                for r in competing
                if not (c := self.cell(r, col.key)).missing
            }
            if not values:
                continue
            target = min(values.values()) if col.lower_is_better else max(values.values())
            for r, v in values.items():
                if v == target:
                    self.cells[(r, col.key)] = replace(self.cell(r, col.key), best=True)

    @property
    def sections(self) -> list[tuple[str, list[Row]]]:
        out: list[tuple[str, list[Row]]] = []
        for r in self.rows:
            if out and out[-1][0] == r.section:
                out[-1][1].append(r)
            else:
                out.append((r.section, [r]))
        return out
