"""Renderers of the table model: markdown (tabulate), LaTeX (booktabs) and a tidy CSV
(pandas). Each reads a :class:`~bench.report.model.Table` and adds only markup.

The LaTeX is assembled here rather than by ``Styler.to_latex``: the papers' layout puts a
rule between the setting groups and names the group in the first column of its first row,
which Styler can only do with ``\\multirow`` row indices — and the tables must compile with
nothing but booktabs (Debian's texlive-latex-recommended has no multirow)."""

from __future__ import annotations

import io
import re
import unicodedata

import pandas as pd

from bench.report.model import Cell, Column, Table

LATEX_PACKAGES = ("booktabs", "amsmath")

# pdflatex reads UTF-8 but has no glyphs for these: each becomes its math or text-mode form
_LATEX_UNICODE = {
    "→": r"$\rightarrow$",
    "←": r"$\leftarrow$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "±": r"$\pm$",
    "×": r"$\times$",
    "–": "--",
    "—": "---",
    "−": "$-$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "²": r"$^{2}$",
    "³": r"$^{3}$",
    "·": r"$\cdot$",
    "…": r"\ldots{}",
    "’": "'",
    "‘": "`",
    "“": "``",
    "”": "''",
    "✓": r"$\checkmark$",
    "†": r"\dag{}",
    "‡": r"\ddag{}",
}
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in (*_LATEX_SPECIAL, *_LATEX_UNICODE)))


def _greek(char: str) -> str:
    """Greek letters as math (``χ`` → ``$\\chi$``); pdflatex has no Greek text glyphs."""
    name = unicodedata.name(char, "")
    if not name.startswith("GREEK ") or " LETTER " not in name:
        return char
    letter = name.rsplit(" ", 1)[1].lower()
    letter = {"lamda": "lambda"}.get(letter, letter)
    return f"$\\{letter.capitalize() if 'CAPITAL' in name else letter}$"


def latex_escape(text: str) -> str:
    """Text as LaTeX that pdflatex typesets with booktabs and amsmath alone."""
    text = _LATEX_RE.sub(
        lambda m: _LATEX_SPECIAL.get(m.group(0)) or _LATEX_UNICODE[m.group(0)], str(text)
    )
    return "".join(_greek(c) if ord(c) > 0x36F else c for c in text)


def _number(value: float, decimals: int, signed: bool, minus: str) -> str:
    text = f"{abs(value):.{decimals}f}"
    if signed and float(text) != 0:
        return ("+" if value > 0 else minus) + text
    return (minus if value < 0 and float(text) != 0 else "") + text


def cell_text(cell: Cell, column: Column, style: str) -> str:
    """A cell as ``md`` or ``tex`` text: value ± spread, failures, marks, bold if best."""
    tex = style == "tex"
    if cell.missing:
        if cell.failed and not cell.n:
            return "failed"
        return "--" if tex else "–"
    minus = "$-$" if tex else "−"
    text = _number(cell.value, column.decimals, cell.signed, minus)
    if cell.spread is not None and cell.n > 1 and cell.spread == cell.spread:
        text += (r" $\pm$ " if tex else " ± ") + f"{cell.spread:.{column.decimals}f}"
    if cell.failed:
        text += f" ({cell.failed} failed)"
    if cell.best:
        text = rf"\textbf{{{text}}}" if tex else f"**{text}**"
    if cell.marks:
        marks = ",".join(cell.marks)
        text += rf"\textsuperscript{{{latex_escape(marks)}}}" if tex else f"<sup>{marks}</sup>"
    return text


def _has_sections(table: Table) -> bool:
    return any(r.section for r in table.rows)


def markdown(table: Table) -> str:
    """The caption, the table (GitHub pipe table, tabulate) and its notes and footnotes."""
    sections = _has_sections(table)
    headers = (["Setting"] if sections else []) + [table.row_header]
    headers += [f"{c.group}<br>{c.title}" if c.group else c.title for c in table.columns]
    lines = []
    for section, rows in table.sections:
        for i, row in enumerate(rows):
            line = ([section if i == 0 else ""] if sections else []) + [row.title]
            line += [cell_text(table.cell(row.key, c.key), c, "md") for c in table.columns]
            lines.append(line)
    from tabulate import tabulate

    body = tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)
    parts = [table.caption, "", body]
    extra = [f"<sup>{m}</sup> {t}" for m, t in table.footnotes.items()] + table.notes
    if extra:
        parts += ["", *[f"- {e}" for e in extra]]
    return "\n".join(parts) + "\n"


def latex(table: Table) -> str:
    """A ``table`` float with booktabs rules, ``\\multicolumn`` pair headers, bold best
    cells, the caption and the label ``tab:dabench-<name>``; ``\\input`` it after loading
    booktabs (and amsmath)."""
    sections = _has_sections(table)
    lead = (["Setting"] if sections else []) + [table.row_header]
    n_lead = len(lead)
    spec = "l" * n_lead + "r" * len(table.columns)
    out = [
        "% Generated by `dabench report` from the result store; do not edit by hand.",
        "% Needs " + ", ".join(rf"\usepackage{{{p}}}" for p in LATEX_PACKAGES) + ".",
        r"\begin{table}[tbp]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:dabench-{table.name}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    spans = _spans(table.columns)
    if any(group for group, _ in spans):
        head, rules, at = [""] * n_lead, [], n_lead + 1
        for group, width in spans:
            head.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(group)}}}")
            if group:
                rules.append(rf"\cmidrule(lr){{{at}-{at + width - 1}}}")
            at += width
        out += [" & ".join(head) + r" \\", " ".join(rules)]
    titles = [latex_escape(c.title) for c in table.columns]
    out += [" & ".join([*lead, *titles]) + r" \\", r"\midrule"]
    for s, (section, rows) in enumerate(table.sections):
        if s:
            out.append(r"\midrule")
        for i, row in enumerate(rows):
            line = [latex_escape(section) if i == 0 else ""] if sections else []
            line.append(latex_escape(row.title))
            line += [cell_text(table.cell(row.key, c.key), c, "tex") for c in table.columns]
            out.append(" & ".join(line) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    extra = [
        rf"\textsuperscript{{{latex_escape(m)}}}~{latex_escape(t)}"
        for m, t in table.footnotes.items()
    ] + [latex_escape(n) for n in table.notes]
    if extra:
        out += [r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize " + " ".join(extra) + "}"]
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def _spans(columns: list[Column]) -> list[tuple[str, int]]:
    spans: list[tuple[str, int]] = []
    for c in columns:
        if spans and spans[-1][0] == c.group:
            spans[-1] = (c.group, spans[-1][1] + 1)
        else:
            spans.append((c.group, 1))
    return spans


def frame(table: Table) -> pd.DataFrame:
    """The numbers of a table, one row per cell, for people who want to compute with them."""
    rows = []
    for row in table.rows:
        for col in table.columns:
            cell = table.cell(row.key, col.key)
            rows.append(
                {
                    "table": table.name,
                    "section": row.section,
                    "row": row.key,
                    "row_title": row.title,
                    "column_group": col.group,
                    "column": col.title,
                    "protocol": col.protocol,
                    "value": None if cell.missing else cell.value,
                    "spread": cell.spread if cell.n > 1 else None,
                    "n": cell.n,
                    "failed": cell.failed,
                    "best": cell.best,
                    "difference": cell.signed,
                    "marks": ",".join(cell.marks),
                }
            )
    return pd.DataFrame(rows)


def csv(table: Table) -> str:
    buf = io.StringIO()
    frame(table).to_csv(buf, index=False, float_format="%.10g", lineterminator="\n")
    return buf.getvalue()
