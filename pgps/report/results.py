"""Tidy results from nnU-Net fold folders, and the relative measures against CPS.

A fold folder holds nnU-Net's ``validation/summary.json`` (Dice per foreground class and their
mean) and pgps's ``pgps_summary.json`` / ``pgps_telemetry.csv``. :func:`collect` reads the
folders a run manifest lists (``runs.csv``, one row per training run, :data:`MANIFEST_COLUMNS`)
into the results folder that every table and figure is rendered from:

- ``results.csv``: one row per manifest row: its factors and :data:`METRIC_COLUMNS`;
- ``epochs.csv``: the per-epoch telemetry of every run, factor columns included;
- ``schedules.json``: each run's curriculum schedule (``pgps schedule --json`` shape), by ``run``;
- ``cases.csv``: the Dice of every validation case and foreground class of every finished run, from
  nnU-Net's ``metric_per_case`` (:data:`CASE_COLUMNS`; the MICCAI 2024 paper's per-sample t-tests);
- ``characteristics.csv``: the task characteristics, when given;
- ``surface.csv``: every run's per-case, per-class Dice and NSD, when any run has ``pgps surface``'s table.

:func:`collect_folder` and :func:`write_characteristics` are what ``pgps collect`` and ``pgps characteristics`` do.

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
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pgps.io import atomic_write_text, read_json
from pgps.progress import progress as progress_of
from pgps.report import datasets as ds
from pgps.report import stats
from pgps.report.characteristics import COLUMNS, MEASURES, task_characteristics
from pgps.report.surface import RESULTS_SURFACE_FILE, collect_surface, surface_metrics

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
    "first_batch_size", "fg_fallbacks", "mean_fg_voxel_share", "mean_class_presence_share", "energy_kwh", "co2_kg",
    "nsd", "nsd_per_class", "nsd_tolerance_mm",
)  # fmt: skip
"""What :func:`collect_run` measures per run (Dice as a fraction, times in seconds, voxels per
channel). ``status``: ``complete`` (nnU-Net's validation summary exists and the telemetry holds every
epoch of the run's schedule exactly once), ``incomplete`` (validated, but the telemetry is missing or
holds fewer or repeated epochs: a cut or stale file, or a run resumed without its telemetry),
``damaged`` (a file of the run cannot be read as written: a telemetry table cut short or holding NUL bytes
or a field that is not a number, a ``pgps_summary.json`` that is not a JSON object or holds a non-number
where a number belongs; a warning names the file, row and column; nothing else of the run is counted),
``training`` (only pgps telemetry so far) or ``missing``. ``relative_runtime`` is set for complete
runs only. ``energy_kwh`` and ``co2_kg`` are CodeCarbon's totals for the run (missing without CodeCarbon,
see :mod:`pgps.nnunet.carbon`). ``nsd*``: from ``validation/pgps_surface.csv`` when ``pgps surface`` wrote it
(:mod:`pgps.report.surface`)."""

RESULTS_FILE, EPOCHS_FILE, SCHEDULES_FILE, CHARACTERISTICS_FILE, CASES_FILE = (
    "results.csv", "epochs.csv", "schedules.json", "characteristics.csv", "cases.csv",
)  # fmt: skip

CASE_COLUMNS: tuple[str, ...] = ("run", *("dataset", "mode", "fold"), "case", "label", "dice")
"""Columns of ``cases.csv``: one row per run, validation case and foreground label (or region) of nnU-Net's
``metric_per_case``; ``dice`` as a fraction, NaN where nnU-Net's is (label absent from both images)."""


