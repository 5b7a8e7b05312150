"""The data-curriculum experiment's DAG (workflow/rules/cdl.smk) end to end on a miniature configuration: per seed
synthesize image-difficulty cases, pgps difficulty, plan/preprocess, the easy course, its two continuations from
the same checkpoint and uniform training, predict, NSD; then the report."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pgps.experiments import cdl as experiment

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

pytestmark = pytest.mark.nnunet

MINIATURE = {
    "cases": 10,
    "test_cases": 2,
    "shape": [32, 32, 32],  # nnU-Net plans a 32^3 patch and 4 stages: a 4-stage light network
    "radius": [4, 6],
    "hard_blur": 1.5,  # on these small organs: 2 to 5 easy cases of 10 per seed, the rest hard or erroneous
    "light_features": [4, 8, 16, 16],
    "seeds": [0, 1],
    "easy_epochs": 2,
    "hard_epochs": 3,
    "iterations_per_epoch": 1,
    "val_iterations": 1,
    "threads": 1,
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
    full = config(tmp_path, {})  # the schema's defaults: 4 seeds x 4 models
    proc = snakemake(tmp_path, full, "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = [("cdl_synthesize", 4), ("cdl_train", 16), ("cdl_predict", 16), ("cdl_surface", 16), ("cdl_render", 1)]
    for rule, count in counts:
        assert any(line.split()[:2] == [rule, str(count)] for line in proc.stdout.splitlines()), proc.stdout


def test_the_committed_config_states_its_budget_and_the_papers_ratio():
    committed = yaml.safe_load((ROOT / "workflow" / "configs" / "cdl.yaml").read_text())["cdl"]
    assert committed["hard_epochs"] == 1.5 * committed["easy_epochs"]  # 1500 / 1000 epochs, CDL-UNet Table 2
    assert committed["budget_minutes"] <= 45 and len(committed["seeds"]) >= 3


def test_the_continuations_start_from_the_easy_models_checkpoint():
    for model in experiment.ARMS:
        m = experiment.models({"trainer": "T", "easy_epochs": 4, "hard_epochs": 6})[model]
        settings = experiment.train_settings(
            {"trainer": "T", "easy_epochs": 4, "hard_epochs": 6, "iterations_per_epoch": 2, "val_iterations": 1},
            model, 0, "/e/checkpoint_final.pth" if m.start_from else None,
        )  # fmt: skip
        assert settings["PGPS_EPOCHS"] == ("10" if model == "uniform" else "6")
        assert settings.get("PGPS_INIT_WEIGHTS") == ("/e/checkpoint_final.pth" if m.start_from else None)
        assert ("PGPS_DATA_PACING" in settings) == (model != "uniform")
    with pytest.raises(ValueError, match="model easy_then_hard starts from easy"):
        experiment.train_settings({"trainer": "T", "easy_epochs": 4, "hard_epochs": 6}, "easy_then_hard", 0)


@pytest.mark.slow
def test_miniature_dag_renders_the_report(tmp_path):
    proc = snakemake(tmp_path, config(tmp_path, MINIATURE), "--show-failed-logs")
    logs = "\n".join(p.read_text()[-1500:] for p in (tmp_path / "results" / "logs").rglob("*.log"))
    assert proc.returncode == 0, proc.stderr[-4000:] + logs
    out = tmp_path / "paper_figures" / "cdl"
    assert sorted(p.name for p in out.iterdir()) == sorted(["table5.csv", "table5.md", "difficulty.md", "cases.csv",
                                                            "comparisons.csv", "results.md"])  # fmt: skip
    cases = pd.read_csv(out / "cases.csv")
    assert len(cases) == 2 * 2 * 4 and cases["dice"].between(0, 100).all()  # seeds x test cases x models
    assert "Holm" in (out / "results.md").read_text()
    for seed in (0, 1):
        root = tmp_path / "nnunet" / f"seed{seed}"
        meta = json.loads((root / "raw" / "Dataset610_CDLNoisy" / "dataset.json").read_text())
        assert meta["pgps_synth"]["config"]["seed"] == seed  # each seed its own data
        difficulty = pd.read_csv(tmp_path / "results" / "cdl" / f"seed{seed}" / "difficulty.csv")
        easy = set(difficulty.loc[difficulty["group"] == "easy", "case"])
        hard = set(difficulty.loc[difficulty["group"] == "hard", "case"])
        full = {**MINIATURE, "trainer": "nnUNetTrainer_PGPS_CPS_NoMirroring", "configuration": "3d_light",
                "fold": 0, "enhanced_id": 611}  # fmt: skip
        folds = {m: Path(experiment.fold_dir(full, str(tmp_path / "nnunet"), seed, m)) for m in experiment.MODELS}
        easy_sha = hashlib.sha256((folds["easy"] / "checkpoint_final.pth").read_bytes()).hexdigest()
        for model in ("easy_then_hard", "easy_continued"):  # one easy model file, loaded by both continuations
            record = json.loads((folds[model] / "pgps_init_weights.json").read_text())
            assert record["sha256"] == easy_sha and record["source_epochs"] == 2
            rows = pd.read_csv(folds[model] / "pgps_data_curriculum.csv")
            assert len(rows) == 3 and rows.loc[0, "lr"] == pytest.approx(0.01)  # E2 epochs, the LR restarted
            drawn = set(";".join(rows["drawn"]).split(";"))
            assert drawn <= (easy | hard if model == "easy_then_hard" else easy)
        assert set(";".join(pd.read_csv(folds["easy"] / "pgps_data_curriculum.csv")["drawn"]).split(";")) <= easy
        for model in ("easy", "uniform"):  # these start afresh
            assert not (folds[model] / "pgps_init_weights.json").exists()
