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