# -- reading files, with errors that name them ------------------------------------------------------
def read_csv(path: str | Path, required: Sequence[str] = (), what: str = "table", **kwargs: Any) -> pd.DataFrame:
    """A CSV table with the ``required`` columns; anything else raises ``ValueError`` naming the file
    (and the missing columns)."""
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a CSV {what} ({type(exc).__name__}: {exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a CSV {what}: no column(s) {', '.join(missing)}")
    return df


# -- reading one fold folder ----------------------------------------------------------------------
def read_validation(fold_dir: str | Path) -> tuple[float, dict[str, float]]:
    """``(mean foreground Dice, Dice per class)`` from nnU-Net's ``validation/summary.json``; NaN, {} if absent."""
    path = Path(fold_dir) / "validation" / "summary.json"
    if not path.is_file():
        return math.nan, {}
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: not nnU-Net's validation summary (no foreground_mean)")
    dice = _number(metrics.get("foreground_mean", {}).get("Dice"))
    per_class = {str(k): _number(v.get("Dice")) for k, v in metrics.get("mean", {}).items()}
    return dice, per_class


def read_cases(fold_dir: str | Path) -> list[dict[str, Any]]:
    """``{case, label, dice}`` per validation case and label from nnU-Net's ``validation/summary.json``
    (``metric_per_case``; the case is the reference file's name without its extension); [] if absent."""
    path = Path(fold_dir) / "validation" / "summary.json"
    if not path.is_file():
        return []
    rows = []
    for entry in json.loads(path.read_text()).get("metric_per_case", []):
        name = Path(str(entry.get("reference_file") or entry.get("prediction_file") or "")).name
        case = name.split(".")[0]
        for label, metrics in (entry.get("metrics") or {}).items():
            rows.append({"case": case, "label": str(label), "dice": _number((metrics or {}).get("Dice"))})
    return rows


class DamagedFile(ValueError):
    """A file of a run that cannot be read as pgps wrote it (the message names file, row and column)."""


SUMMARY_NUMBERS = ("epochs_done", "train_time_s", "p_max_epochs_done", "p_max_mean_epoch_time_s", "iterated_voxels",
                   "planned_iterated_voxels", "planned_relative_voxels", "cps_voxels_per_epoch", "fg_fallbacks",
                   "energy_kwh", "co2_kg")  # fmt: skip
"""Keys of ``pgps_summary.json`` that hold a number (or null)."""

TELEMETRY_TEXT = ("patch_size", "crop_size")
"""The columns of ``pgps_telemetry.csv`` that are not numbers."""


def read_summary(fold_dir: str | Path) -> dict[str, Any] | None:
    """pgps's ``pgps_summary.json`` of a fold folder, or None; :class:`DamagedFile` when it is not a JSON object
    with numbers where :data:`SUMMARY_NUMBERS` are."""
    path = Path(fold_dir) / "pgps_summary.json"
    if not path.is_file():
        return None
    try:
        summary = read_json(path)
    except ValueError as exc:
        raise DamagedFile(str(exc)) from None
    if not isinstance(summary, dict):
        raise DamagedFile(f"{path}: not a pgps summary (a JSON object), but a JSON {type(summary).__name__}")
    for key in SUMMARY_NUMBERS:
        value = summary.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise DamagedFile(f"{path}: {key} is {value!r}, not a number")
    if summary.get("schedule") is not None and not isinstance(summary["schedule"], dict):
        raise DamagedFile(f"{path}: schedule is not a JSON object")
    return summary


def read_telemetry(fold_dir: str | Path) -> pd.DataFrame | None:
    """pgps's per-epoch ``pgps_telemetry.csv`` of a fold folder, or None; :class:`DamagedFile` when it is cut
    short (its last line has no line end: its last value may be cut too, 4.39 for 4.39e-05), holds NUL bytes, or
    a field that should be a number is not one."""
    path = Path(fold_dir) / "pgps_telemetry.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return None
    raw = path.read_bytes()
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise DamagedFile(f"{path}, line {line}: NUL bytes (the file was damaged, e.g. by a crash of its disk)")
    if not raw.endswith(b"\n"):
        line = raw.count(b"\n") + 1
        raise DamagedFile(f"{path}, line {line}: cut short (no line end after the last row)")
    try:
        df = read_csv(path, ["epoch"], "telemetry table (pgps_telemetry.csv)")
    except ValueError as exc:
        raise DamagedFile(str(exc)) from None
    check_numbers(df, path, [c for c in df.columns if c not in TELEMETRY_TEXT], error=DamagedFile)
    return df


def check_numbers(df: pd.DataFrame, path: str | Path, columns: Iterable[str], error: type = ValueError) -> None:
    """Raise ``error`` naming the file, line and column of the first field of ``columns`` (those ``df`` has) that is
    not a number; empty fields are missing values, not errors. Line 1 is the header."""
    for column in columns:
        if column not in df.columns or pd.api.types.is_numeric_dtype(df[column]):
            continue
        values = pd.to_numeric(df[column], errors="coerce")
        bad = values.isna() & df[column].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise error(f"{path}, line {i + 2}, column {column}: {df[column].iloc[i]!r} is not a number")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def collect_run(fold_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame | None, dict[str, Any] | None]:
    """``(metrics, telemetry, schedule summary)`` of one run's fold folder.

    ``metrics`` has the keys of :data:`METRIC_COLUMNS`; the telemetry frame and the schedule are
    None when the run has not written them.
    """
    from pgps.schedule import Schedule  # torch-free core

    dice, per_class = read_validation(fold_dir)
    try:
        summary = read_summary(fold_dir)
        telemetry = read_telemetry(fold_dir)
    except DamagedFile as exc:
        warnings.warn(f"damaged run: {exc}", stacklevel=2)
        metrics = dict.fromkeys(METRIC_COLUMNS, math.nan) | {"dice_per_class": "{}", "patch_size_max": ""}
        return {**metrics, **surface_metrics(fold_dir), "status": "damaged"}, None, None
    s = summary or {}
    schedule = Schedule.from_dict(s["schedule"]) if s.get("schedule") else None
    if math.isfinite(dice):
        status = "complete" if _every_epoch_once(telemetry, schedule) else "incomplete"
    else:
        status = "training" if summary or telemetry is not None else "missing"
    epochs = _number(s.get("epochs_done"))
    p_max_time = _number(s.get("p_max_mean_epoch_time_s"))
    train_time = _number(s.get("train_time_s"))
    runtime = math.nan
    if status == "complete":
        runtime = stats.virtual_relative_runtime(train_time, p_max_time, epochs)
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
        "energy_kwh": _number(s.get("energy_kwh")),
        "co2_kg": _number(s.get("co2_kg")),
        **surface_metrics(fold_dir),
    }
    return metrics, telemetry, (schedule.summary() if schedule else None)


def _every_epoch_once(telemetry: pd.DataFrame | None, schedule: Any) -> bool:
    """Whether the telemetry holds epochs 0 .. E-1 of the schedule, each exactly once."""
    if telemetry is None or schedule is None:
        return False
    return sorted(telemetry["epoch"].tolist()) == list(range(schedule.epochs))


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
    df = read_csv(path, MANIFEST_COLUMNS, "run manifest", dtype=str, keep_default_na=False)
    df = df[list(MANIFEST_COLUMNS)].copy()
    df["mirroring"] = [_bool(v) for v in df["mirroring"]]
    for column in ("length", "fold", "seed"):
        try:
            df[column] = df[column].astype(int)
        except ValueError as exc:
            raise ValueError(f"{path}: column {column} must hold integers ({exc})") from None
    return df


def collect(
    manifest: pd.DataFrame,
    characteristics: pd.DataFrame | None = None,
    progress: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """``(results, epochs, schedules, cases)`` for every manifest row (see the module docstring)."""
    rows, epochs, schedules, cases = [], [], {}, []
    records = manifest.to_dict("records")
    for i, run in enumerate(progress_of(records, "collect", enabled=progress, unit="run")):
        metrics, telemetry, schedule = collect_run(run["fold_dir"])
        rows.append({"run": i, **run, **metrics})
        if telemetry is not None and len(telemetry):
            factors = {"run": i, **{k: run[k] for k in FACTORS}}
            epochs.append(telemetry.assign(**factors)[[*factors, *telemetry.columns]])
        if schedule is not None:
            schedules[str(i)] = schedule
        if metrics["status"] == "complete":
            factors = {"run": i, **{k: run[k] for k in ("dataset", "mode", "fold")}}
            cases += [{**factors, **c} for c in read_cases(run["fold_dir"])]
    results = pd.DataFrame(rows, columns=["run", *MANIFEST_COLUMNS, *METRIC_COLUMNS])
    epoch_table = pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame(columns=["run", *FACTORS, "epoch"])
    return results, epoch_table, schedules, pd.DataFrame(cases, columns=list(CASE_COLUMNS))


def write_results(
    out_dir: str | Path,
    results: pd.DataFrame,
    epochs: pd.DataFrame,
    schedules: dict[str, Any],
    characteristics: pd.DataFrame | None = None,
    cases: pd.DataFrame | None = None,
) -> list[Path]:
    """Write the results folder (each file atomically; an older ``characteristics.csv`` is removed when
    none is given); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        RESULTS_FILE: _csv(results),
        EPOCHS_FILE: _csv(epochs, "%.6g"),
        SCHEDULES_FILE: json.dumps(schedules, indent=1, sort_keys=True) + "\n",
        CASES_FILE: _csv(cases if cases is not None else pd.DataFrame(columns=list(CASE_COLUMNS))),
    }
    if characteristics is not None:
        files[CHARACTERISTICS_FILE] = _csv(characteristics)
    elif (out / CHARACTERISTICS_FILE).exists():  # an earlier collection's: not these results'
        (out / CHARACTERISTICS_FILE).unlink()
    for name, text in files.items():
        atomic_write_text(out / name, text)
    return [out / name for name in files]


def collect_folder(
    runs: str | Path, out_dir: str | Path, characteristics: str | Path | None = None, progress: bool | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """What ``pgps collect`` does: read the run manifest ``runs`` and every fold folder it lists into the results
    folder ``out_dir`` (with ``surface.csv`` when any run has one and a copy of the ``characteristics`` table);
    returns ``(results, epochs, paths written)``."""
    manifest = read_manifest(runs)
    table = read_characteristics(characteristics) if characteristics else None
    results, epochs, schedules, cases = collect(manifest, progress=progress)
    paths = write_results(out_dir, results, epochs, schedules, table, cases)
    return results, epochs, paths + write_surface(out_dir, manifest)


def write_surface(out_dir: str | Path, manifest: pd.DataFrame) -> list[Path]:
    """``surface.csv``: every run's per-case, per-class Dice/NSD (when any run has ``pgps surface``'s table; an
    older collection's is removed otherwise); returns the paths written."""
    table = collect_surface(manifest, FACTORS)
    path = Path(out_dir) / RESULTS_SURFACE_FILE
    if not len(table):
        path.unlink(missing_ok=True)
        return []
    atomic_write_text(path, _csv(table, "%.6g"))
    return [path]


def _csv(df: pd.DataFrame, float_format: str = "%.10g") -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format=float_format, lineterminator="\n")
    return buf.getvalue()


EPOCH_COLUMNS_USED: tuple[str, ...] = (
    "run", "epoch", "iterations", "iterated_voxels", "fg_voxel_share", "class_presence_share", "pseudo_dice",
)  # fmt: skip
"""The columns of ``epochs.csv`` the figures read (the rest is for people; runs join on ``run``)."""


def load_results(results_dir: str | Path) -> dict[str, Any]:
    """The results folder as frames: ``results``, ``epochs``, ``schedules`` (dict), ``characteristics``, ``cases``.

    Absent files give empty frames (or an empty dict), so that a report renders explicit gaps.
    """
    d = Path(results_dir)
    results_path = d / RESULTS_FILE
    if not results_path.is_file():
        raise ValueError(f"{results_path} does not exist; run `pgps collect` first")
    results = read_csv(results_path, RESULTS_REQUIRED, "results table (pgps collect)")
    check_numbers(results, results_path, RESULTS_NUMBERS)
    try:
        results = with_defaults(results)
    except ValueError as exc:
        raise ValueError(f"{results_path}: {exc}") from None
    if "run" not in results.columns:  # a hand-made or older table without manifest rows: no telemetry to join
        results.insert(0, "run", range(len(results)))
    epochs_path = d / EPOCHS_FILE
    if _nonempty(epochs_path):
        epochs = read_csv(epochs_path, ["run", "epoch"], "epoch table (pgps collect)",
                          usecols=lambda c: c in EPOCH_COLUMNS_USED)  # fmt: skip
    else:
        epochs = pd.DataFrame(columns=list(EPOCH_COLUMNS_USED))
    schedules_path = d / SCHEDULES_FILE
    schedules = read_json(schedules_path) if schedules_path.is_file() else {}
    if not isinstance(schedules, dict):
        raise ValueError(f"{schedules_path}: not a schedules file of pgps collect (a JSON object by run)")
    char_path = d / CHARACTERISTICS_FILE
    characteristics = read_characteristics(char_path) if _nonempty(char_path) else pd.DataFrame(columns=["dataset"])
    cases_path = d / CASES_FILE
    cases = (
        read_csv(cases_path, (), "per-case table (pgps collect)", dtype={"case": str, "label": str})
        if _nonempty(cases_path)
        else None
    )
    cases = cases if cases is not None else pd.DataFrame(columns=list(CASE_COLUMNS))
    return {
        "results": results,
        "epochs": epochs,
        "schedules": schedules,
        "characteristics": characteristics,
        "cases": cases,
    }


RESULTS_NUMBERS: tuple[str, ...] = tuple(
    c for c in METRIC_COLUMNS if c not in ("status", "dice_per_class", "patch_size_max", "nsd_per_class")
)
"""The columns of a results table that hold numbers."""

RESULTS_REQUIRED: tuple[str, ...] = ("dataset", "mode", "fold", "dice")
"""Columns every results table must have (the rest take :data:`DEFAULTS` or stay missing)."""


def read_characteristics(path: str | Path) -> pd.DataFrame:
    """A task characteristics table (``pgps characteristics``): one row per dataset with the four measures."""

    df = read_csv(path, ["dataset", *MEASURES], "task characteristics table (pgps characteristics)")
    repeated = sorted(set(df["dataset"][df["dataset"].duplicated()].astype(str)))
    if repeated:
        raise ValueError(f"{path}: dataset(s) {', '.join(repeated)} appear more than once")
    return df


def write_characteristics(
    datasets: Sequence[tuple[str, str | Path]],
    out: str | Path,
    plans: str = "nnUNetPlans",
    configuration: str = "3d_fullres",
    progress: bool | None = None,
) -> pd.DataFrame:
    """What ``pgps characteristics`` does: the task characteristics of each ``(name, preprocessed folder)`` into the
    CSV ``out`` (:data:`~pgps.report.characteristics.COLUMNS`); returns the table. Names must be unique."""
    names = [name for name, _ in datasets]
    if len(set(names)) < len(names):
        raise ValueError(f"dataset names must be unique, got {names}")
    rows = [task_characteristics(folder, plans, configuration, dataset=name, progress=progress)
            for name, folder in datasets]  # fmt: skip
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, _csv(table))
    return table


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
                try:
                    df[column] = df[column].astype(int)
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"column {column} must hold integers ({exc})") from None
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
    """Add ``relative_dice``, ``relative_runtime``, ``relative_flops`` and ``relative_co2`` per run (CPS of the
    same dataset, backbone, mirroring, length, fold and seed; the columns a frame has)."""
    df = results.copy()
    key = _cps_key(df)
    cps_rows = df[df["mode"] == "cps"].drop_duplicates(key)
    index = pd.MultiIndex.from_frame(df[key]) if len(key) > 1 else pd.Index(df[key[0]])
    cps = cps_rows.set_index(key).reindex(index).set_index(df.index)  # NaN where there is no CPS run

    def column(frame: pd.DataFrame, name: str) -> pd.Series:  # NaN where a (hand-made) frame lacks the column
        return frame[name] if name in frame.columns else pd.Series(math.nan, index=frame.index)

    df["relative_dice"] = df["dice"] / cps["dice"].where(cps["dice"] > 0)  # undefined (NaN) when CPS scored 0
    if "relative_runtime" not in df.columns:  # a hand-made frame: computed as collect_run does
        inputs = zip(*(column(df, c) for c in ("train_time_s", "p_max_mean_epoch_time_s", "epochs")), strict=True)
        df["relative_runtime"] = [stats.virtual_relative_runtime(*map(float, values)) for values in inputs]

    def finished_voxels(frame: pd.DataFrame) -> pd.Series:  # an unfinished run's voxel count is no total
        voxels = column(frame, "iterated_voxels")
        return voxels.where(frame["status"] == "complete") if "status" in frame.columns else voxels

    df["relative_flops"] = finished_voxels(df) / finished_voxels(cps)
    df["relative_co2"] = column(df, "co2_kg") / column(cps, "co2_kg").where(column(cps, "co2_kg") > 0)
    df["cps_dice"] = cps["dice"]
    return df


