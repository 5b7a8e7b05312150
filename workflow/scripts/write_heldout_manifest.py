"""Write the held-out manifest that `pgps amos22-report --manifest` reads (rule heldout_manifest)."""

from pgps.experiments.heldout import EVALUATION_COLUMNS
from pgps.io import write_csv

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
write_csv(snakemake.output[0], snakemake.params.rows, EVALUATION_COLUMNS)
with open(snakemake.log[0], "w") as log:
    print(f"{len(snakemake.params.rows)} held-out predictions -> {snakemake.output[0]}", file=log)
