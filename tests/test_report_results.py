"""Results collection and the relative measures against CPS, on small hand-checkable inputs."""

import json
import math

import pandas as pd
import pytest

import pgps
from pgps.report.results import METRIC_COLUMNS, collect_run, compare_to_cps
from pgps.report.tables import table1


def row(dataset, mode, fold, dice, time_s, p_max_epoch_s, epochs, voxels):
    return {
        "dataset": dataset, "trainer": f"nnUNetTrainer_PGPS_{mode}", "mode": mode, "fold": fold, "dice": dice,
        "dice_per_class": "{}", "epochs": epochs, "train_time_s": time_s, "p_max_mean_epoch_time_s": p_max_epoch_s,
        "iterated_voxels": voxels, "planned_relative_voxels": math.nan,
    }  # fmt: skip


def test_compare_to_cps_hand_computed():
    df = pd.DataFrame(
        [
            row("A", "cps", 0, 0.80, 100.0, 10.0, 10, 1000),
            row("A", "performance", 0, 0.84, 90.0, 10.0, 10, 940),
            row("A", "efficiency", 0, 0.78, 40.0, 8.0, 10, 330),
            row("A", "miccai", 0, 0.79, 40.0, 0.0, 10, 330),  # no P_max epoch measured: no runtime
        ]
    )
    out = compare_to_cps(df).set_index("mode")
    assert out.loc["performance", "relative_dice"] == pytest.approx(0.84 / 0.80)
    assert out.loc["performance", "relative_runtime"] == pytest.approx(90 / (10 * 10))
    assert out.loc["efficiency", "relative_runtime"] == pytest.approx(40 / (8 * 10))
    assert math.isnan(out.loc["miccai", "relative_runtime"])  # the guard of stats.virtual_relative_runtime
    assert out.loc["efficiency", "relative_flops"] == pytest.approx(0.33)
    assert out.loc["cps", "relative_flops"] == 1.0


def test_table1_normalized_average_and_gaps():
    df = pd.DataFrame(
        [
            row("A", "cps", 0, 0.80, 100.0, 10.0, 10, 1000),
            row("A", "performance", 0, 0.88, 90.0, 10.0, 10, 1000),
            row("B", "cps", 0, 0.50, 100.0, 10.0, 10, 1000),
            row("B", "performance", 0, 0.55, 90.0, 10.0, 10, 1000),
            row("C", "performance", 0, 0.60, 90.0, 10.0, 10, 1000),  # no CPS run: relative values missing
        ]
    )
    t = table1(df)
    assert t.value("A", "reldice.performance") == pytest.approx(10.0)
    assert t.value("B", "reldice.performance") == pytest.approx(10.0)
    assert math.isnan(t.value("C", "reldice.performance"))
    assert math.isnan(t.value("C", "dice.cps"))
    assert t.value("norm_avg", "dice.performance") == pytest.approx(110.0)
    assert t.cell("norm_avg", "dice.performance")["n"] == 2  # C has no CPS: left out, never filled


def test_collect_run_reads_nnunet_and_pgps_summaries(tmp_path):
    (tmp_path / "validation").mkdir()
    (tmp_path / "validation" / "summary.json").write_text(
        json.dumps({"foreground_mean": {"Dice": 0.5}, "mean": {"1": {"Dice": 0.4}, "2": {"Dice": 0.6}}})
    )
    schedule = pgps.make_schedule("efficiency", (32, 32, 32), (16, 16, 16), 2, epochs=3, iterations_per_epoch=2)
    summary = {"mode": "efficiency", "epochs_done": 3, "train_time_s": 1.5, "p_max_mean_epoch_time_s": 0.7}
    summary |= {"iterated_voxels": 12, "schedule": schedule.to_dict()}
    (tmp_path / "pgps_summary.json").write_text(json.dumps(summary))
    pd.DataFrame({"epoch": [0, 1, 2]}).to_csv(tmp_path / "pgps_telemetry.csv", index=False)
    metrics, telemetry, read_schedule = collect_run(tmp_path)
    assert list(metrics) == list(METRIC_COLUMNS)
    assert metrics["status"] == "complete" and metrics["dice"] == 0.5
    assert json.loads(metrics["dice_per_class"]) == {"1": 0.4, "2": 0.6}
    assert metrics["relative_runtime"] == pytest.approx(1.5 / (0.7 * 3))
    assert telemetry["epoch"].tolist() == [0, 1, 2] and read_schedule["mode"] == "efficiency"


@pytest.mark.parametrize("epochs", [[0, 1], [0, 1, 1, 2], None])
def test_collect_run_is_incomplete_without_every_epoch_once(tmp_path, epochs):
    """A validated run whose telemetry misses, repeats or lacks epochs is not counted as complete."""
    (tmp_path / "validation").mkdir()
    (tmp_path / "validation" / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.5}}))
    schedule = pgps.make_schedule("cps", (32, 32, 32), (16, 16, 16), 2, epochs=3, iterations_per_epoch=2)
    (tmp_path / "pgps_summary.json").write_text(json.dumps({"mode": "cps", "schedule": schedule.to_dict()}))
    if epochs is not None:
        pd.DataFrame({"epoch": epochs}).to_csv(tmp_path / "pgps_telemetry.csv", index=False)
    metrics, _, _ = collect_run(tmp_path)
    assert metrics["status"] == "incomplete"
    assert math.isnan(metrics["relative_runtime"])
