"""Results collection and the Table-1-style comparison, on small hand-checkable inputs."""

import json
import math

import pandas as pd
import pytest

from pgps.report.results import RESULT_COLUMNS, collect_fold, compare_to_cps, table1, to_markdown


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
        ]
    )
    out = compare_to_cps(df).set_index("mode")
    assert out.loc["performance", "relative_dice"] == pytest.approx(0.84 / 0.80)
    assert out.loc["performance", "relative_runtime"] == pytest.approx(90 / (10 * 10))
    assert out.loc["efficiency", "relative_runtime"] == pytest.approx(40 / (8 * 10))
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
    t = table1(df).set_index("dataset")
    assert t.loc["A", "PGPS-Performance rel. Dice [%]"] == pytest.approx(110.0)
    assert t.loc["B", "PGPS-Performance rel. Dice [%]"] == pytest.approx(110.0)
    assert math.isnan(t.loc["C", "PGPS-Performance rel. Dice [%]"])
    assert math.isnan(t.loc["C", "CPS Dice [%]"])
    assert t.loc["Normalized average", "PGPS-Performance rel. Dice [%]"] == pytest.approx(110.0)
    md = to_markdown(t.reset_index())
    assert "| C | – |" in md and md.count("\n") == 2 + len(t)


def test_collect_fold_reads_nnunet_and_pgps_summaries(tmp_path):
    (tmp_path / "validation").mkdir()
    (tmp_path / "validation" / "summary.json").write_text(
        json.dumps({"foreground_mean": {"Dice": 0.5}, "mean": {"1": {"Dice": 0.4}, "2": {"Dice": 0.6}}})
    )
    (tmp_path / "pgps_summary.json").write_text(
        json.dumps(
            {
                "mode": "efficiency",
                "epochs_done": 3,
                "train_time_s": 1.5,
                "p_max_mean_epoch_time_s": 0.7,
                "iterated_voxels": 12,
                "planned_relative_voxels": 0.5,
            }
        )
    )
    r = collect_fold(tmp_path, "lesions", "nnUNetTrainer_PGPS_Efficiency", 0)
    assert list(r) == list(RESULT_COLUMNS)
    assert r["dice"] == 0.5 and json.loads(r["dice_per_class"]) == {"1": 0.4, "2": 0.6}
    (tmp_path / "validation" / "summary.json").unlink()
    assert math.isnan(collect_fold(tmp_path, "lesions", "x", 0)["dice"])


def test_relative_dice_is_missing_when_cps_scored_zero():
    df = pd.DataFrame([row("A", "cps", 0, 0.0, 10.0, 1.0, 10, 100), row("A", "efficiency", 0, 0.5, 4.0, 1.0, 10, 30)])
    out = compare_to_cps(df).set_index("mode")
    assert math.isnan(out.loc["efficiency", "relative_dice"])
    assert out.loc["efficiency", "relative_flops"] == pytest.approx(0.3)
