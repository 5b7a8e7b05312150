"""Tidy results from nnU-Net fold folders, and the relative measures against CPS.

A fold folder holds nnU-Net's ``validation/summary.json`` (Dice per foreground class and their
mean) and pgps's ``pgps_summary.json`` / ``pgps_telemetry.csv``. :func:`collect` reads the
folders a run manifest lists (``runs.csv``, one row per training run, :data:`MANIFEST_COLUMNS`)
into the results folder that every table and figure is rendered from:

- ``results.csv``: one row per manifest row: its factors and :data:`METRIC_COLUMNS`;
- ``epochs.csv``: the per-epoch telemetry of every run, factor columns included;
- ``schedules.json``: each run's curriculum schedule (``pgps schedule --json`` shape), by ``run``;
- ``characteristics.csv``: the task characteristics, when given.

Whatever a run has not written yet stays missing (NaN), never invented. Relative measures
(:func:`compare_to_cps`, :func:`aggregate`):

- relative Dice = Dice / CPS Dice (same dataset, backbone, mirroring, length, fold and seed;
  missing when CPS's Dice is 0); per group of folds, the ratio of the means over the folds both
  have (the article's Table 1 relative Dice reproduce from its 5-fold means);
- virtual relative runtime (Sec. 3.2.2): training time / (mean epoch time of the run's ``P_max``
  stage x epochs), i.e. relative to a CPS run on the same hardware (CPS itself: 1); per group the
  median over folds;
- relative FLOPs = iterated voxels / CPS's iterated voxels (both runs finished); per group the mean
  over folds.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pgps.io import atomic_write_text
from pgps.report import datasets as ds
from pgps.report.style import ordered, strategy
from pgps.report.surface import surface_metrics

MANIFEST_COLUMNS: tuple[str, ...] = (
    "dataset", "backbone", "mode", "sampler", "mirroring", "length", "fold", "seed", "trainer", "plans",
    "configuration", "fold_dir",
)  # fmt: skip
"""Columns of the run manifest ``runs.csv``, exactly."""

FACTORS: tuple[str, ...] = ("dataset", "backbone", "mode", "sampler", "mirroring", "length", "fold", "seed")
"""A run's experimental factors; with ``run`` (its manifest row number) they key every results row."""

DEFAULTS: dict[str, Any] = {"backbone": "unet", "sampler": "default", "mirroring": True, "length": 100, "seed": 0}
"""Factor values assumed for a results frame that lacks the column (e.g. an older demo table)."""

MODE_SAMPLERS: dict[str, str] = {"performance": "split_crop"}
"""A mode's own batch construction where it has a name; ``sampler == "default"`` means the same run."""

METRIC_COLUMNS: tuple[str, ...] = (
    "status", "dice", "dice_per_class", "epochs", "epochs_planned", "iterations_per_epoch", "train_time_s",
    "p_max_epochs", "p_max_mean_epoch_time_s", "relative_runtime", "iterated_voxels", "planned_iterated_voxels",
    "planned_relative_voxels", "cps_voxels_per_epoch", "patch_size_max", "batch_size_base", "num_stages",
    "first_batch_size", "fg_fallbacks", "mean_fg_voxel_share", "mean_class_presence_share",
    "nsd", "nsd_per_class", "nsd_tolerance_mm",
)  # fmt: skip
"""What :func:`collect_run` measures per run (Dice as a fraction, times in seconds, voxels per
channel). ``status``: ``complete`` (nnU-Net's validation summary exists), ``training`` (only
pgps telemetry so far) or ``missing``. ``relative_runtime`` is set for complete runs only.
``nsd*``: from ``validation/pgps_surface.csv`` when ``pgps surface`` wrote it (:mod:`pgps.report.surface`)."""

RESULTS_FILE, EPOCHS_FILE, SCHEDULES_FILE, CHARACTERISTICS_FILE = (
    "results.csv", "epochs.csv", "schedules.json", "characteristics.csv",
)  # fmt: skip

RESULT_COLUMNS = (
    "dataset", "trainer", "mode", "fold", "dice", "dice_per_class", "epochs", "train_time_s",
    "p_max_mean_epoch_time_s", "iterated_voxels", "planned_relative_voxels",
)  # fmt: skip
"""Columns of :func:`collect_fold` (the demo's one-row-per-fold table)."""


