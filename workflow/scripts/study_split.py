"""Write the study's held-out split (nnU-Net's splits_final.json, one fold) into a preprocessed dataset folder."""

import os

from pgps.experiments.study import write_holdout_split

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
path = write_holdout_split(os.path.dirname(snakemake.input[0]), snakemake.params.train_cases)
with open(snakemake.log[0], "w") as log:
    print(f"{path}: fold 0 trains on the first {snakemake.params.train_cases} cases", file=log)
