"""The data-curriculum experiment's DAG (workflow/rules/cdl.smk) end to end on a miniature configuration:
synthesize noisy label sets, pgps difficulty, plan/preprocess, train two arms, predict, NSD, render."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

pytestmark = pytest.mark.nnunet

MINIATURE = {
    "cases": 6,
    "test_cases": 1,
    "shape": [32, 32, 32],  # nnU-Net plans a 32^3 patch and 4 stages: a 4-stage light network
    "radius": [4, 6],
    "light_features": [4, 8, 16, 16],
    "label_levels": [0.0, 0.15],
    "epochs": 2,  # round(0.4 * 2) = 1 easy epoch, then 1 with the hard cases
    "iterations_per_epoch": 1,
    "val_iterations": 1,
    "arms": {
        "uniform": {"trainer": "nnUNetTrainer_PGPS_CPS_NoMirroring"},
        "easy_then_hard": {"trainer": "nnUNetTrainer_PGPS_CPS_NoMirroring_DataCurriculumRestart"},
    },
}


def config(tmp: Path, cdl: dict) -> Path:
    conf = {
        "results": str(tmp / "results"),
        "paper_figures": str(tmp / "paper_figures"),
        "schedules": {
            "datasets": {"MSD_Hippocampus": {"patch_size": [40, 56, 40], "steps": [8, 8, 8], "batch_size": 9}}
        },
        "demo": {"enabled": False},
        "cdl": {"enabled": True, "nnunet_dir": str(tmp / "nnunet"), **cdl},
    }
    path = tmp / "config.cdl.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def snakemake(tmp: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [SNAKEMAKE, "-s", ROOT / "Snakefile", "-d", tmp, "--cores", "2", "--configfile", configfile, *args]
    return subprocess.run([str(c) for c in command], capture_output=True, text=True)


def test_default_config_keeps_the_experiment_off(tmp_path):
    proc = snakemake(tmp_path, ROOT / "config.yaml", "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cdl_" not in proc.stdout
    full = config(tmp_path, {})  # the schema's defaults: 5 arms, 24 cases
    proc = snakemake(tmp_path, full, "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rule, count in [("cdl_train", 5), ("cdl_predict", 5), ("cdl_surface", 5), ("cdl_render", 1)]:
        assert any(line.split()[:2] == [rule, str(count)] for line in proc.stdout.splitlines()), proc.stdout


@pytest.mark.slow
def test_miniature_dag_renders_the_table(tmp_path):
    proc = snakemake(tmp_path, config(tmp_path, MINIATURE), "--show-failed-logs")
    logs = "\n".join(p.read_text()[-1500:] for p in (tmp_path / "results" / "logs").rglob("*.log"))
    assert proc.returncode == 0, proc.stderr[-4000:] + logs
    out = tmp_path / "paper_figures" / "cdl"
    table = pd.read_csv(out / "table5.csv", index_col="class")
    assert list(table.index) == ["organ_1", "organ_2", "organ_3", "organ_4", "average"]
    assert sorted(table.columns) == ["easy_then_hard.dsc", "easy_then_hard.nsd", "uniform.dsc", "uniform.nsd"]
    assert table.loc["average"].between(0, 100).all()
    md = (out / "table5.md").read_text()
    assert "| published (final - only easy) | +1.34 | +1.77 |" in md  # 90.01 - 88.67, 92.11 - 90.34
    assert "ours (easy then hard - uniform)" in md and "Run: 6 training cases" in md
    assert (tmp_path / "results" / "benchmarks" / "cdl" / "render.tsv").is_file()
    difficulty = pd.read_csv(tmp_path / "results" / "cdl" / "difficulty.csv")
    assert len(difficulty) == 6 and "Spearman correlation of DS" in (out / "difficulty.md").read_text()
    # the easy-then-hard arm drew only easy cases in its first epoch (its own log), the uniform arm every case
    fold = next((tmp_path / "nnunet" / "results_easy_then_hard").rglob("pgps_data_curriculum.csv")).parent
    rows = pd.read_csv(fold / "pgps_data_curriculum.csv")
    easy = set(difficulty.loc[difficulty["group"] == "easy", "case"])
    assert set(rows.loc[0, "drawn"].split(";")) <= easy and rows["keys_outside_phase"].eq(0).all()
    report = pd.read_csv(tmp_path / "results" / "cdl" / "predictions" / "uniform_fold0" / "pgps_predict_report.csv")
    assert len(report) == 1 and report["windows_skipped"].eq(0).all()
    enhanced = json.loads(next((tmp_path / "nnunet" / "raw").glob("Dataset611_*/dataset.json")).read_text())
    assert enhanced["pgps_difficulty"]["label_sets"] == ["set_1", "set_2", "set_3"]
