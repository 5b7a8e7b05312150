"""Pacing: how many epochs each stage gets, and which stage an epoch belongs to.

The article's step-wise linear pacing function f(t): every stage gets ``floor(E / k)``
epochs for ``k`` stages and ``E`` epochs, and the last stage (``P_max``) also takes the
remainder. Training-length experiments keep the epochs and scale the iterations per epoch.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence

ITERATIONS_PER_EPOCH = 250
"""nnU-Net's default number of training iterations per epoch."""

EPOCHS = 1000
"""nnU-Net's default number of epochs."""


def epochs_per_stage(num_stages: int, epochs: int = EPOCHS) -> list[int]:
    """``floor(E/k)`` epochs per stage, the remainder added to the last stage.

    >>> epochs_per_stage(9, 1000)
    [111, 111, 111, 111, 111, 111, 111, 111, 112]
    """
    if num_stages < 1:
        raise ValueError(f"a schedule needs at least one stage, got {num_stages}")
    if epochs < 1:
        raise ValueError(f"epochs must be positive, got {epochs}")
    share, remainder = divmod(epochs, num_stages)
    return [share] * (num_stages - 1) + [share + remainder]


def stage_index_of_epoch(stage_epochs: Sequence[int], epoch: int) -> int:
    """Index of the stage that trains ``epoch`` (0-based) given each stage's epoch count.

    Stages with zero epochs (more stages than epochs) are skipped.
    """
    total = sum(stage_epochs)
    if not 0 <= epoch < total:
        raise ValueError(f"epoch {epoch} is outside the schedule's {total} epochs (0..{total - 1})")
    ends = list(itertools.accumulate(stage_epochs))
    return bisect.bisect_right(ends, epoch)


def iterations_per_epoch(training_length: float = 1.0, base: int = ITERATIONS_PER_EPOCH) -> int:
    """Iterations per epoch for a training length given as a fraction of ``base``.

    Training-length experiments keep the epochs and scale the iterations per epoch:
    ``max(1, floor(base * training_length))`` (1% of 250 gives 2).
    """
    if not 0 < training_length <= 1:
        raise ValueError(f"training_length must be in (0, 1], got {training_length}")
    if base < 1:
        raise ValueError(f"base iterations per epoch must be positive, got {base}")
    # Round first so that e.g. 0.1 * 250 = 24.999... counts as 25.
    return max(1, math.floor(round(base * training_length, 9)))
