# Shared paths and helpers (no rules here: snakemake --lint keeps functions and rules apart).

import os
import sys
from pathlib import Path

RESULTS = config["results"]
PAPER_FIGURES = config["paper_figures"]
SCHEDULES = config["schedules"]

# Run the pgps of this checkout, with the interpreter that runs Snakemake, also when its
# virtualenv is not activated (`make demo` calls .venv/bin/snakemake). Under `--sdm conda`
# the activated environment's bin/ comes first on PATH and provides the interpreter.
os.environ.update(
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    PYTHONPATH=os.pathsep.join(p for p in [workflow.basedir, os.environ.get("PYTHONPATH", "")] if p),
)


# The figure code: an input of the render rules, so that editing it re-renders the figures.
REPORT_CODE = sorted(str(p) for p in Path(workflow.basedir, "pgps", "report").glob("*.py"))


def planned(dataset, key):
    """A planned size of ``dataset`` from the config: patch_size, steps or batch_size."""
    return SCHEDULES["datasets"][dataset][key]


def schedule_targets():
    """The schedule table and one Figure 2 panel (PNG and PDF) per dataset."""
    return [
        f"{PAPER_FIGURES}/schedules.csv",
        *expand(f"{PAPER_FIGURES}/figure2/{{dataset}}.{{ext}}", dataset=SCHEDULES["datasets"], ext=["png", "pdf"]),
    ]


# -- the demo training run (workflow/rules/demo.smk) --

DEMO = config["demo"]
NNUNET = os.path.abspath(DEMO["nnunet_dir"])


def demo_name(dataset):
    """nnU-Net's dataset folder name, e.g. Dataset502_lesions."""
    return f"Dataset{DEMO['datasets'][dataset]['dataset_id']:03d}_{dataset}"


def demo_fold_dir(dataset, trainer, fold):
    return f"{NNUNET}/results/{demo_name(dataset)}/{trainer}__nnUNetPlans__{DEMO['configuration']}/fold_{fold}"


def demo_env():
    """nnU-Net's paths and pgps's short-run settings for a shell command."""
    return (
        f"export nnUNet_raw={NNUNET}/raw nnUNet_preprocessed={NNUNET}/preprocessed"
        f" nnUNet_results={NNUNET}/results nnUNet_def_n_proc={DEMO['processes']}"
        f' nnUNet_extTrainer="$(python -m pgps trainers --ext-path)";'
    )


def demo_runs():
    """(dataset, trainer, fold, fold folder) of every demo training run."""
    return [
        (d, t, f, demo_fold_dir(d, t, f)) for d in DEMO["datasets"] for t in DEMO["trainers"] for f in DEMO["folds"]
    ]


def demo_targets():
    if not DEMO["enabled"] or not DEMO["datasets"]:
        return []
    return [
        f"{PAPER_FIGURES}/demo/table1.csv",
        f"{PAPER_FIGURES}/demo/table1.md",
        *expand(f"{PAPER_FIGURES}/demo/convergence_{{dataset}}.{{ext}}", dataset=DEMO["datasets"], ext=["png", "pdf"]),
    ]
