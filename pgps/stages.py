"""Stage lists: the patch sizes a curriculum trains on, from ``P_min`` to ``P_max``.

Journal modes (PGPS-Efficiency / -Performance, journal Sec. 2.4.2 and Algorithm 1):
start at ``P_min`` and repeatedly grow one axis among those still below ``P_max``; ties go to
the lowest axis index. Which axis is a choice (:data:`GROWTH`): the authors' journal code grows
the axis whose *next* value (current + step) is smallest (``"code"``, the default: it is what
produced the article's results); the article's text (Sec. 2, Algorithm 1) says the axis that is
*currently* smallest (``"text"``). The two differ once the steps differ between axes, e.g. on
MSD Heart from the fourth stage on: (64, 32, 32) by the code, (48, 64, 32) by the text.

MICCAI 2024 legacy modes (PGPS / PGPS+): start at ``P_min`` doubled on axis 0 (a 2x1x1
bottleneck), then grow the axes round-robin in the order 1, 2, 0, skipping axes already at
``P_max`` and clipping each to ``P_max`` (MICCAI Supplemental Table 3).
"""

from __future__ import annotations

from collections.abc import Sequence

from pgps.sizes import Size, as_size, check_divisible, check_not_larger

LEGACY_AXIS_ORDER = (1, 2, 0)

GROWTH = {
    "code": "the axis whose next value (current + step) is smallest (the authors' journal code)",
    "text": "the axis that is currently smallest (the article's text, Sec. 2 and Algorithm 1)",
}
"""The journal modes' rules for the axis to grow next."""


def validate(
    patch_size_max: Sequence[int], steps: Sequence[int], patch_size_min: Sequence[int] | None = None
) -> tuple[Size, Size, Size]:
    """Check and normalise ``(P_max, steps, P_min)``; ``P_min`` defaults to the steps (a 1^3 bottleneck)."""
    p_max = as_size("patch_size_max", patch_size_max)
    step = as_size("steps", steps)
    check_divisible("patch_size_max", p_max, step)
    p_min = step if patch_size_min is None else as_size("patch_size_min", patch_size_min)
    check_divisible("patch_size_min", p_min, step)
    check_not_larger("patch_size_min", p_min, "patch_size_max", p_max)
    return p_max, step, p_min


def journal_stages(
    patch_size_max: Sequence[int],
    steps: Sequence[int],
    patch_size_min: Sequence[int] | None = None,
    growth: str = "code",
) -> list[Size]:
    """Stages of the journal modes, ``P_min`` first and ``P_max`` last; ``growth`` one of :data:`GROWTH`.

    >>> [s for s in journal_stages((128, 128, 128), (32, 32, 32))][:4]
    [(32, 32, 32), (64, 32, 32), (64, 64, 32), (64, 64, 64)]
    """
    if growth not in GROWTH:
        raise ValueError(f"unknown stage growth {growth!r}; choose one of: {', '.join(GROWTH)}")
    p_max, step, p = validate(patch_size_max, steps, patch_size_min)
    ahead = 1 if growth == "code" else 0
    stages = [p]
    while p != p_max:
        growable = [a for a in range(3) if p[a] < p_max[a]]
        axis = min(growable, key=lambda a: (p[a] + ahead * step[a], a))
        grown = list(p)
        grown[axis] += step[axis]
        p = (grown[0], grown[1], grown[2])
        stages.append(p)
    return stages


def legacy_stages(
    patch_size_max: Sequence[int], steps: Sequence[int], patch_size_min: Sequence[int] | None = None
) -> list[Size]:
    """Stages of the MICCAI 2024 modes (PGPS, PGPS+): 2x1x1 start, round-robin growth 1, 2, 0.

    >>> legacy_stages((128, 128, 128), (32, 32, 32))[:3]
    [(64, 32, 32), (64, 64, 32), (64, 64, 64)]
    """
    p_max, step, p_min = validate(patch_size_max, steps, patch_size_min)
    p = (min(2 * p_min[0], p_max[0]), p_min[1], p_min[2])
    stages = [p]
    turn = 0
    while p != p_max:
        for _ in range(3):
            axis = LEGACY_AXIS_ORDER[turn % 3]
            turn += 1
            if p[axis] < p_max[axis]:
                break
        grown = list(p)
        grown[axis] = min(p[axis] + step[axis], p_max[axis])
        p = (grown[0], grown[1], grown[2])
        stages.append(p)
    return stages
