"""The loop the adapter tests share: epochs of a curriculum loader until the schedule (or a step count) ends."""

from __future__ import annotations

from collections.abc import Callable


def drive(sampler, loader, steps: int | None = None, train_step: Callable | None = None, on_batch=None):
    """Every batch the loop receives (and each ``train_step(batch)`` loss), stopping after ``steps`` batches."""
    batches, losses = [], []
    while not sampler.finished and (steps is None or len(batches) < steps):
        for batch in loader:
            batches.append(batch)
            if on_batch is not None:
                on_batch(batch)
            if train_step is not None:
                losses.append(train_step(batch))
            if steps is not None and len(batches) == steps:
                break
    return batches, losses
