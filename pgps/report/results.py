"""Tidy results from nnU-Net fold folders, and the Table-1-style comparison against CPS.

A fold folder holds nnU-Net's ``validation/summary.json`` (Dice per foreground class and their
mean) and pgps's ``pgps_summary.json`` / ``pgps_telemetry.csv``. :func:`collect_fold` makes one
row per dataset x trainer x fold; :func:`compare_to_cps` adds the article's relative measures:

- relative Dice = Dice / CPS Dice (same dataset and fold; missing when CPS's Dice is 0);
- virtual relative runtime (Sec. 3.2.2): training time / (mean epoch time of the run's ``P_max``
  stage x epochs), i.e. relative to a CPS run on the same hardware (CPS itself: ~1);
- relative FLOPs = iterated voxels / CPS's iterated voxels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from pgps.report.style import ordered, strategy

RESULT_COLUMNS = (
    "dataset", "trainer", "mode", "fold", "dice", "dice_per_class", "epochs", "train_time_s",
    "p_max_mean_epoch_time_s", "iterated_voxels", "planned_relative_voxels",
)  # fmt: skip


def collect_fold(fold_dir: str | Path, dataset: str, trainer: str, fold: int) -> dict:
    """One results row from a trained fold folder; missing parts become NaN, never invented."""
    fold_dir = Path(fold_dir)
    summary = json.loads((fold_dir / "pgps_summary.json").read_text())
    validation = fold_dir / "validation" / "summary.json"
    dice, per_class = math.nan, {}
    if validation.is_file():
        metrics = json.loads(validation.read_text())
        dice = float(metrics["foreground_mean"]["Dice"])
        per_class = {str(k): float(v["Dice"]) for k, v in metrics.get("mean", {}).items()}
    return {
        "dataset": dataset,
        "trainer": trainer,
        "mode": summary["mode"],
        "fold": int(fold),
        "dice": dice,
        "dice_per_class": json.dumps(per_class),
        "epochs": summary["epochs_done"],
        "train_time_s": summary["train_time_s"],
        "p_max_mean_epoch_time_s": summary["p_max_mean_epoch_time_s"],
        "iterated_voxels": summary["iterated_voxels"],
        "planned_relative_voxels": summary["planned_relative_voxels"],
    }


def compare_to_cps(results: pd.DataFrame) -> pd.DataFrame:
    """Add ``relative_dice``, ``relative_runtime`` and ``relative_flops`` (CPS of the same dataset and fold)."""
    df = results.copy()
    # CPS's row of each row's dataset and fold (NaN where there is none)
    key = pd.MultiIndex.from_arrays([df["dataset"], df["fold"]])
    cps = df[df["mode"] == "cps"].set_index(["dataset", "fold"]).reindex(key).set_index(df.index)
    df["relative_dice"] = df["dice"] / cps["dice"].where(cps["dice"] > 0)  # undefined (NaN) when CPS scored 0
    df["relative_runtime"] = df["train_time_s"] / (df["p_max_mean_epoch_time_s"] * df["epochs"])
    df["relative_flops"] = df["iterated_voxels"] / cps["iterated_voxels"]
    return df


def table1(results: pd.DataFrame) -> pd.DataFrame:
    """The article's Table 1 layout: one row per dataset (and a normalized average), per strategy
    the mean Dice over folds [%], relative Dice [%], median relative runtime [%] and relative FLOPs [%]."""
    df = compare_to_cps(results)
    rows = []
    modes = ordered(df["mode"].unique())
    for dataset, group in df.groupby("dataset", sort=True):
        row = {"dataset": dataset}
        for mode in modes:
            g = group[group["mode"] == mode]
            label = strategy(mode).label
            row[f"{label} Dice [%]"] = 100 * g["dice"].mean() if len(g) else math.nan
            row[f"{label} rel. Dice [%]"] = 100 * g["relative_dice"].mean() if len(g) else math.nan
            row[f"{label} rel. runtime [%]"] = 100 * g["relative_runtime"].median() if len(g) else math.nan
            row[f"{label} rel. FLOPs [%]"] = 100 * g["relative_flops"].mean() if len(g) else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    average = {"dataset": "Normalized average"}
    for column in table.columns[1:]:
        if "rel." in column:
            average[column] = table[column].mean()
    return pd.concat([table, pd.DataFrame([average])], ignore_index=True)


def to_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub Markdown table; missing values show as "–" (never filled)."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    lines = [header, rule]
    for _, r in table.iterrows():
        cells = [
            "–" if isinstance(v, float) and math.isnan(v) else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))
            for v in r
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