# -- reading one fold folder ----------------------------------------------------------------------
def read_validation(fold_dir: str | Path) -> tuple[float, dict[str, float]]:
    """``(mean foreground Dice, Dice per class)`` from nnU-Net's ``validation/summary.json``; NaN, {} if absent."""
    path = Path(fold_dir) / "validation" / "summary.json"
    if not path.is_file():
        return math.nan, {}
    metrics = json.loads(path.read_text())
    dice = _number(metrics.get("foreground_mean", {}).get("Dice"))
    per_class = {str(k): _number(v.get("Dice")) for k, v in metrics.get("mean", {}).items()}
    return dice, per_class


def read_summary(fold_dir: str | Path) -> dict[str, Any] | None:
    """pgps's ``pgps_summary.json`` of a fold folder, or None."""
    path = Path(fold_dir) / "pgps_summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def read_telemetry(fold_dir: str | Path) -> pd.DataFrame | None:
    """pgps's per-epoch ``pgps_telemetry.csv`` of a fold folder, or None."""
    path = Path(fold_dir) / "pgps_telemetry.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def collect_fold(fold_dir: str | Path, dataset: str, trainer: str, fold: int) -> dict:
    """One row of :data:`RESULT_COLUMNS` from a trained fold folder; missing parts become NaN, never invented."""
    summary = read_summary(fold_dir) or {}
    dice, per_class = read_validation(fold_dir)
    return {
        "dataset": dataset,
        "trainer": trainer,
        "mode": summary.get("mode"),
        "fold": int(fold),
        "dice": dice,
        "dice_per_class": json.dumps(per_class),
        "epochs": _number(summary.get("epochs_done")),
        "train_time_s": _number(summary.get("train_time_s")),
        "p_max_mean_epoch_time_s": _number(summary.get("p_max_mean_epoch_time_s")),
        "iterated_voxels": _number(summary.get("iterated_voxels")),
        "planned_relative_voxels": _number(summary.get("planned_relative_voxels")),
    }


def collect_run(fold_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame | None, dict[str, Any] | None]:
    """``(metrics, telemetry, schedule summary)`` of one run's fold folder.

    ``metrics`` has the keys of :data:`METRIC_COLUMNS`; the telemetry frame and the schedule are
    None when the run has not written them.
    """
    from pgps.schedule import Schedule  # torch-free core

    dice, per_class = read_validation(fold_dir)
    summary = read_summary(fold_dir)
    telemetry = read_telemetry(fold_dir)
    s = summary or {}
    schedule = Schedule.from_dict(s["schedule"]) if s.get("schedule") else None
    status = "complete" if math.isfinite(dice) else ("training" if summary or telemetry is not None else "missing")
    epochs = _number(s.get("epochs_done"))
    p_max_time = _number(s.get("p_max_mean_epoch_time_s"))
    train_time = _number(s.get("train_time_s"))
    runtime = math.nan
    if status == "complete":
        from pgps.report.stats import virtual_relative_runtime

        runtime = virtual_relative_runtime(train_time, p_max_time, epochs)
    metrics = {
        "status": status,
        "dice": dice,
        "dice_per_class": json.dumps(per_class),
        "epochs": epochs,
        "epochs_planned": schedule.epochs if schedule else math.nan,
        "iterations_per_epoch": schedule.iterations_per_epoch if schedule else math.nan,
        "train_time_s": train_time,
        "p_max_epochs": _number(s.get("p_max_epochs_done")),
        "p_max_mean_epoch_time_s": p_max_time,
        "relative_runtime": runtime,
        "iterated_voxels": _number(s.get("iterated_voxels")),
        "planned_iterated_voxels": _number(s.get("planned_iterated_voxels")),
        "planned_relative_voxels": _number(s.get("planned_relative_voxels")),
        "cps_voxels_per_epoch": _number(s.get("cps_voxels_per_epoch")),
        "patch_size_max": "x".join(map(str, schedule.patch_size_max)) if schedule else "",
        "batch_size_base": schedule.batch_size_base if schedule else math.nan,
        "num_stages": schedule.num_stages if schedule else math.nan,
        "first_batch_size": schedule.stages[0].batch_size if schedule else math.nan,
        "fg_fallbacks": _number(s.get("fg_fallbacks")),
        "mean_fg_voxel_share": _column_mean(telemetry, "fg_voxel_share"),
        "mean_class_presence_share": _column_mean(telemetry, "class_presence_share"),
        **surface_metrics(fold_dir),
    }
    return metrics, telemetry, (schedule.summary() if schedule else None)


