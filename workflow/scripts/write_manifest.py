"""Write the run manifest that `pgps collect --runs` reads (rules manifest and demo_manifest)."""

import pandas as pd

from pgps.io import atomic_write_text

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
columns = ["dataset", "backbone", "mode", "sampler", "mirroring", "length", "fold", "seed"]
columns += ["trainer", "plans", "configuration", "fold_dir"]
runs = pd.DataFrame(snakemake.params.runs, columns=columns)
atomic_write_text(snakemake.output[0], runs.to_csv(index=False))
with open(snakemake.log[0], "w") as log:
    print(f"{len(runs)} runs -> {snakemake.output[0]}", file=log)
