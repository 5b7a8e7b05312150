"""The Makefile's workflow targets as written: each recipe, taken from ``make -n`` (with this interpreter's bin
folder as ``BIN``), runs as a Snakemake dry run; and the documentation's ``make study  # = ...`` line is that
recipe. (``--configfile`` takes every word after it: a target written last is read as a second config file.)"""

from __future__ import annotations

import re
import shutil
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


# -- every target, as written ------------------------------------------------------------------------------
TARGETS: dict[str, str] = {
    "demo": "test_make_workflow_targets_run_as_written (its recipe, a dry run)",
    "study": "test_make_workflow_targets_run_as_written (its recipe, a dry run)",
    "test": "CI: .ci/run runs make test on a clean clone (test_ci_runs_the_readme_commands)",
    "test-all": "test_make_test_all_collects_every_test",
    "test-slurm": "CI: .ci/run runs it after make test (test_ci_runs_the_readme_commands)",
    "lint": "test_make_lint_passes",
    "venv": "test_make_venv_installs_from_the_lock",
    "clean": "test_make_clean_removes_results_only",
    "docs": "tests/test_docs.py::test_the_site_builds_strictly (make docs' own mkdocs line)",
    "gpu-check": "tests/test_gpu_check.py (the script's CPU mode; the GPU run is the GPU acceptance run)",
    "gpu-check-py312": "tests/test_gpu_check.py (its requirement resolution; the 5.5 GB install is a GPU session's)",
}
"""Each Makefile target and the test that runs it (a new target without one fails the test below)."""


def test_every_make_target_is_run_by_a_test():
    phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.M)
    assert phony and set(phony.group(1).split()) == set(TARGETS)


def _make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args, f"BIN={BIN}"], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_ci_runs_the_readme_commands():
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-2:] == ["make test", "make test-slurm"]


def test_make_test_all_collects_every_test():
    """make test-all's pytest line, collecting only: every test, the slow end-to-end ones included."""
    (line,) = [line for line in _make("-n", "test-all").stdout.splitlines() if "pytest" in line]
    assert '-m "not slow"' not in line
    proc = subprocess.run(f"{line} --collect-only -q -p no:cacheprovider", shell=True, cwd=REPO, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    found = re.search(r"^(?:\d+/)?(\d+) tests? collected", proc.stdout, re.M)  # "n/m": the slurm ones deselected
    assert found and int(found.group(1)) > 0, proc.stdout[-500:]


def test_make_lint_passes():
    proc = _make("lint")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_make_venv_installs_from_the_lock(tmp_path):
    """In a fresh folder: make venv creates the environment and installs pgps[all,test,docs] through the lock."""
    venv = tmp_path / "v"
    lines = subprocess.run(["make", "-n", "venv", f"VENV={venv}", f"BIN={venv}/bin"], cwd=REPO, capture_output=True,
                           text=True).stdout.splitlines()  # fmt: skip
    assert any(f"-m venv {venv}" in line for line in lines)
    (install,) = [line for line in lines if "pip install" in line]
    assert "-c envs/constraints.txt" in install and '-e ".[all,test,docs]"' in install


def test_make_clean_removes_results_only(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    for path in ("results/x/y.csv", ".snakemake/log/z.log", "paper_figures/kept.md", "config.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    proc = _make("clean", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / ".snakemake").exists()
    assert (tmp_path / "paper_figures" / "kept.md").is_file() and (tmp_path / "config.yaml").is_file()