def _column_mean(df: pd.DataFrame | None, column: str) -> float:
    if df is None or column not in df or df[column].notna().sum() == 0:
        return math.nan
    return float(df[column].mean())


# -- the manifest and the results folder -----------------------------------------------------------
def _bool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"mirroring must be true or false, got {value!r}")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The run manifest with typed factors (``mirroring`` bool; ``length``, ``fold``, ``seed`` int)."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: the run manifest lacks column(s) {', '.join(missing)}")
    df = df[list(MANIFEST_COLUMNS)].copy()
    df["mirroring"] = [_bool(v) for v in df["mirroring"]]
    for column in ("length", "fold", "seed"):
        try:
            df[column] = df[column].astype(int)
        except ValueError as exc:
            raise ValueError(f"{path}: column {column} must hold integers ({exc})") from None
    return df


def _progress(done: int, total: int, started: float, stream) -> None:
    if stream is None:
        return
    if done == total or done % max(1, total // 20) == 0:
        print(f"collect: {done}/{total} runs ({time.perf_counter() - started:.1f} s)", file=stream, flush=True)


def collect(
    manifest: pd.DataFrame,
    characteristics: pd.DataFrame | None = None,
    progress=sys.stderr,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``(results, epochs, schedules)`` for every manifest row (see the module docstring)."""
    rows, epochs, schedules = [], [], {}
    started = time.perf_counter()
    for i, run in enumerate(manifest.to_dict("records")):
        metrics, telemetry, schedule = collect_run(run["fold_dir"])
        rows.append({"run": i, **run, **metrics})
        if telemetry is not None and len(telemetry):
            factors = {"run": i, **{k: run[k] for k in FACTORS}}
            epochs.append(telemetry.assign(**factors)[[*factors, *telemetry.columns]])
        if schedule is not None:
            schedules[str(i)] = schedule
        _progress(i + 1, len(manifest), started, progress)
    results = pd.DataFrame(rows, columns=["run", *MANIFEST_COLUMNS, *METRIC_COLUMNS])
    epoch_table = pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame(columns=["run", *FACTORS, "epoch"])
    return results, epoch_table, schedules


def write_results(
    out_dir: str | Path,
    results: pd.DataFrame,
    epochs: pd.DataFrame,
    schedules: dict[str, Any],
    characteristics: pd.DataFrame | None = None,
) -> list[Path]:
    """Write the results folder (each file atomically; an older ``characteristics.csv`` is removed when
    none is given); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        RESULTS_FILE: _csv(results),
        EPOCHS_FILE: _csv(epochs, "%.6g"),
        SCHEDULES_FILE: json.dumps(schedules, indent=1, sort_keys=True) + "\n",
    }
    if characteristics is not None:
        files[CHARACTERISTICS_FILE] = _csv(characteristics)
    elif (out / CHARACTERISTICS_FILE).exists():  # an earlier collection's: not these results'
        (out / CHARACTERISTICS_FILE).unlink()
    for name, text in files.items():
        atomic_write_text(out / name, text)
    return [out / name for name in files]


def _csv(df: pd.DataFrame, float_format: str = "%.10g") -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format=float_format, lineterminator="\n")
    return buf.getvalue()


EPOCH_COLUMNS_USED: tuple[str, ...] = (
    "run", "epoch", "iterations", "iterated_voxels", "fg_voxel_share", "class_presence_share", "pseudo_dice",
)  # fmt: skip
"""The columns of ``epochs.csv`` the figures read (the rest is for people; runs join on ``run``)."""


def load_results(results_dir: str | Path) -> dict[str, Any]:
    """The results folder as frames: ``results``, ``epochs``, ``schedules`` (dict), ``characteristics``.

    Absent files give empty frames (or an empty dict), so that a report renders explicit gaps.
    """
    d = Path(results_dir)
    results_path = d / RESULTS_FILE
    if not results_path.is_file():
        raise ValueError(f"{results_path} does not exist; run `pgps collect` first")
    results = with_defaults(pd.read_csv(results_path))
    if "run" not in results.columns:  # a table of collect_fold rows: no telemetry to join
        results.insert(0, "run", range(len(results)))
    epochs_path = d / EPOCHS_FILE
    if _nonempty(epochs_path):
        epochs = pd.read_csv(epochs_path, usecols=lambda c: c in EPOCH_COLUMNS_USED)
    else:
        epochs = pd.DataFrame(columns=list(EPOCH_COLUMNS_USED))
    schedules_path = d / SCHEDULES_FILE
    schedules = json.loads(schedules_path.read_text()) if schedules_path.is_file() else {}
    char_path = d / CHARACTERISTICS_FILE
    characteristics = pd.read_csv(char_path) if _nonempty(char_path) else pd.DataFrame(columns=["dataset"])
    return {"results": results, "epochs": epochs, "schedules": schedules, "characteristics": characteristics}


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


