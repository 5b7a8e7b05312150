"""Patch sizes, steps and their validation.

A size is a tuple of three positive ints, one per spatial axis, in the axis order
of the nnU-Net plans (the order the network sees). All functions here are pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

Size = tuple[int, int, int]

AXES = 3


def numel(size: Sequence[int]) -> int:
    """Number of voxels of a patch of ``size``."""
    return math.prod(int(s) for s in size)


def as_size(name: str, value: Sequence[int]) -> Size:
    """Return ``value`` as a 3-tuple of positive ints, or raise ``ValueError`` naming ``name``."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of {AXES} positive integers, got {value!r}")
    try:
        values = list(value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of {AXES} positive integers, got {value!r}") from None
    if len(values) != AXES:
        raise ValueError(f"{name} must have {AXES} axes (a 3D size), got {len(values)}: {tuple(values)!r}")
    out = []
    for axis, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, Integral):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise ValueError(f"{name} axis {axis} must be an integer, got {v!r}")
        if int(v) <= 0:
            raise ValueError(f"{name} axis {axis} must be positive, got {int(v)}")
        out.append(int(v))
    return (out[0], out[1], out[2])


def check_divisible(name: str, size: Sequence[int], steps: Sequence[int], step_name: str = "its step") -> None:
    """Raise ``ValueError`` naming the first axis of ``size`` that is not a multiple of its step, and the nearest
    valid sizes there (``step_name`` says what the step is, e.g. a network's total stride)."""
    for axis, (s, step) in enumerate(zip(size, steps, strict=True)):
        if int(s) % int(step):
            nearest = " or ".join(map(str, nearest_multiples(int(s), int(step))))
            raise ValueError(
                f"{name} axis {axis} (= {s}) is not divisible by {step_name} {step}; nearest valid sizes: {nearest}"
            )


def nearest_multiples(value: int, step: int) -> list[int]:
    """The multiples of ``step`` next to ``value`` (below and above; one if ``value`` is below ``step``)."""
    below = value // step * step
    return [v for v in (below, below + step) if v >= step]


def check_not_larger(small_name: str, small: Size, large_name: str, large: Size) -> None:
    """Raise ``ValueError`` naming the first axis on which ``small`` exceeds ``large``."""
    for axis, (a, b) in enumerate(zip(small, large, strict=True)):
        if a > b:
            raise ValueError(f"{small_name} axis {axis} (= {a}) is larger than {large_name} axis {axis} (= {b})")


def steps_from_strides(strides: Sequence[Sequence[int]]) -> Size:
    """Per-axis step ``2**k_a`` from a U-Net's per-stage strides (or pool kernel sizes).

    ``k_a`` counts the entries equal to 2 on axis ``a``: one stride-2 downsampling each.
    A stage given as a single int applies to every axis (nnU-Net allows ``1`` for the first stage).
    """
    counts = [0] * AXES
    for stage, stride in enumerate(strides):
        per_axis = [stride] * AXES if isinstance(stride, Integral) else list(stride)
        if len(per_axis) != AXES:
            raise ValueError(f"strides stage {stage} must have {AXES} axes, got {per_axis!r}")
        for axis, s in enumerate(per_axis):
            if int(s) not in (1, 2):
                raise ValueError(f"strides stage {stage} axis {axis} is {s}; only strides 1 and 2 are supported")
            counts[axis] += int(s) == 2
    return (2 ** counts[0], 2 ** counts[1], 2 ** counts[2])


def fmt_size(size: Sequence[int]) -> str:
    """``(64, 32, 32)`` -> ``'64x32x32'``."""
    return "x".join(str(int(s)) for s in size)
