"""The article's published numbers, and the ours / published / difference view of a table.

``pgps/report/published/<table>.csv`` holds one published value per line: ``row`` and
``column`` (the keys of the :class:`~pgps.report.table.Table` it belongs to), ``value``, an
optional ``spread`` (the "± x" the article prints), ``source`` (table or sentence, section, and
line of ``papers/pgps-journal-2026.md``) and ``note`` (e.g. a known inconsistency in the article).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from pgps.report.table import Table

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"
"""The published-value files shipped with pgps."""

PUBLISHED_COLUMNS: tuple[str, ...] = ("row", "column", "value", "spread", "source", "note")

COMPARISON_COLUMNS: tuple[str, ...] = (
    "row", "row_label", "column", "column_label", "ours", "ours_sd", "n", "runs", "published", "published_sd",
    "difference", "source", "note",
)  # fmt: skip
"""Columns of a comparison view; ``difference`` = ours - published (missing where either is)."""


def check_published_dir(directory: str | Path) -> None:
    """Raise ``ValueError`` unless ``directory`` is a folder holding published-value files (``<table>.csv``)."""
    from pgps.report.outputs import FIGURES, TABLES

    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(f"--published {directory}: no such folder")
    names = [f"{name}.csv" for name in (*TABLES, *FIGURES)]
    if not any((folder / name).is_file() for name in names):
        raise ValueError(
            f"--published {directory}: holds none of the published-value files ({', '.join(names[:3])}, ...; "
            f"see {PUBLISHED_DIR})"
        )


def load_published(name: str, directory: str | Path | None = None) -> pd.DataFrame:
    """Published values of table ``name`` (an empty frame where the article gives none)."""
    path = Path(directory or PUBLISHED_DIR) / f"{name}.csv"
    if not path.is_file():
        return pd.DataFrame(columns=list(PUBLISHED_COLUMNS))
    from pgps.report.results import read_csv

    df = read_csv(path, ("row", "column", "value", "source"), "published-value table", comment="#",
                  dtype={"row": str, "column": str, "source": str, "note": str})  # fmt: skip
    for column in PUBLISHED_COLUMNS:
        if column not in df.columns:
            df[column] = math.nan if column == "spread" else ""
    df["note"] = df["note"].fillna("")
    duplicated = df[df.duplicated(["row", "column"], keep=False)]
    if len(duplicated):
        raise ValueError(f"{path}: repeated cells {duplicated[['row', 'column']].values.tolist()}")
    return df[list(PUBLISHED_COLUMNS)]


def compare(table: Table, published: pd.DataFrame) -> pd.DataFrame:
    """Every cell of ``table`` and every published cell, side by side (neither side is ever filled)."""
    row_labels = dict(table.rows)
    col_labels = {c.key: f"{c.group} {c.label}".strip() for c in table.columns}
    pub = {(rec["row"], rec["column"]): rec for rec in published.to_dict("records")}
    keys = [(r, c.key) for r, _ in table.rows for c in table.columns]
    keys += [k for k in pub if k not in set(keys)]
    records = []
    for row, col in keys:
        ours = table.cell(row, col)
        p = pub.get((row, col), {})
        value, published_value = ours["value"], float(p.get("value", math.nan))
        records.append(
            {
                "row": row,
                "row_label": row_labels.get(row, row),
                "column": col,
                "column_label": col_labels.get(col, col),
                "ours": value,
                "ours_sd": ours["sd"],
                "n": ours["n"],
                "runs": ours["runs"],
                "published": published_value,
                "published_sd": float(p.get("spread", math.nan)),
                "difference": value - published_value,
                "source": p.get("source", ""),
                "note": p.get("note", ""),
            }
        )
    return pd.DataFrame(records, columns=list(COMPARISON_COLUMNS))


def comparison_csv(comparison: pd.DataFrame) -> str:
    buf = io.StringIO()
    comparison.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue()


def _fmt(v: float, sd: float = math.nan) -> str:
    if not math.isfinite(v):
        return "–"
    text = f"{v:.4g}" if abs(v) < 1e-2 and v != 0 else f"{v:.2f}"
    return text + (f" ± {sd:.2f}" if math.isfinite(sd) else "")


def comparison_markdown(table: Table, comparison: pd.DataFrame) -> str:
    """The comparison as Markdown: one line per cell that has ours or a published value."""
    shown = comparison[comparison["ours"].notna() | comparison["published"].notna()]
    both = comparison["ours"].notna() & comparison["published"].notna()
    lines = [
        f"**{table.title}: ours vs published**",
        "",
        f"{int(comparison['ours'].notna().sum())} of our cells have a value, "
        f"{int(comparison['published'].notna().sum())} published values, {int(both.sum())} comparable. "
        "Difference = ours - published; – = missing (never filled).",
        "",
        "| " + " | ".join([table.row_header, "column", "ours", "runs", "published", "difference", "source"]) + " |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for r in shown.to_dict("records"):
        runs = f"{r['n']}/{r['runs']}" if r["runs"] else "–"
        source = r["source"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(
            f"| {r['row_label']} | {r['column_label']} | {_fmt(r['ours'], r['ours_sd'])} | {runs} | "
            f"{_fmt(r['published'], r['published_sd'])} | {_fmt(r['difference'])} | {source} |"
        )
    if not len(shown):
        lines.append("| (no values on either side) | | | | | | |")
    return "\n".join(lines) + "\n"
