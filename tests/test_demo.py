"""The demo DAG end to end on the reduced .test/ config: synthesize, plan, train, collect, render."""

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

pytestmark = pytest.mark.nnunet


def test_demo_dag_produces_every_file(tmp_path):
    config = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    command = [SNAKEMAKE, "-s", ROOT / "Snakefile", "-d", tmp_path, "--cores", "2"]
    proc = subprocess.run([*command, "--configfile", ROOT / ".test" / "config.yaml"], capture_output=True, text=True)
    logs = "\n".join(p.read_text()[-2000:] for p in (tmp_path / "results" / "logs").rglob("*.log"))
    assert proc.returncode == 0, proc.stderr[-4000:] + logs
    figures = tmp_path / "paper_figures" / "demo"
    for name in ("table1.csv", "table1.md", "convergence_lesions.png", "convergence_lesions.pdf"):
        assert (figures / name).stat().st_size > 0, name
    results = pd.read_csv(tmp_path / "results" / "demo" / "results.csv")
    assert sorted(results["mode"]) == ["cps", "efficiency", "performance"]
    assert results["epochs"].eq(config["demo"]["epochs"]).all()
    assert results["dice"].between(0, 1).all()
    by_mode = results.set_index("mode")
    assert by_mode.loc["efficiency", "iterated_voxels"] < by_mode.loc["cps", "iterated_voxels"]
    with open(figures / "table1.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["dataset"] for r in table] == ["lesions", "Normalized average"]
    assert float(table[0]["CPS rel. Dice [%]"]) == pytest.approx(100.0)