GROUP: tuple[str, ...] = ("dataset", "backbone", "mode", "sampler", "mirroring", "length", "seed")
"""A cell of a results table: every factor but the fold."""


def aggregate(results: pd.DataFrame, by: Sequence[str] = GROUP) -> pd.DataFrame:
    """One row per group of folds (default :data:`GROUP`), from runs of :func:`compare_to_cps`:

    ``runs`` (manifest rows), ``n`` (folds with a Dice), ``dice`` (mean over folds) and
    ``dice_sd`` (population SD over folds), ``paired_dice`` and ``paired_cps_dice`` (the means over
    the folds both the group and CPS have) and their ratio ``relative_dice``
    (:func:`pgps.report.stats.relative`), ``relative_runtime`` (median), ``relative_flops`` and
    ``relative_co2`` (means), ``train_time_s``, ``co2_kg`` and ``iterated_voxels`` (means over folds), and
    ``folds`` (the Dice per fold, ``{fold: dice}``).
    """
    df = compare_to_cps(with_defaults(results))
    by = [c for c in by if c in df.columns]
    rows = []
    for key, g in df.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        dice = g["dice"].dropna()
        both = g.dropna(subset=["dice", "cps_dice"])
        paired, paired_cps = (both[c].mean() if len(both) else math.nan for c in ("dice", "cps_dice"))
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "runs": len(g),
                "n": len(dice),
                "dice": dice.mean() if len(dice) else math.nan,
                "dice_sd": float(np.std(dice)) if len(dice) else math.nan,
                "paired_dice": paired,
                "paired_cps_dice": paired_cps,
                "relative_dice": stats.relative(paired, paired_cps),
                "relative_runtime": g["relative_runtime"].median(),
                "relative_flops": g["relative_flops"].mean(),
                "relative_co2": g["relative_co2"].mean(),
                **{c: g[c].mean() if c in g else math.nan for c in ("train_time_s", "co2_kg", "iterated_voxels")},
                "folds": {int(f): float(v) for f, v in zip(g["fold"], g["dice"], strict=True) if math.isfinite(v)}
                if "fold" in g
                else {},
            }
        )
    columns = [*by, "runs", "n", "dice", "dice_sd", "paired_dice", "paired_cps_dice", "relative_dice"]
    columns += ["relative_runtime", "relative_flops", "relative_co2", "train_time_s", "co2_kg", "iterated_voxels"]
    columns += ["folds"]
    return pd.DataFrame(rows, columns=columns)
