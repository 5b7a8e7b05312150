"""Cost model: iterated voxels (the article's FLOP proxy) and batch statistics of a schedule.

Iterated voxels are the sum over training iterations of ``b * numel(P)`` (per input channel).
Relative FLOPs are a schedule's iterated voxels over those of CPS trained for the same epochs
and iterations per epoch, unless another reference is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from pgps.sizes import Size, numel


class _Stage(Protocol):
    patch_size: Size
    batch_size: int
    epochs: int

    @property
    def tensor_voxels(self) -> int: ...


class Schedule(Protocol):
    """What the cost model reads of a :class:`pgps.Schedule` (which imports this module for its summary)."""

    mode: str
    patch_size_max: Size
    batch_size_base: int
    stages: Sequence[_Stage]
    iterations_per_epoch: int

    @property
    def epochs(self) -> int: ...

    @property
    def num_stages(self) -> int: ...

    @property
    def total_iterations(self) -> int: ...

    def rpss_draws(self, epoch: int) -> np.ndarray: ...


def iterations_per_stage(schedule: Schedule) -> list[int]:
    """Training iterations spent in each stage (RPSS: realised with the schedule's seed)."""
    if schedule.mode == "rpss":
        counts = np.zeros(schedule.num_stages, dtype=np.int64)
        for epoch in range(schedule.epochs):
            counts += np.bincount(schedule.rpss_draws(epoch), minlength=schedule.num_stages)
        return [int(c) for c in counts]
    return [s.epochs * schedule.iterations_per_epoch for s in schedule.stages]


def iterated_voxels(schedule: Schedule) -> int:
    """Sum of ``b * numel(P)`` over all training iterations."""
    return sum(n * s.tensor_voxels for n, s in zip(iterations_per_stage(schedule), schedule.stages, strict=True))


def cps_voxels(schedule: Schedule) -> int:
    """Iterated voxels of CPS with the same ``P_max``, ``b_base``, epochs and iterations per epoch: every iteration
    trains ``b_base`` patches of ``P_max``."""
    return schedule.total_iterations * schedule.batch_size_base * numel(schedule.patch_size_max)


def relative_voxels(schedule: Schedule, reference: Schedule | None = None) -> float:
    """Iterated voxels relative to ``reference`` (default: CPS of the same length), the "relative FLOPs"."""
    return iterated_voxels(schedule) / (cps_voxels(schedule) if reference is None else iterated_voxels(reference))


def mean_batch_size(schedule: Schedule) -> float:
    """Batch size averaged over training iterations."""
    its = iterations_per_stage(schedule)
    return sum(n * s.batch_size for n, s in zip(its, schedule.stages, strict=True)) / sum(its)


def mean_tensor_voxels(schedule: Schedule) -> float:
    """Input tensor voxels ``b * numel(P)`` averaged over training iterations."""
    return iterated_voxels(schedule) / sum(iterations_per_stage(schedule))


def mean_patch_voxels(schedule: Schedule) -> float:
    """Patch voxels ``numel(P)`` averaged over training iterations."""
    its = iterations_per_stage(schedule)
    return sum(n * numel(s.patch_size) for n, s in zip(its, schedule.stages, strict=True)) / sum(its)