# -- selecting runs ----------------------------------------------------------------------------------
def with_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every factor column (missing ones take :data:`DEFAULTS`) and typed factors."""
    df = df.copy()
    for column, value in DEFAULTS.items():
        if column not in df.columns:
            df[column] = value
    if len(df):
        df["mirroring"] = [v if isinstance(v, bool | np.bool_) else _bool(v) for v in df["mirroring"]]
        for column in ("length", "fold", "seed"):
            if column in df.columns:
                df[column] = df[column].astype(int)
        df["sampler"] = df["sampler"].fillna("default").astype(str)
    return df


def is_default_sampler(mode: str, sampler: str) -> bool:
    """Whether ``sampler`` is ``mode``'s own batch construction (``"default"`` or its name)."""
    return sampler == "default" or sampler == MODE_SAMPLERS.get(mode)


def main_mirroring(df: pd.DataFrame) -> dict[str, bool]:
    """Each dataset's main-grid mirroring: the article's choice for its datasets (ToothFairy2 and
    TotalSegmentatorV2 without), otherwise with mirroring if the dataset has any mirrored run."""
    out = {}
    for dataset, group in df.groupby("dataset", sort=False):
        if dataset in ds.ARTICLE_DATASETS:
            out[dataset] = dataset not in ds.UNMIRRORED_DATASETS
        else:
            out[dataset] = bool(group["mirroring"].any())
    return out


def main_length(df: pd.DataFrame) -> dict[str, int]:
    """Each dataset's full training length: its longest length in the manifest (the article's 100%)."""
    return {d: int(g["length"].max()) for d, g in df.groupby("dataset", sort=False)}


