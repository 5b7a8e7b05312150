"""Experiments: the article's grid of training runs and their nnU-Net names (:mod:`pgps.experiments.grid`), the
held-out evaluation of the AMOS22 study (:mod:`pgps.experiments.heldout`), the synthetic study
(:mod:`pgps.experiments.study`), the data-curriculum experiment's models (:mod:`pgps.experiments.cdl`) and one GPU
per job (:mod:`pgps.experiments.gpu_slot`, needs ``filelock``). Torch-free: the workflow imports these while Snakemake
builds the DAG."""
