"""Write the held-out manifest that `pgps amos22-report --manifest` reads (rule heldout_manifest)."""

import csv
import io

from pgps.heldout import EVALUATION_COLUMNS
from pgps.io import atomic_write_text

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
buffer = io.StringIO()
writer = csv.DictWriter(buffer, fieldnames=EVALUATION_COLUMNS, lineterminator="\n")
writer.writeheader()
writer.writerows(snakemake.params.rows)
atomic_write_text(snakemake.output[0], buffer.getvalue())
with open(snakemake.log[0], "w") as log:
    print(f"{len(snakemake.params.rows)} held-out predictions -> {snakemake.output[0]}", file=log)
