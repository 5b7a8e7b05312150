"""Render the schedule table and the Figure 2 panels from the schedules `pgps schedule` wrote.

Run by Snakemake (rule render_schedules): reads snakemake.input, writes snakemake.output.
"""

import logging
from pathlib import Path

from pgps.report.datasets import label
from pgps.report.figure2 import panel_title, plot_schedule_panel
from pgps.report.schedules import load_summary, schedule_table
from pgps.report.style import save_figure

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")

# Inputs are {results}/schedules/{dataset}/{mode}.json.
loaded = {(Path(p).parent.name, Path(p).stem): load_summary(p) for p in snakemake.input.schedules}
schedules = {d: {m: loaded[d, m] for m in snakemake.params.modes} for d in snakemake.params.datasets}

table = schedule_table(schedules)
table.to_csv(snakemake.output.table, index=False)
logging.info("wrote %s (%d rows)", snakemake.output.table, len(table))

for dataset, png, pdf in zip(snakemake.params.datasets, snakemake.output.png, snakemake.output.pdf, strict=True):
    by_mode = schedules[dataset]
    fig = plot_schedule_panel(by_mode, panel_title(label(dataset), next(iter(by_mode.values()))))
    save_figure(fig, png, pdf)
    logging.info("wrote %s and %s", png, pdf)
