"""The batches of the PGPS trainers' training loop: the curriculum's next step, from the loader of its stage.

:class:`CurriculumBatches` is what nnU-Net's loop calls ``next()`` on (``trainer.dataloader_train``); a
:class:`StageLoader` holds one stage's :class:`~pgps.nnunet.loading.sampling.PlannedDataLoader` behind nnU-Net's
augmenter and hands out exactly the step asked for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

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
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.loaders: dict[int, StageLoader] = {}
        self.last_index: int | None = None  # stage of the batch returned last

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        t = self.trainer
        curriculum = t.curriculum
        step, index = curriculum.global_step, curriculum.stage_index
        if index not in self.loaders:
            if t.schedule.mode != "rpss":
                self.close()
                position = f"{index} ({index + 1} of {t.schedule.num_stages})"
                t.print_to_log_file(f"PGPS stage {position}: {t.describe_stage(index)}")
            self.loaders[index] = t.make_train_loader(index)
        batch = finish_batch(self.loaders[index].take(step), t.device)  # batched augmentation deferred to the GPU
        self.last_index = index
        curriculum.step()
        return batch

    def close(self) -> None:
        for loader in self.loaders.values():
            loader.close()
        self.loaders.clear()
