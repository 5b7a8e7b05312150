"""Render the demo's Table-1-style table and convergence figures (rule demo_render)."""

import logging
from pathlib import Path

import pandas as pd

from pgps.report.convergence import plot_convergence
from pgps.report.results import table1, to_markdown
from pgps.report.style import save_figure

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")

results = pd.read_csv(snakemake.input.results)
table = table1(results)
table.to_csv(snakemake.output.table, index=False)
Path(snakemake.output.markdown).write_text(to_markdown(table))
logging.info("wrote %s", snakemake.output.table)

mode_of = dict(zip(results["trainer"], results["mode"], strict=True))
first_fold = min(fold for _, _, fold, _ in snakemake.params.runs)
for dataset, png, pdf in zip(snakemake.params.datasets, snakemake.output.png, snakemake.output.pdf, strict=True):
    telemetry = {
        mode_of[trainer]: pd.read_csv(Path(folder) / "pgps_telemetry.csv")
        for d, trainer, fold, folder in snakemake.params.runs
        if d == dataset and fold == first_fold
    }
    save_figure(plot_convergence(telemetry, f"{dataset}: convergence (fold {first_fold})"), png, pdf)
    logging.info("wrote %s and %s", png, pdf)
