"""Collect one results row per dataset x trainer x fold of the demo run (rule demo_collect)."""

import logging

import pandas as pd

from pgps.report.results import RESULT_COLUMNS, collect_fold

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")

rows = [collect_fold(folder, dataset, trainer, fold) for dataset, trainer, fold, folder in snakemake.params.runs]
pd.DataFrame(rows, columns=list(RESULT_COLUMNS)).to_csv(snakemake.output[0], index=False)
logging.info("collected %d runs into %s", len(rows), snakemake.output[0])
