"""Overlap and surface metrics between label maps: Dice per class and Normalized Surface Dice (NSD).

Pure numpy; :func:`normalized_surface_dice` imports ``scipy.ndimage`` when it runs (``import pgps``
does not). One implementation for every caller: ``pgps difficulty`` (label agreement),
``pgps predict``'s benchmark, ``pgps collect`` (NSD columns) and the AMOS experiments.

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
from collections.abc import Iterable, Sequence

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


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = (float(spacing),) * ndim if np.isscalar(spacing) else tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm per voxel), got {spacing!r}")
    return values


def _crop_with_margin(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The masks cut to the bounding box of their union plus one voxel (zero-padded at the image border)."""
    union = np.logical_or.reduce(masks)
    box = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        hit = np.flatnonzero(union.any(axis=other))
        box.append((int(hit[0]), int(hit[-1]) + 1))
    out = []
    for m in masks:
        cut = m[tuple(slice(lo, hi) for lo, hi in box)]
        out.append(np.pad(cut, 1))
    return out


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask: voxels of the mask with a 6-neighbour (4 in 2D) outside it.

    The image border counts as outside (``scipy.ndimage.binary_erosion`` with ``border_value=0``).
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: float | Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from every boundary voxel of mask ``a`` to the boundary of ``b``, and from ``b``'s to ``a``'s.

    Empty masks give empty arrays; a boundary facing an empty mask gets ``inf``.
    """
    from scipy import ndimage

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    sampling = _spacing(spacing, a.ndim)
    if not a.any() and not b.any():
        return np.empty(0), np.empty(0)
    a, b = _crop_with_margin([a, b])
    edges_a, edges_b = surface_voxels(a), surface_voxels(b)

    def towards(edges_from: np.ndarray, edges_to: np.ndarray) -> np.ndarray:
        if not edges_from.any():
            return np.empty(0)
        if not edges_to.any():
            return np.full(int(edges_from.sum()), np.inf)
        return ndimage.distance_transform_edt(~edges_to, sampling=sampling)[edges_from]

    return towards(edges_a, edges_b), towards(edges_b, edges_a)


def normalized_surface_dice(
    a: np.ndarray, b: np.ndarray, tolerance_mm: float, spacing: float | Sequence[float] | None = None
) -> float:
    """NSD of two boolean masks at ``tolerance_mm``: boundary voxels within tolerance over all boundary voxels.

    ``(|{d_ab <= tau}| + |{d_ba <= tau}|) / (|∂A| + |∂B|)`` with the distances of
    :func:`surface_distances`; ``nan`` when both masks are empty, 0 when only one is.
    """
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm!r}")
    d_ab, d_ba = surface_distances(a, b, spacing)
    total = len(d_ab) + len(d_ba)
    if total == 0:
        return math.nan
    return float((np.count_nonzero(d_ab <= tolerance_mm) + np.count_nonzero(d_ba <= tolerance_mm)) / total)


def nsd_per_class(
    prediction: np.ndarray,
    reference: np.ndarray,
    tolerance_mm: float | dict[int, float],
    spacing: float | Sequence[float] | None = None,
    classes: Iterable[int] | None = None,
) -> dict[int, float]:
    """``{class: NSD}`` between two label maps (default classes: those present in either map).

    ``tolerance_mm`` is one tolerance for every class or a ``{class: tolerance}`` mapping.
    """
    prediction, reference = _check_pair(prediction, reference)
    classes = present_classes(prediction, reference) if classes is None else [int(c) for c in classes]
    out = {}
    for c in classes:
        tau = tolerance_mm[c] if isinstance(tolerance_mm, dict) else tolerance_mm
        out[c] = normalized_surface_dice(prediction == c, reference == c, float(tau), spacing)
    return out
