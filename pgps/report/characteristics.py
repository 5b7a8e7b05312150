"""Task characteristics of a dataset (article Section 3.3), from nnU-Net's preprocessed folder.

The article correlates the relative Dice gain of a curriculum with four measures per dataset;
here each is defined precisely:

- ``num_classes``: foreground classes in ``dataset.json`` (labels other than background and
  ``ignore``; a region counts as one class). Counting background as well would add 1 to every
  dataset and leave the Spearman correlations unchanged.
- ``training_cases``: training set size, ``numTraining`` of ``dataset.json`` (else the number of
  preprocessed cases).
- ``patch_to_volume_coverage``: numel(P_max) / numel(median volume), with P_max the
  configuration's planned patch size and the median volume shape the plans'
  ``median_image_size_in_voxels`` (after nnU-Net's cropping and resampling to the configuration's
  spacing). Above 1 where the patch is larger than the median volume on some axis.
- ``smallest_class_frequency``: class imbalance as the voxel share of the least frequent
  foreground class, pooled over all preprocessed training cases: voxels of the class / all
  voxels (nnU-Net's outside-the-mask voxels, stored as -1, count as background). A class that
  never occurs has frequency 0. ``foreground_frequency`` is the same share for all foreground.

Reads only JSON and the preprocessed segmentations (blosc2 ``*_seg.b2nd`` of nnU-Net >= 2.6, or
``*.npz``/``*_seg.npy`` of older versions), in slabs, so a large volume never needs all its
voxels as 64-bit integers at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pgps.io import read_json
from pgps.plans import resolve_configuration
from pgps.progress import progress as progress_of
from pgps.sizes import numel

COLUMNS: tuple[str, ...] = (
    "dataset", "num_classes", "training_cases", "patch_to_volume_coverage", "smallest_class_frequency",
    "smallest_class", "foreground_frequency", "patch_size_max", "median_shape", "cases_counted", "plans",
    "configuration",
)  # fmt: skip
"""Columns of ``characteristics.csv``."""

MEASURES: dict[str, str] = {
    "num_classes": "number of classes",
    "training_cases": "training set size",
    "patch_to_volume_coverage": "patch-to-volume coverage",
    "smallest_class_frequency": "smallest-class frequency",
}
"""The four characteristics the article correlates with the relative Dice gain (Section 3.3)."""

SLAB_VOXELS = 1 << 24
"""Voxels counted per slab of a segmentation (bounds the memory of the counting)."""


def foreground_classes(dataset_json: dict[str, Any]) -> dict[str, list[int]]:
    """Foreground class name -> the label values it covers (a region covers several)."""
    classes = {}
    for name, value in dataset_json["labels"].items():
        values = [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]
        if name in ("background", "ignore") or values == [0]:
            continue
        classes[name] = values
    return classes


def _segmentations(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*_seg.b2nd")) or sorted(folder.glob("*_seg.npy"))
    return files or sorted(folder.glob("*.npz"))


def _slabs(path: Path) -> Iterator[np.ndarray]:
    """The segmentation of one case, slab by slab along its first spatial axis."""
    if path.suffix == ".b2nd":
        import blosc2

        array = blosc2.open(str(path), mode="r")
    elif path.suffix == ".npz":
        array = np.load(path)["seg"]
    else:
        array = np.load(path, mmap_mode="r")
    shape = array.shape
    per_slice = max(1, math.prod(shape) // max(1, shape[1]))
    step = max(1, SLAB_VOXELS // per_slice)
    for start in range(0, shape[1], step):
        yield np.asarray(array[:, start : start + step])


def label_counts(segmentations: list[Path], progress: bool | None = False, desc: str = "cases") -> dict[int, int]:
    """Voxels per label value over all cases (-1, nnU-Net's outside-the-mask marker, as -1); ``progress``: see
    :mod:`pgps.progress`."""
    total: dict[int, int] = {}
    for path in progress_of(segmentations, desc, enabled=progress, unit="case"):
        for slab in _slabs(path):
            values, counts = np.unique(slab, return_counts=True)
            for v, c in zip(values.tolist(), counts.tolist(), strict=True):
                total[int(v)] = total.get(int(v), 0) + int(c)
    return total


def task_characteristics(
    preprocessed_dir: str | Path,
    plans: str = "nnUNetPlans",
    configuration: str = "3d_fullres",
    dataset: str | None = None,
    progress: bool | None = False,
) -> dict[str, Any]:
    """One row of :data:`COLUMNS` for the nnU-Net preprocessed dataset folder ``preprocessed_dir``."""

    folder = Path(preprocessed_dir)
    if not (folder / "dataset.json").is_file():
        raise ValueError(f"{folder}: no dataset.json (give nnU-Net's preprocessed folder of the dataset)")
    dataset_json = read_json(folder / "dataset.json")
    plans_path = folder / f"{plans}.json"
    if not plans_path.is_file():
        raise ValueError(f"{plans_path} does not exist (plans identifier {plans!r})")
    plans_dict = read_json(plans_path)
    try:
        conf = resolve_configuration(plans_dict["configurations"], configuration)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{plans_path}: {exc}") from None
    patch, median = [int(v) for v in conf["patch_size"]], [float(v) for v in conf["median_image_size_in_voxels"]]
    if len(patch) != 3 or len(median) != 3:
        raise ValueError(
            f"{plans_path}: configuration {configuration!r} is not 3D (patch_size {patch}); the task characteristics "
            "are defined for the 3D configuration the curriculum trains (e.g. 3d_fullres)"
        )
    classes = foreground_classes(dataset_json)
    data_folder = folder / conf.get("data_identifier", f"{plans}_{configuration}")
    segmentations = _segmentations(data_folder)
    if not segmentations:
        raise ValueError(
            f"{data_folder}: no preprocessed segmentations (*_seg.b2nd, *_seg.npy or *.npz); run nnU-Net's "
            f"preprocessing of configuration {configuration!r} first"
        )
    counts = label_counts(segmentations, progress, f"characteristics {dataset or Path(preprocessed_dir).name}")
    voxels = sum(counts.values())
    shares = {name: sum(counts.get(v, 0) for v in values) / voxels for name, values in classes.items()}
    smallest_name = min(shares, key=shares.get) if shares else ""
    smallest = shares[smallest_name] if shares else math.nan
    labels = {v for values in classes.values() for v in values}
    foreground = sum(counts.get(v, 0) for v in labels) / voxels
    return {
        "dataset": dataset or dataset_json.get("name", folder.name),
        "num_classes": len(classes),
        "training_cases": int(dataset_json.get("numTraining", len(segmentations))),
        "patch_to_volume_coverage": numel(patch) / math.prod(median),
        "smallest_class_frequency": smallest,
        "smallest_class": smallest_name,
        "foreground_frequency": foreground,
        "patch_size_max": "x".join(map(str, patch)),
        "median_shape": "x".join(f"{v:g}" for v in median),
        "cases_counted": len(segmentations),
        "plans": plans,
        "configuration": configuration,
    }