def select(
    df: pd.DataFrame,
    *,
    backbone: str | Iterable[str] | None = "unet",
    sampler: str | None = "default",
    mirroring: bool | str | None = "main",
    length: int | str | None = "main",
    seed: int | None = 0,
    modes: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Rows of one experiment. Defaults select the main grid (Table 1): U-Net, each mode's own
    sampler, the dataset's main mirroring and full length (:func:`main_mirroring`,
    :func:`main_length`), seed 0. ``None`` keeps every value of that factor."""
    df = with_defaults(df)
    keep = pd.Series(True, index=df.index)
    if backbone is not None:
        keep &= df["backbone"].isin([backbone] if isinstance(backbone, str) else list(backbone))
    if sampler == "default":
        keep &= np.array([is_default_sampler(m, s) for m, s in zip(df["mode"], df["sampler"], strict=True)], bool)
    elif sampler is not None:
        keep &= df["sampler"] == sampler
    if mirroring == "main":
        main = main_mirroring(df)
        keep &= np.array([m == main[d] for d, m in zip(df["dataset"], df["mirroring"], strict=True)], bool)
    elif mirroring is not None:
        keep &= df["mirroring"] == bool(mirroring)
    if length == "main":
        full = main_length(df)
        keep &= np.array([n == full[d] for d, n in zip(df["dataset"], df["length"], strict=True)], bool)
    elif length is not None:
        keep &= df["length"] == int(length)
    if seed is not None:
        keep &= df["seed"] == seed
    if modes is not None:
        keep &= df["mode"].isin(list(modes))
    return df[keep]


# -- relative measures ----------------------------------------------------------------------------------
def _cps_key(df: pd.DataFrame) -> list[str]:
    return [c for c in ("dataset", "backbone", "mirroring", "length", "fold", "seed") if c in df.columns]


def compare_to_cps(results: pd.DataFrame) -> pd.DataFrame:
    """Add ``relative_dice``, ``relative_runtime`` and ``relative_flops`` per run (CPS of the same
    dataset, backbone, mirroring, length, fold and seed; the columns a frame has)."""
    df = results.copy()
    key = _cps_key(df)
    cps_rows = df[df["mode"] == "cps"].drop_duplicates(key)
    index = pd.MultiIndex.from_frame(df[key]) if len(key) > 1 else pd.Index(df[key[0]])
    cps = cps_rows.set_index(key).reindex(index).set_index(df.index)  # NaN where there is no CPS run

    def column(frame: pd.DataFrame, name: str) -> pd.Series:  # NaN where a (hand-made) frame lacks the column
        return frame[name] if name in frame.columns else pd.Series(math.nan, index=frame.index)

    df["relative_dice"] = df["dice"] / cps["dice"].where(cps["dice"] > 0)  # undefined (NaN) when CPS scored 0
    if "relative_runtime" not in df.columns:
        time_s, epoch_s, epochs = (column(df, c) for c in ("train_time_s", "p_max_mean_epoch_time_s", "epochs"))
        df["relative_runtime"] = time_s / (epoch_s * epochs)

    def finished_voxels(frame: pd.DataFrame) -> pd.Series:  # an unfinished run's voxel count is no total
        voxels = column(frame, "iterated_voxels")
        return voxels.where(frame["status"] == "complete") if "status" in frame.columns else voxels

    df["relative_flops"] = finished_voxels(df) / finished_voxels(cps)
    df["cps_dice"] = cps["dice"]
    return df


GROUP: tuple[str, ...] = ("dataset", "backbone", "mode", "sampler", "mirroring", "length", "seed")
"""A cell of a results table: every factor but the fold."""


def aggregate(results: pd.DataFrame, by: Sequence[str] = GROUP) -> pd.DataFrame:
    """One row per group of folds (default :data:`GROUP`), from runs of :func:`compare_to_cps`:

    ``runs`` (manifest rows), ``n`` (folds with a Dice), ``dice`` (mean over folds) and
    ``dice_sd`` (population SD over folds), ``relative_dice`` (mean Dice / mean CPS Dice over the
    folds both have), ``relative_runtime`` (median), ``relative_flops`` (mean), and ``folds``
    (the Dice per fold, ``{fold: dice}``).
    """
    df = compare_to_cps(with_defaults(results))
    by = [c for c in by if c in df.columns]
    rows = []
    for key, g in df.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        dice = g["dice"].dropna()
        both = g.dropna(subset=["dice", "cps_dice"])
        cps_mean = both["cps_dice"].mean() if len(both) else math.nan
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "runs": len(g),
                "n": len(dice),
                "dice": dice.mean() if len(dice) else math.nan,
                "dice_sd": float(np.std(dice)) if len(dice) else math.nan,
                "relative_dice": both["dice"].mean() / cps_mean if len(both) and cps_mean > 0 else math.nan,
                "relative_runtime": g["relative_runtime"].median(),
                "relative_flops": g["relative_flops"].mean(),
                "folds": {int(f): float(v) for f, v in zip(g["fold"], g["dice"], strict=True) if math.isfinite(v)}
                if "fold" in g
                else {},
            }
        )
    columns = [*by, "runs", "n", "dice", "dice_sd", "relative_dice", "relative_runtime", "relative_flops", "folds"]
    return pd.DataFrame(rows, columns=columns)


# -- the demo's compact Table 1 ------------------------------------------------------------------------
def table1(results: pd.DataFrame) -> pd.DataFrame:
    """A compact Table 1 of the datasets present: one row per dataset (and a normalized average),
    per strategy the mean Dice over folds [%], relative Dice [%] (100 = CPS), median relative
    runtime [%] and relative FLOPs [%]. The article's layout is :func:`pgps.report.tables.table1`."""
    agg = aggregate(select(results))
    rows = []
    modes = ordered(agg["mode"].unique())
    for dataset in ds.ordered(agg["dataset"].unique()):
        group = agg[agg["dataset"] == dataset].set_index("mode")
        row = {"dataset": dataset}
        for mode in modes:
            g = group.loc[mode] if mode in group.index else None
            label = strategy(mode).label
            row[f"{label} Dice [%]"] = 100 * g["dice"] if g is not None else math.nan
            row[f"{label} rel. Dice [%]"] = 100 * g["relative_dice"] if g is not None else math.nan
            row[f"{label} rel. runtime [%]"] = 100 * g["relative_runtime"] if g is not None else math.nan
            row[f"{label} rel. FLOPs [%]"] = 100 * g["relative_flops"] if g is not None else math.nan
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
