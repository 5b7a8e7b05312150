"""The batches of the PGPS trainers' training loop: the curriculum's next step, from the loader of its stage.

:class:`CurriculumBatches` is what nnU-Net's loop calls ``next()`` on (``trainer.dataloader_train``); a
:class:`StageLoader` holds one stage's :class:`~pgps.nnunet.loading.sampling.PlannedDataLoader` behind nnU-Net's
augmenter and hands out exactly the step asked for.

Without loader workers, nnU-Net makes each batch in the training process, between two steps. With ``prefetch``
(a PGPS trainer on the CPU without workers: the demo), :class:`CurriculumBatches` makes the next step's batch in
one background thread while the current step computes (torch's kernels release the GIL). It prefetches only
within an epoch: at an epoch's end no batch is in the making, so the random state a checkpoint saves is the one an
uninterrupted run has there, and a resumed run draws the same batches (the loader's random draws happen in one
thread, in step order; the training step itself draws none). The first batch of a stage is made in the training
thread, with the stage's new loader.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pgps.nnunet.inputs import DamagedInput
from pgps.nnunet.loading.sampling import PlannedDataLoader, StepQueue, finish_batch


class StageLoader:
    """One stage's :class:`~pgps.nnunet.loading.sampling.PlannedDataLoader` behind nnU-Net's augmenter.

    :meth:`take` returns the batch of exactly the step asked for: batches that workers delivered early
    wait here for their turn (at most the queue's window of them).
    """

    def __init__(self, augmenter: Any, data_loader: PlannedDataLoader, steps: StepQueue) -> None:
        self.augmenter, self.data_loader, self.steps = augmenter, data_loader, steps
        self.early: dict[int, dict] = {}

    def take(self, step: int) -> dict:
        while step not in self.early:
            batch = next(self.augmenter)
            if "pgps_damaged" in batch:  # a worker could not read a case file
                raise DamagedInput(*batch["pgps_damaged"])
            delivered = batch.get("pgps_step")
            if delivered is None:  # a worker released by a closing queue
                continue
            if delivered < step or delivered in self.early:
                raise RuntimeError(f"the loader of stage {self.data_loader.stage_index} delivered step {delivered} "
                                   f"again while step {step} was due")  # fmt: skip
            self.early[delivered] = batch
        self.steps.taken(step)
        return self.early.pop(step)

    def close(self) -> None:
        self.steps.close()
        if hasattr(self.augmenter, "_finish"):
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                self.augmenter._finish()
        self.early.clear()


class CurriculumBatches:
    """What nnU-Net's training loop calls ``next()`` on: the batch of the curriculum's next step.

    The trainer's :class:`pgps.Curriculum` says which step comes next (and advances when the batch is
    handed out); the stage of that step says which loader makes it. Paced modes keep one loader and
    replace it at a stage change (finishing its workers); RPSS keeps one loader per stage drawn so far.
    ``prefetch``: make the next batch of the same epoch in a background thread (module docstring).
    """

    def __init__(self, trainer: Any, prefetch: bool = False) -> None:
        self.trainer = trainer
        self.prefetch = prefetch
        self.loaders: dict[int, StageLoader] = {}
        self.last_index: int | None = None  # stage of the batch returned last
        self._thread: ThreadPoolExecutor | None = None
        self._pending: tuple[int, Future] | None = None  # (step, its batch in the making)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        curriculum = self.trainer.curriculum
        step, index = curriculum.global_step, curriculum.stage_index
        if self._pending is not None and self._pending[0] == step:
            batch = self._pending[1].result()
            self._pending = None
        else:
            self._wait()
            batch = self._make(step, index)
        self.last_index = index
        curriculum.step()
        # the next step belongs to this epoch and to a stage whose loader exists (a loader is made in this thread:
        # it sets the trainer's stage configuration while it builds the transforms)
        # (none once the trainer was asked to stop: its checkpoint keeps the random state before the next batch)
        stopping = getattr(self.trainer, "stop_requested", False)
        if self.prefetch and curriculum.iteration > 0 and curriculum.stage_index in self.loaders and not stopping:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="pgps-prefetch")
            upcoming = curriculum.global_step
            self._pending = (upcoming, self._thread.submit(self._make, upcoming, curriculum.stage_index))
        return batch

    @property
    def making(self) -> bool:
        """A batch is being made ahead (prefetch)."""
        return self._pending is not None

    def _make(self, step: int, index: int) -> dict:
        """The batch of ``step`` (stage ``index``), from its stage's loader (made first at a stage change)."""
        t = self.trainer
        if index not in self.loaders:
            if t.schedule.mode != "rpss":
                self.close_loaders()
                position = f"{index} ({index + 1} of {t.schedule.num_stages})"
                t.print_to_log_file(f"PGPS stage {position}: {t.describe_stage(index)}")
            self.loaders[index] = t.make_train_loader(index)
        return finish_batch(self.loaders[index].take(step), t.device)  # batched augmentation deferred to the GPU

    def _wait(self) -> None:
        """Let a batch in the making finish (its errors surface here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending[1].result()

    def close_loaders(self) -> None:
        for loader in self.loaders.values():
            loader.close()
        self.loaders.clear()

    def close(self) -> None:
        try:
            self._wait()
        finally:
            if self._thread is not None:
                self._thread.shutdown()
                self._thread = None
            self.close_loaders()
