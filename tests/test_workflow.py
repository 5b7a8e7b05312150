"""The Snakemake workflow's schedule slice (Snakefile, workflow/) and the figures of pgps.report.

Workflow runs use ``-s <repo>/Snakefile -d <tmp>`` and a config whose ``results`` and
``paper_figures`` point into the tmp dir, so nothing is written into the repository.
"""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import pgps

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
DEFAULT_MODES = SCHEMA["$defs"]["schedules"]["properties"]["modes"]["default"]

# Two of the repository config's datasets (MICCAI 2024 PGPS paper, Supplemental Table 3).
DATASETS = {
    "MSD_Hippocampus": {"patch_size": [40, 56, 40], "steps": [8, 8, 8], "batch_size": 9},
    "MSD_Lung": {"patch_size": [80, 192, 160], "steps": [16, 32, 32], "batch_size": 2},
}
EPOCHS = 200


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """Run the repository's workflow in ``workdir`` with ``config`` written to a file there."""
    configfile = workdir / "config.test.yaml"
    configfile.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    cmd += ["--cores", "1", "--configfile", str(configfile), "--show-failed-logs", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def tmp_config(tmp_path: Path, schedules: dict) -> dict:
    return {
        "results": str(tmp_path / "results"),
        "paper_figures": str(tmp_path / "paper_figures"),
        "schedules": schedules,
    }


def _snapshot(*dirs: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for d in dirs if d.exists() for p in d.rglob("*")}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One workflow run on the two datasets; modes and iterations per epoch from the schema defaults."""
    tmp = tmp_path_factory.mktemp("workflow")
    repo_outputs = (ROOT / "results", ROOT / "paper_figures")
    before = _snapshot(*repo_outputs)
    proc = snakemake(tmp, tmp_config(tmp, {"epochs": EPOCHS, "datasets": DATASETS}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _snapshot(*repo_outputs) == before, "the workflow test wrote into the repository"
    return tmp


def expected_schedule(dataset: str, mode: str) -> pgps.Schedule:
    d = DATASETS[dataset]
    return pgps.make_schedule(mode, d["patch_size"], d["steps"], d["batch_size"], epochs=EPOCHS)


def test_every_output_exists(rendered):
    figures = rendered / "paper_figures"
    assert (figures / "schedules.csv").is_file()
    for dataset in DATASETS:
        assert (figures / "figure2" / f"{dataset}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pdf = (figures / "figure2" / f"{dataset}.pdf").read_bytes()
        assert pdf[:5] == b"%PDF-" and b"/Type3" not in pdf and b"/FontFile2" in pdf  # TrueType, never Type 3
        for mode in DEFAULT_MODES:
            assert (rendered / "results" / "schedules" / dataset / f"{mode}.json").is_file()
    assert not (rendered / "config.yaml").exists()  # only the test config was read


def test_schedule_json_is_the_core_schedule(rendered):
    for dataset in DATASETS:
        for mode in DEFAULT_MODES:
            written = json.loads((rendered / "results" / "schedules" / dataset / f"{mode}.json").read_text())
            assert written == expected_schedule(dataset, mode).summary()


def test_table_has_one_row_per_stage(rendered):
    table = pd.read_csv(rendered / "paper_figures" / "schedules.csv")
    assert list(table.columns) == [
        "dataset", "mode", "stage", "patch_size_x", "patch_size_y", "patch_size_z", "patch_voxels",
        "batch_size", "tensor_voxels", "epochs", "first_epoch", "relative_voxels",
    ]  # fmt: skip
    expected = sum(expected_schedule(d, m).num_stages for d in DATASETS for m in DEFAULT_MODES)
    assert len(table) == expected
    for (dataset, mode), rows in table.groupby(["dataset", "mode"]):
        schedule = expected_schedule(dataset, mode)
        assert rows["stage"].tolist() == list(range(schedule.num_stages))
        assert rows["batch_size"].tolist() == [s.batch_size for s in schedule.stages]
        assert rows["tensor_voxels"].tolist() == [s.tensor_voxels for s in schedule.stages]
        assert rows["first_epoch"].tolist() == [schedule.first_epoch(i) for i in range(schedule.num_stages)]
        assert rows["epochs"].sum() == EPOCHS
        assert rows["relative_voxels"].unique() == pytest.approx([pgps.relative_voxels(schedule)])
        sizes = rows[["patch_size_x", "patch_size_y", "patch_size_z"]].to_numpy().tolist()
        assert sizes[-1] == DATASETS[dataset]["patch_size"]  # every schedule ends at P_max
        assert (rows["patch_voxels"] == rows[["patch_size_x", "patch_size_y", "patch_size_z"]].prod(axis=1)).all()


def test_table_batch_and_tensor_sizes_follow_the_modes(rendered):
    table = pd.read_csv(rendered / "paper_figures" / "schedules.csv")
    for dataset, d in DATASETS.items():
        rows = table[table["dataset"] == dataset]
        budget = d["batch_size"] * pgps.numel(d["patch_size"])  # b_base * numel(P_max)
        cps, eff, perf = (rows[rows["mode"] == m] for m in ("cps", "efficiency", "performance"))
        assert len(cps) == 1 and cps["tensor_voxels"].item() == budget
        assert (eff["batch_size"] == d["batch_size"]).all()
        assert (perf["tensor_voxels"] <= budget).all()
        assert (perf["batch_size"] >= d["batch_size"]).all()
        assert perf["batch_size"].iloc[-1] == d["batch_size"]


def test_rerun_has_nothing_to_do(rendered):
    proc = snakemake(rendered, tmp_config(rendered, {"epochs": EPOCHS, "datasets": DATASETS}), "-n")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("dataset", "key", "expected"),
    [
        ({"patch_size": [128, 128], "steps": [32, 32, 32], "batch_size": 2}, "patch_size", "is too short"),
        ({"patch_size": [128, 128, 128], "steps": [32, 32, 32], "batch_size": 0}, "batch_size", "less than"),
        ({"patch_size": [128, 128, 128], "steps": [32, 0, 32], "batch_size": 2}, "steps", "less than"),
        ({"patch_size": [128, 128, 128], "steps": [32, 32, 32], "batchsize": 2}, "batchsize", "unexpected"),
    ],
)
def test_malformed_dataset_fails_naming_the_key(tmp_path, dataset, key, expected):
    proc = snakemake(tmp_path, tmp_config(tmp_path, {"datasets": {"Bad": dataset}}), "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error validating config file" in out
    assert key in out and expected in out
    assert "['Bad']" in out  # the offending entry is named


@pytest.mark.parametrize(
    ("schedules", "key"),
    [
        ({"modes": ["cps", "pgps"]}, "modes"),
        ({"epochs": 0}, "epochs"),
        ({"epoch": 1000}, "epoch"),
    ],
)
def test_malformed_section_fails_naming_the_key(tmp_path, schedules, key):
    config = tmp_config(tmp_path, {"datasets": DATASETS, **schedules})
    proc = snakemake(tmp_path, config, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error validating config file" in out and key in out


def test_indivisible_patch_size_fails_naming_the_axis(tmp_path):
    dataset = {"patch_size": [40, 50, 40], "steps": [8, 8, 8], "batch_size": 9}
    proc = snakemake(tmp_path, tmp_config(tmp_path, {"modes": ["cps"], "datasets": {"Odd": dataset}}))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "axis 1 (= 50) is not divisible by its step 8" in out  # the CLI's message, from the job log


def test_schema_modes_are_the_core_modes():
    assert SCHEMA["$defs"]["mode"]["enum"] == list(pgps.MODES)


def test_import_pgps_does_not_import_plotting():
    code = "import sys, pgps; print(sorted(m for m in ('matplotlib', 'pandas', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_mode_has_one_style():
    from pgps.report.style import STRATEGIES

    assert set(STRATEGIES) == set(pgps.MODES)
    assert len({s.color for s in STRATEGIES.values()}) == len(STRATEGIES)


def test_panel_draws_every_mode(tmp_path):
    from pgps.report.figure2 import panel_title, plot_schedule_panel
    from pgps.report.style import save_figure

    summaries = {m: pgps.make_schedule(m, (128, 128, 128), (32, 32, 32), 2, epochs=100).summary() for m in pgps.MODES}
    fig = plot_schedule_panel(summaries, panel_title("Brain", summaries["cps"]))
    axes = fig.get_axes()
    assert len(axes) == 3
    assert axes[1].get_yscale() == "log"
    assert axes[2].get_xlim() == (0, 100)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(legend) == len(pgps.MODES) and legend[0] == "CPS"
    save_figure(fig, tmp_path / "panel.png")
    assert (tmp_path / "panel.png").stat().st_size > 0


def test_panel_rejects_schedules_of_different_plans():
    from pgps.report.figure2 import plot_schedule_panel

    a = pgps.make_schedule("cps", (128, 128, 128), (32, 32, 32), 2).summary()
    b = pgps.make_schedule("efficiency", (64, 64, 64), (32, 32, 32), 2).summary()
    with pytest.raises(ValueError, match="P_max"):
        plot_schedule_panel({"cps": a, "efficiency": b}, "mixed")
