# Paths and helpers of the data-level curriculum experiment (workflow/rules/cdl.smk); functions only. The models
# and their settings: pgps.experiments.cdl.

import json
import shlex

from pgps.experiments import cdl as _cdl

CDL = config["cdl"]
CDL_NNUNET = os.path.abspath(CDL["nnunet_dir"])
CDL_NOISY = _cdl.dataset_name(CDL)
CDL_ENHANCED = _cdl.dataset_name(CDL, enhanced=True)
CDL_BENCHMARKS = f"{RESULTS}/benchmarks/cdl"


def cdl_seed_dir(seed):
    return _cdl.seed_dir(CDL_NNUNET, int(seed))


def cdl_env(seed, results_dir=None):
    """nnU-Net's paths (the seed's own tree; one results folder per model) and the pgps trainers."""
    return nnunet_env(cdl_seed_dir(seed), results_dir, CDL["threads"])


def cdl_checkpoint(seed, model):
    return f"{_cdl.fold_dir(CDL, CDL_NNUNET, int(seed), model)}/checkpoint_final.pth"


def cdl_start_weights(wildcards):
    """The easy model's checkpoint for a continuation, nothing for a model that starts afresh."""
    start = _cdl.models(CDL)[wildcards.model].start_from
    return [cdl_checkpoint(wildcards.seed, start)] if start else []


def cdl_train_env(wildcards, input):
    start = input.start[0] if input.start else None
    return _cdl.export(_cdl.train_settings(CDL, wildcards.model, int(wildcards.seed), start))


def cdl_surface_file(seed, model):
    return f"{RESULTS}/cdl/seed{seed}/surface/{model}.csv"


def cdl_targets():
    if not CDL["enabled"]:
        return []
    return [f"{PAPER_FIGURES}/cdl/{name}" for name in CDL_OUTPUTS]


CDL_OUTPUTS = ("table5.csv", "table5.md", "difficulty.md", "cases.csv", "comparisons.csv", "results.md")
