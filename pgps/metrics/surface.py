"""Normalized Surface Dice (NSD) between label maps, with the conventions of :mod:`pgps.metrics`.

Outside the numpy-only core: it needs ``scipy.ndimage`` (``pip install "pgps[report]"``; the nnU-Net stack
has it too). The one NSD of pgps: ``pgps surface``, ``pgps collect``'s NSD columns and the AMOS22 scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from pgps.metrics import _check_pair, present_classes


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
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: float | Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from every boundary voxel of mask ``a`` to the boundary of ``b``, and from ``b``'s to ``a``'s.

    Empty masks give empty arrays; a boundary facing an empty mask gets ``inf``.
    """
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
