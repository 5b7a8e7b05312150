"""Write the study's run manifest (pgps collect --runs) and its configuration (pgps study-report --study)."""

import json

import pandas as pd

from pgps.io import atomic_write_text

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
runs = pd.DataFrame(snakemake.params.runs)
atomic_write_text(snakemake.output.runs, runs.to_csv(index=False))
atomic_write_text(snakemake.output.study, json.dumps(snakemake.params.study, indent=1, sort_keys=True) + "\n")
with open(snakemake.log[0], "w") as log:
    print(f"{len(runs)} runs -> {snakemake.output.runs}; configuration -> {snakemake.output.study}", file=log)
