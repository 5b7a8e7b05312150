"""A results table as cells, and its CSV, Markdown and LaTeX renderings.

A :class:`Table` holds one cell per (row, column) it defines, with the value, an optional
spread (shown as ``value ± sd``), and how many runs it rests on (``n``) out of how many the
manifest lists (``runs``). Missing values stay missing ("–"); a value from fewer runs than
listed (unfinished runs) is marked with a dagger. Within each :class:`Rank` group the best
value of a row is bold and the second best underlined, as the article's tables do.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from collections.abc import Sequence

import pandas as pd

SIGNIFICANCE = 0.05
"""A p-value column (``Column.kind == "p"``) marks values below this with "*", as the MICCAI 2024 paper does."""

CELL_COLUMNS: tuple[str, ...] = ("row", "col", "value", "sd", "n", "runs", "text")
"""A cell: its keys, value, spread, runs used and listed, and ``text`` printed instead of "–" where there is no
value for a stated reason (e.g. "too few datasets")."""


@dataclasses.dataclass(frozen=True)
class Column:
    """One column: ``key`` (CSV header, published-value key), header ``group`` and ``label``."""

    key: str
    group: str
    label: str
    digits: int = 2
    kind: str = "value"  # "value", "delta" (printed with the article's up/down triangles), "p" (* below 0.05)
    sd_digits: int = 1


@dataclasses.dataclass(frozen=True)
class Rank:
    """Mark the best (bold) and second best (underlined) of ``columns`` in each row of ``rows``."""

    columns: tuple[str, ...]
    better: str = "max"  # or "min"
    rows: tuple[str, ...] | None = None  # None: every row


@dataclasses.dataclass
class Table:
    """A rendered table of the article (or of a figure's key numbers)."""

    name: str
    title: str
    row_key: str
    row_header: str
    rows: list[tuple[str, str]]
    columns: list[Column]
    cells: pd.DataFrame
    ranks: list[Rank] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    row_digits: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cells = pd.DataFrame(self.cells, columns=list(CELL_COLUMNS))
        self.cells["text"] = self.cells["text"].fillna("")
        keys = {c.key for c in self.columns}
        rows = {r for r, _ in self.rows}
        bad = self.cells[~self.cells["col"].isin(keys) | ~self.cells["row"].isin(rows)]
        if len(bad):
            raise ValueError(f"{self.name}: cells outside the table: {bad[['row', 'col']].values.tolist()[:5]}")
        self._lookup = {(r, c): i for i, (r, c) in enumerate(zip(self.cells["row"], self.cells["col"], strict=True))}

    def cell(self, row: str, col: str) -> dict:
        """The cell at ``(row, col)`` as a dict (value NaN when the table has none there)."""
        i = self._lookup.get((row, col))
        if i is None:
            return {"row": row, "col": col, "value": math.nan, "sd": math.nan, "n": 0, "runs": 0, "text": ""}
        return self.cells.iloc[i].to_dict()

    def value(self, row: str, col: str) -> float:
        return float(self.cell(row, col)["value"])

    def digits(self, row: str, column: Column) -> int:
        return self.row_digits.get(row, column.digits)

    def filled(self) -> int:
        """Number of cells with a value."""
        return int(self.cells["value"].notna().sum())


def cell(
    row: str, col: str, value: float, sd: float = math.nan, n: int = 0, runs: int | None = None, text: str = ""
) -> dict:
    """A cell dict for :class:`Table` (``runs`` defaults to ``n``; ``text`` replaces "–" when there is no value)."""
    value = float(value) if value is not None else math.nan
    runs = int(n if runs is None else runs)
    return {"row": row, "col": col, "value": value, "sd": sd, "n": int(n), "runs": runs, "text": text}


# -- ranking ----------------------------------------------------------------------------------------
def marks(table: Table) -> dict[tuple[str, str], str]:
    """``(row, col) -> "best" | "second"`` for every ranked cell, on the values as printed."""
    out: dict[tuple[str, str], str] = {}
    columns = {c.key: c for c in table.columns}
    for rank in table.ranks:
        for row in rank.rows or [r for r, _ in table.rows]:
            shown = {}
            for col in rank.columns:
                v = table.value(row, col)
                if math.isfinite(v):
                    shown[col] = round(v, table.digits(row, columns[col]))
            if len(shown) < 2:
                continue
            distinct = sorted(set(shown.values()), reverse=rank.better == "max")
            for col, v in shown.items():
                if v == distinct[0]:
                    out[row, col] = "best"
                elif len(distinct) > 1 and v == distinct[1]:
                    out[row, col] = "second"
    return out


# -- text of one cell ----------------------------------------------------------------------------------
def _number(v: float, digits: int) -> str:
    return f"{v:.{digits}f}"


def cell_text(table: Table, row: str, column: Column, tex: bool = False) -> str:
    """The printed cell: "–" if missing; triangles for deltas; "± sd"; a dagger if from fewer runs."""
    c = table.cell(row, column.key)
    v, digits = c["value"], table.digits(row, column)
    if not math.isfinite(v):
        if c["text"]:
            return tex_escape(c["text"]) if tex else c["text"]
        return "--" if tex else "–"
    if column.kind == "delta":
        up = round(v, digits) >= 0
        arrow = ("$\\blacktriangle$" if up else "$\\blacktriangledown$") if tex else ("▲" if up else "▼")
        text = f"{arrow} {_number(abs(v), digits)}"
    else:
        text = _number(v, digits) + ("*" if column.kind == "p" and v < SIGNIFICANCE else "")
    if math.isfinite(c["sd"]):
        text += (" $\\pm$ " if tex else " ± ") + _number(c["sd"], column.sd_digits)
    if c["runs"] > c["n"]:
        text += "$^\\dagger$" if tex else "†"
    return text


# -- renderings -----------------------------------------------------------------------------------------
def to_csv(table: Table) -> str:
    """Wide CSV: the row key and label, one column per table column (``<key> sd`` where a spread exists)."""
    records = []
    for row, label in table.rows:
        record = {table.row_key: row, "label": label}
        for column in table.columns:
            c = table.cell(row, column.key)
            record[column.key] = c["value"]
            if table.cells.loc[table.cells["col"] == column.key, "sd"].notna().any():
                record[f"{column.key} sd"] = c["sd"]
        records.append(record)
    buf = io.StringIO()
    pd.DataFrame(records).to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue()


def _header(column: Column) -> str:
    return f"{column.group} {column.label}".strip() if column.group else column.label


def to_markdown(table: Table) -> str:
    """GitHub Markdown: caption, table (best **bold**, second <u>underlined</u>), notes."""
    ranked = marks(table)
    lines = [f"**{table.title}**", ""]
    lines.append("| " + " | ".join([table.row_header, *(_header(c) for c in table.columns)]) + " |")
    lines.append("|---|" + "|".join("--:" for _ in table.columns) + "|")
    for row, label in table.rows:
        cells = [label]
        for column in table.columns:
            text = cell_text(table, row, column)
            mark = ranked.get((row, column.key))
            cells.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(f"- {note}" for note in _notes(table))
    return "\n".join(lines) + "\n"


def _notes(table: Table) -> list[str]:
    notes = list(table.notes)
    if table.filled() == 0:
        notes.insert(0, "No runs for this table in the results: every cell is a gap (–).")
    if ((table.cells["runs"] > table.cells["n"]) & table.cells["value"].notna()).any():
        notes.append("† from fewer runs than the manifest lists (unfinished runs are left out, never filled).")
    notes.append("– no result (run missing or not finished).")
    return notes


_TEX = {
    "\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{", "}": "\\}",
    "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "↑": "$\\uparrow$", "↓": "$\\downarrow$", "±": "$\\pm$",
    "–": "--", "×": "$\\times$", "†": "$^\\dagger$", "ρ": "$\\rho$", "Δ": "$\\Delta$",
}  # fmt: skip


def latex_caption(title: str) -> str:
    """``title`` without a leading "Table 1: " (LaTeX numbers its own tables: no "Table 1: Table 1: ...")."""
    return re.sub(r"^Table [A-Z]?\.?\d+\s*:\s*", "", title)


def tex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped and a few symbols as math."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def _groups(columns: Sequence[Column]) -> list[tuple[str, int]]:
    groups: list[tuple[str, int]] = []
    for c in columns:
        if groups and groups[-1][0] == c.group:
            groups[-1] = (c.group, groups[-1][1] + 1)
        else:
            groups.append((c.group, 1))
    return groups


def to_latex(table: Table) -> str:
    """A LaTeX ``table`` (booktabs; triangles need amssymb), best \\textbf, second \\underline."""
    ranked = marks(table)
    groups = _groups(table.columns)
    lines = [
        f"% {table.name}: rendered by pgps report; needs \\usepackage{{booktabs,amssymb}}",
        "\\begin{table}[htbp]",
        "\\centering",
        f"\\caption{{{tex_escape(latex_caption(table.title))}}}",
        f"\\label{{tab:pgps-{table.name}}}",
        "\\begin{tabular}{l" + "r" * len(table.columns) + "}",
        "\\toprule",
    ]
    if any(g for g, _ in groups):
        head, rules, start = [""], [], 2
        for group, width in groups:
            head.append(f"\\multicolumn{{{width}}}{{c}}{{{tex_escape(group)}}}" if width > 1 else tex_escape(group))
            if group:
                rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines.append(" & ".join(head) + " \\\\")
        lines.append(" ".join(rules))
    lines.append(" & ".join([tex_escape(table.row_header), *(tex_escape(c.label) for c in table.columns)]) + " \\\\")
    lines.append("\\midrule")
    for row, label in table.rows:
        cells = [tex_escape(label)]
        for column in table.columns:
            text = cell_text(table, row, column, tex=True)
            mark = ranked.get((row, column.key))
            cells.append(f"\\textbf{{{text}}}" if mark == "best" else f"\\underline{{{text}}}" if mark else text)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    notes = _notes(table)
    if notes:
        lines.append("\\par\\smallskip\\footnotesize " + " ".join(tex_escape(n) for n in notes))
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"
