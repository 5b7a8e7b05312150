"""The demo DAG end to end on the reduced .test/ config: synthesize, plan, train, collect, render."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pgps.report import OUTPUTS

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

pytestmark = pytest.mark.nnunet


@pytest.mark.slow
def test_demo_dag_produces_every_file(tmp_path):
    config = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    command = [SNAKEMAKE, "-s", ROOT / "Snakefile", "-d", tmp_path, "--cores", "2"]
    proc = subprocess.run([*command, "--configfile", ROOT / ".test" / "config.yaml"], capture_output=True, text=True)
    logs = "\n".join(p.read_text()[-2000:] for p in (tmp_path / "results" / "logs").rglob("*.log"))
    assert proc.returncode == 0, proc.stderr[-4000:] + logs
    figures = tmp_path / "paper_figures" / "demo"
    for name in OUTPUTS:
        assert (figures / name).stat().st_size > 0, name
    assert (figures / "figures" / "figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = pd.read_csv(tmp_path / "results" / "collected_demo" / "results.csv")
    assert sorted(results["mode"]) == ["cps", "efficiency", "performance"]
    assert results["status"].eq("complete").all()
    assert results["epochs"].eq(config["demo"]["epochs"]).all()
    assert results["dice"].between(0, 1).all()
    by_mode = results.set_index("mode")
    assert by_mode.loc["efficiency", "iterated_voxels"] < by_mode.loc["cps", "iterated_voxels"]
    characteristics = pd.read_csv(tmp_path / "results" / "characteristics_demo.csv")
    assert list(characteristics["dataset"]) == ["lesions"]

    # the demo's dataset fills Table 1; the article's datasets stay explicit gaps
    table = pd.read_csv(figures / "tables" / "table1.csv").set_index("dataset")
    dice = ["dice.cps", "dice.efficiency", "dice.performance"]
    assert table.loc["lesions", dice].notna().all()
    assert table.loc[["BTCV", "MSD_Lung"], dice].isna().all().all()
