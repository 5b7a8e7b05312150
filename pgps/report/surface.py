"""Normalized Surface Dice in the results folder: read each run's ``validation/pgps_surface.csv``.

``pgps surface`` (:mod:`pgps.nnunet.inference.surface`) writes that table next to nnU-Net's validation, one row
per case and class (Dice, NSD at a tolerance in mm). ``pgps collect`` reads it for every run: the
run's mean NSD and NSD per class go into ``results.csv`` (:data:`SURFACE_METRICS`) and every row,
keyed by run and factors, into ``surface.csv``. A run without the table gets missing values.

Averages follow nnU-Net's ``summary.json``: per class the mean over the cases where the class is
present in prediction or reference (others have no NSD), then the mean over the classes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

FOLD_FILE = "pgps_surface.csv"
RESULTS_SURFACE_FILE = "surface.csv"
SURFACE_METRICS: tuple[str, ...] = ("nsd", "nsd_per_class", "nsd_tolerance_mm")
"""Columns :func:`surface_metrics` adds to a run's metrics."""


def read_surface(fold_dir: str | Path) -> pd.DataFrame | None:
    """A fold folder's ``validation/pgps_surface.csv``, or None."""
    path = Path(fold_dir) / "validation" / FOLD_FILE
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path)


def surface_metrics(fold_dir: str | Path) -> dict[str, Any]:
    """``nsd`` (mean over classes of the per-class means), ``nsd_per_class`` (JSON) and the tolerance."""
    table = read_surface(fold_dir)
    if table is None or not len(table):
        return {"nsd": math.nan, "nsd_per_class": "{}", "nsd_tolerance_mm": math.nan}
    per_class = table.groupby("class")["nsd"].mean()
    tolerances = table["tolerance_mm"].unique()
    return {
        "nsd": float(per_class.mean()) if per_class.notna().any() else math.nan,
        "nsd_per_class": json.dumps({str(k): float(v) for k, v in per_class.items() if pd.notna(v)}),
        "nsd_tolerance_mm": float(tolerances[0]) if len(tolerances) == 1 else math.nan,
    }


def collect_surface(manifest: pd.DataFrame, factors: tuple[str, ...]) -> pd.DataFrame:
    """Every run's per-case, per-class table with the run's number and factors in front."""
    frames = []
    for i, run in enumerate(manifest.to_dict("records")):
        table = read_surface(run["fold_dir"])
        if table is not None and len(table):
            keys = {"run": i, **{k: run[k] for k in factors}}
            frames.append(table.assign(**keys)[[*keys, *table.columns]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
