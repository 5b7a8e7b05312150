"""Dice and Normalized Surface Dice per case and class, from segmentation files (``pgps surface``).

Two sources of (prediction, reference) pairs:

- a trained fold folder: the cases nnU-Net's final validation lists in ``validation/summary.json``
  (its prediction and reference files; files moved with the fold folder are looked up next to it);
- two folders of segmentations with the same case names (e.g. ``pgps predict`` output and ``labelsTs``).

Files are read with the reader nnU-Net uses for the dataset (``dataset.json``), so spacings are in
nnU-Net's array order. Metrics are :mod:`pgps.metrics` (one implementation for every caller): Dice
and NSD at ``tolerance_mm`` for each foreground label; ``nan`` when the class is absent from both
files. The table is small, so the expensive step (reading volumes, distance transforms) runs once
next to the training and ``pgps collect`` only reads it (``validation/pgps_surface.csv``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgps.io import atomic_write_text, csv_text
from pgps.metrics import dice_per_class
from pgps.metrics.surface import nsd_per_class
from pgps.progress import progress as progress_of

SURFACE_FILE = "pgps_surface.csv"
COLUMNS = ("case", "class", "dice", "nsd", "tolerance_mm", "reference_voxels", "prediction_voxels")
DEFAULT_TOLERANCE_MM = 2.0
"""NSD tolerance when none is given: 2 mm for every organ, as in the CDL-UNet authors' FLARE evaluation script
(``evaluation/FLARE_DSCNSD_Eval.py`` of github.com/iam-nacl/FLARE2024)."""


def _reader(dataset_json: dict, example: str):
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    return determine_reader_writer_from_dataset_json(dataset_json, example)()


def foreground_labels(dataset_json: dict) -> list[int]:
    labels = dataset_json["labels"]
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise ValueError(
            "surface metrics need label maps; region-based datasets (overlapping regions) are not supported"
        )
    return sorted(int(v) for k, v in labels.items() if int(v) != 0 and k != "ignore")


def case_rows(
    case: str, prediction: str, reference: str, reader: Any, classes: Sequence[int], tolerance_mm: float
) -> list[dict[str, Any]]:
    """One row per class: Dice, NSD at ``tolerance_mm`` and the voxel counts of one case."""
    pred, _ = reader.read_seg(prediction)
    ref, properties = reader.read_seg(reference)
    pred, ref = np.asarray(pred[0]).astype(np.int64), np.asarray(ref[0]).astype(np.int64)
    if pred.shape != ref.shape:
        raise ValueError(f"case {case}: {prediction} has shape {pred.shape}, {reference} has {ref.shape}")
    spacing = [float(s) for s in properties["spacing"]][-pred.ndim :]
    dice = dice_per_class(pred, ref, classes)
    nsd = nsd_per_class(pred, ref, tolerance_mm, spacing, classes)
    return [
        {"case": case, "class": c, "dice": dice[c], "nsd": nsd[c], "tolerance_mm": tolerance_mm,
         "reference_voxels": int((ref == c).sum()), "prediction_voxels": int((pred == c).sum())}
        for c in classes
    ]  # fmt: skip


def surface_rows(
    pairs: Iterable[tuple[str, str, str]], dataset_json: dict, tolerance_mm: float, progress: bool | None = None
) -> list[dict[str, Any]]:
    """Rows of :data:`COLUMNS` for ``(case, prediction file, reference file)`` pairs."""
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"the NSD tolerance must be a number of mm >= 0, got {tolerance_mm}")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no cases to evaluate")
    classes = foreground_labels(dataset_json)
    reader = _reader(dataset_json, pairs[0][1])
    rows = []
    for case, prediction, reference in progress_of(pairs, "surface", enabled=progress, unit="case"):
        rows += case_rows(case, prediction, reference, reader, classes, tolerance_mm)
    return rows


def fold_pairs(fold_dir: str | os.PathLike) -> tuple[list[tuple[str, str, str]], dict]:
    """The validation cases of a trained fold folder and its ``dataset.json``."""
    fold = Path(fold_dir)
    summary = fold / "validation" / "summary.json"
    meta = fold.parent / "dataset.json"
    if not summary.is_file() or not meta.is_file():
        raise ValueError(f"{fold}: no validation/summary.json or ../dataset.json (run nnU-Net's final validation)")
    dataset_json = json.loads(meta.read_text())
    pairs = []
    for entry in json.loads(summary.read_text())["metric_per_case"]:
        prediction = Path(entry["prediction_file"])
        if not prediction.is_file():
            prediction = fold / "validation" / prediction.name
        reference = Path(entry["reference_file"])
        case = prediction.name[: -len(dataset_json["file_ending"])]
        if not prediction.is_file() or not reference.is_file():
            raise ValueError(f"{fold}: case {case}: {prediction} or {reference} does not exist")
        pairs.append((case, str(prediction), str(reference)))
    return pairs, dataset_json


def folder_pairs(predictions: str | os.PathLike, references: str | os.PathLike, dataset_json: dict) -> list:
    """``(case, prediction, reference)`` for every reference file, each with its prediction."""
    ending = dataset_json["file_ending"]
    refs = sorted(f for f in Path(references).iterdir() if f.name.endswith(ending))
    if not refs:
        raise ValueError(f"{references}: no files ending in {ending}")
    missing = [f.name for f in refs if not (Path(predictions) / f.name).is_file()]
    if missing:
        raise ValueError(f"{predictions}: no prediction for {len(missing)} case(s): {', '.join(missing[:5])}")
    return [(f.name[: -len(ending)], str(Path(predictions) / f.name), str(f)) for f in refs]


def surface_csv(rows: Sequence[dict[str, Any]]) -> str:
    return csv_text(rows, COLUMNS, ".6f")


def write_fold_surface(fold_dir: str | os.PathLike, tolerance_mm: float, progress: bool | None = None) -> Path:
    """Compute the table of a fold folder's validation and write ``validation/pgps_surface.csv`` (atomically)."""
    pairs, dataset_json = fold_pairs(fold_dir)
    out = Path(fold_dir) / "validation" / SURFACE_FILE
    atomic_write_text(out, surface_csv(surface_rows(pairs, dataset_json, tolerance_mm, progress)))
    return out
