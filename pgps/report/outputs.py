"""The fixed list of files ``pgps report`` writes (relative to its ``--out`` folder).

Light on purpose (no pandas or matplotlib), so a Snakefile can import it while building its DAG.
Every file always exists after a report, with explicit gaps where the results lack runs.
"""

from __future__ import annotations

TABLES: tuple[str, ...] = (
    "table1", "table2", "table3", "tableA4", "tableB5", "tableD7", "tableD8", "tableD9", "stats_wilcoxon",
    "stats_spearman",
)  # fmt: skip
"""The article's tables and its statistics (``tables/<name>.csv|md|tex``)."""

FIGURES: tuple[str, ...] = ("figure2", "figure3", "figure4", "figure5", "figureA6")
"""The article's figures (``figures/<name>.png|pdf``); each also has a table of its key numbers."""

MICCAI_TABLES: tuple[str, ...] = ("miccai_table1", "miccai_tableS2")
"""The MICCAI 2024 paper's Table 1 and Supplemental Table 2 (``tables/<name>.csv|md|tex``)."""

MICCAI_FIGURES: tuple[str, ...] = ("miccai_figure2", "miccai_figure3")
"""The MICCAI 2024 paper's Figures 2 and 3 (``figures/<name>.png|pdf``), each with a table of its numbers."""

TABLE_FORMATS: tuple[str, ...] = ("csv", "md", "tex")
COMPARE_FORMATS: tuple[str, ...] = ("csv", "md")
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")
INDEX = "report.md"


def report_outputs() -> list[str]:
    """Every file ``pgps report`` writes, relative to its output folder, in a fixed order."""
    out = []
    for name in TABLES + FIGURES + MICCAI_TABLES + MICCAI_FIGURES:
        out += [f"tables/{name}.{ext}" for ext in TABLE_FORMATS]
        out += [f"compare/{name}.{ext}" for ext in COMPARE_FORMATS]
    for name in FIGURES + MICCAI_FIGURES:
        out += [f"figures/{name}.{ext}" for ext in FIGURE_FORMATS]
    return [*out, INDEX]


OUTPUTS: tuple[str, ...] = tuple(report_outputs())
"""The fixed output list (relative paths) of ``pgps report``."""
