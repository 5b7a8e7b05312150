"""Batch size per stage for each curriculum mode (SPEC section 1, "Batch size")."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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


def per_sample_memory(peak_memory: Mapping[int, float]) -> float:
    """Memory one more sample costs, from the peak memory of a training step measured at batch sizes.

    ``peak_memory`` maps batch size -> peak memory of one step (forward, loss, backward) above the
    memory held before it, in any unit. With one batch size the whole peak is charged to its
    samples (``peak / b``, conservative); with several, the least-squares slope of peak over batch
    size, which leaves out what does not grow with the batch (gradient buffers, workspaces).
    """
    if not peak_memory:
        raise ValueError("peak_memory is empty: measure at least one batch size")
    for b, m in peak_memory.items():
        if isinstance(b, bool) or int(b) != b or b < 1:
            raise ValueError(f"batch sizes must be positive integers, got {b!r}")
        if not m > 0:
            raise ValueError(f"peak memory at batch size {b} must be positive, got {m}")
    if len(peak_memory) == 1:
        ((b, m),) = peak_memory.items()
        return m / b
    mean_b = sum(peak_memory) / len(peak_memory)
    mean_m = sum(peak_memory.values()) / len(peak_memory)
    slope = sum((b - mean_b) * (m - mean_m) for b, m in peak_memory.items()) / sum(
        (b - mean_b) ** 2 for b in peak_memory
    )
    if slope <= 0:
        raise ValueError(
            f"peak memory does not grow with the batch size ({dict(peak_memory)}); measure larger batch sizes"
        )
    return slope


def cap_batch_sizes(batch_sizes: Sequence[int], cap: int | None, batch_size_base: int) -> list[int]:
    """Limit every batch size to ``cap`` (``None``: no cap). The cap may not be below ``b_base``."""
    if cap is None:
        return list(batch_sizes)
    if cap < batch_size_base:
        raise ValueError(f"batch_size_cap ({cap}) must be at least the planned batch size ({batch_size_base})")
    return [min(b, cap) for b in batch_sizes]
