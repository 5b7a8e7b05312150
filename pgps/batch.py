"""Batch size per stage for each curriculum mode (SPEC section 1, "Batch size")."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

from pgps.sizes import Size, numel


def efficiency_batch_sizes(stages: Sequence[Size], batch_size_base: int) -> list[int]:
    """PGPS-Efficiency (and MICCAI PGPS, RPSS, Progressive Resolution): ``b_base`` at every stage."""
    return [batch_size_base] * len(stages)


def performance_batch_sizes(stages: Sequence[Size], batch_size_base: int) -> list[int]:
    """PGPS-Performance: ``floor(b_base * numel(P_max) / numel(P))``; the last stage is ``b_base``.

    This is the formula of the authors' code and of the batch sizes the article quotes
    (MSD Hippocampus, 40x56x40 with b_base 9: 1575 at 8^3); Algorithm 1 prints it garbled.
    """
    budget = batch_size_base * numel(stages[-1])
    return [budget // numel(p) for p in stages]


def miccai_plus_batch_sizes(stages: Sequence[Size], batch_size_base: int) -> list[int]:
    """MICCAI 2024 PGPS+, as the conference code computed it.

    Walking back from the last stage with a chain that starts at 2 whatever ``b_base`` is:
    ``c_last = 2``, ``c_i = floor(numel(P_{i+1}) / numel(P_i) * c_{i+1})`` (truncated at every
    step), then ``b_i = max(c_i, b_base)`` for every stage but the last, which gets ``b_base``.
    """
    chain = [2] * len(stages)
    for i in range(len(stages) - 2, -1, -1):
        chain[i] = math.floor(Fraction(numel(stages[i + 1]), numel(stages[i])) * chain[i + 1])
    return [max(c, batch_size_base) for c in chain[:-1]] + [batch_size_base]


def memory_batch_sizes(
    stages: Sequence[Size], batch_size_base: int, memory_per_sample: Callable[[Size], float]
) -> list[int]:
    """Batch sizes that keep ``b * memory(P)`` within the memory of ``b_base`` samples at ``P_max``.

    ``memory_per_sample(P)`` is the (measured) peak memory of one sample of size ``P`` in any
    unit. Each stage gets ``floor(b_base * memory(P_max) / memory(P))``, at least ``b_base``.
    """
    budget = batch_size_base * memory_per_sample(stages[-1])
    sizes = []
    for p in stages:
        m = memory_per_sample(p)
        if m <= 0:
            raise ValueError(f"memory_per_sample{p} must be positive, got {m}")
        sizes.append(max(batch_size_base, math.floor(budget / m)))
    sizes[-1] = batch_size_base
    return sizes


def cap_batch_sizes(batch_sizes: Sequence[int], cap: int | None, batch_size_base: int) -> list[int]:
    """Limit every batch size to ``cap`` (``None``: no cap). The cap may not be below ``b_base``."""
    if cap is None:
        return list(batch_sizes)
    if cap < batch_size_base:
        raise ValueError(f"batch_size_cap ({cap}) must be at least the planned batch size ({batch_size_base})")
    return [min(b, cap) for b in batch_sizes]
