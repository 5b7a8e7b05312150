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

CAPTIONS: dict[str, str] = {
    "figure2": "Figure 2: the schedules of one dataset (MSD Lung in the article): patch size, batch size and input "
    "tensor size per epoch for each strategy, and the foreground share of the batches its runs measured.",
    "figure3": "Figure 3: Dice over training lengths (% of nnU-Net's default iterations) per dataset, the mean over "
    "folds, and the normalized average over the datasets (each divided by its best). Up to three lengths: the "
    "strategies side by side at each length, error bars the SD over folds (from two folds on); more: lines over a "
    "log axis. Hollow "
    "diamonds: the article's Table 1 at 100%.",
    "figure4": "Figure 4: foreground voxel share, classes present per batch and input tensor size per epoch (BTCV in "
    "the article), the mean over folds and its min-max band; hollow diamonds: the article's Sec. 4.2.",
    "figure5": "Figure 5: repeated runs (seeds on one fold) per training length: dots the seeds, bars the mean ± SD, "
    "above them the share of combinations (one run per strategy) each strategy wins; hollow diamonds: the "
    "article's Sec. 4.5.",
    "figureA6": "Figure A.6: PGPS-Performance's batch constructions (MSD Lung in the article): nnU-Net's smoothed "
    "pseudo Dice per epoch and the final validation Dice (bars: mean; dots: folds; hollow diamonds: the article's "
    "Table A.4).",
    "miccai_figure2": "MICCAI 2024 Figure 2: Dice of CPS, RPSS and PGPS on MSD Lung against the iterations per epoch, "
    "the voxels shown and the training runtime; hollow diamonds: the paper's Supplemental Table 2.",
    "miccai_figure3": "MICCAI 2024 Figure 3: the fold-wise Dice difference of PGPS and PGPS+ to CPS per task (bars: "
    "mean ± SE over folds; dots: folds).",
}
"""Each figure's caption. Captions stay outside the figures (journals set them below the figure): report.md and the
Snakemake report give them; the figures' own titles carry no figure number."""

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
