"""Overlap between label maps: Dice per class (pure numpy, in the core). The Normalized Surface Dice (NSD)
needs ``scipy.ndimage`` and lives in :mod:`pgps.metrics.surface` (``pgps[report]``). One implementation for every
caller: ``pgps difficulty`` (label agreement), ``pgps predict``'s benchmark, ``pgps collect`` (NSD columns)
and the AMOS experiments.

Conventions (stated once, used everywhere):

- A *label map* is an integer array; 0 is background, every other value a class.
- :func:`dice_per_class` gives ``2|A∩B| / (|A| + |B|)`` for each class; a class absent from both
  maps has no Dice (``nan``), as in nnU-Net's ``summary.json``.
- :func:`label_dice` averages the classes present in *either* map (classes absent from both are
  left out); two maps without any foreground agree perfectly (1.0).
- NSD (Nikolov et al. 2021, arXiv:2111.05408) is MONAI's ``SurfaceDiceMetric`` with
  ``use_subvoxels=False``: a class's boundary is its voxels with a background 6-neighbour (the
  mask minus its binary erosion, voxels on the image border included); NSD at tolerance
  ``tau`` mm is the share of boundary voxels of both maps whose Euclidean distance (in mm, from
  the voxel spacing) to the other map's boundary is at most ``tau``. Absent from both: ``nan``;
  present in one only: 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps must have the same shape, got {a.shape} and {b.shape}")
    for name, x in (("first", a), ("second", b)):
        if not (np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
            raise ValueError(f"the {name} label map must hold integers, got dtype {x.dtype}")
    return a, b


def present_classes(*maps: np.ndarray) -> list[int]:
    """Sorted foreground classes (values other than 0) that occur in any of ``maps``."""
    found: set[int] = set()
    for m in maps:
        found.update(int(v) for v in np.unique(np.asarray(m)))
    found.discard(0)
    return sorted(found)


def dice_per_class(a: np.ndarray, b: np.ndarray, classes: Iterable[int] | None = None) -> dict[int, float]:
    """``{class: 2|A_c ∩ B_c| / (|A_c| + |B_c|)}`` for ``classes`` (default: those present in either map).

    A class absent from both maps gets ``nan``. Counts use one pass of ``bincount`` over the pair.
    """
    a, b = _check_pair(a, b)
    classes = present_classes(a, b) if classes is None else [int(c) for c in classes]
    if not classes:
        return {}
    top = max(max(classes), int(a.max(initial=0)), int(b.max(initial=0))) + 1
    if min(int(a.min(initial=0)), int(b.min(initial=0))) < 0:
        raise ValueError("label maps must not hold negative values")
    a64, b64 = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    size_a = np.bincount(a64, minlength=top)
    size_b = np.bincount(b64, minlength=top)
    both = np.bincount(a64[a64 == b64], minlength=top)
    out = {}
    for c in classes:
        denominator = int(size_a[c] + size_b[c]) if c < top else 0
        out[c] = 2.0 * int(both[c]) / denominator if denominator else math.nan
    return out


def label_dice(a: np.ndarray, b: np.ndarray, classes: Iterable[int] | None = None, absent: str = "skip") -> float:
    """Multi-class Dice between two label maps: the mean of :func:`dice_per_class`.

    ``classes``: the classes to average (default: the foreground classes present in either map).
    ``absent``: what a listed class absent from *both* maps contributes: ``"skip"`` (left out of
    the mean; the default) or ``"one"`` (counts as 1.0, as the CDL-UNet authors' scoring script
    does for its fixed list of 14 labels, background included). When no class is left to average
    (both maps all background), the maps agree: 1.0.
    """
    if absent not in ("skip", "one"):
        raise ValueError(f"absent must be 'skip' or 'one', got {absent!r}")
    values = list(dice_per_class(a, b, classes).values())
    values = [v for v in values if not math.isnan(v)] if absent == "skip" else [1.0 if math.isnan(v) else v
                                                                                for v in values]  # fmt: skip
    return float(np.mean(values)) if values else 1.0


# -- Normalized Surface Dice -------------------------------------------------------------------------
