"""The Makefile's workflow targets as written: each recipe, taken from ``make -n`` (with this interpreter's bin
folder as ``BIN``), runs as a Snakemake dry run; and the documentation's ``make study  # = ...`` line is that
recipe. (``--configfile`` takes every word after it: a target written last is read as a second config file.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def recipe(target: str, bin_folder: Path | str = BIN) -> str:
    """The Snakemake line ``make TARGET`` would run."""
    proc = subprocess.run(["make", "-n", target, f"BIN={bin_folder}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "snakemake" in line]
    assert len(lines) == 1, proc.stdout
    return lines[0]


@pytest.mark.parametrize(("target", "last_rule"), [("demo", "all"), ("study", "study_render")])
def test_make_workflow_targets_run_as_written(target, last_rule, tmp_path):
    """In a scratch working directory: the checkout's own results (a finished ``make demo``) leave nothing to do."""
    command = f"{recipe(target)} --dry-run --printshellcmds -s {REPO / 'Snakefile'} -d {tmp_path}"
    proc = subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "This was a dry-run" in proc.stdout and re.search(rf"^\s*{last_rule}\b", proc.stdout, re.M)
    # every nnU-Net command (trainings included) waits passively in OpenMP unless the user chose a policy
    commands = [line for line in proc.stdout.splitlines() if "nnUNet_extTrainer=" in line]
    assert any("nnUNetv2_train" in line or "train-evaluate" in line for line in commands)
    assert all('OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"' in line for line in commands)
    # and a training job for a fold that another job still trains waits for it (tests/test_runlock.py)
    assert all('PGPS_WAIT_FOR_LOCK="${PGPS_WAIT_FOR_LOCK:-1}"' in line for line in commands)


def test_the_documented_study_command_is_the_makefile_recipe():
    documented = re.search(r"make study\s+# = (.+)", (REPO / "docs/pages/explanation/study.md").read_text())
    assert documented and documented.group(1).strip() == recipe("study", ".venv/bin")
