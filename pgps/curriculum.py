"""Curriculum state for resuming: where in its schedule a training run is.

Like DeepSpeed's curriculum scheduler, the state is a small dict (``state_dict`` /
``load_state_dict``) that goes into the training checkpoint, so that a resumed run continues at
the same stage and iteration. Loading refuses a state saved for a different schedule.
"""

from __future__ import annotations

from typing import Any

from pgps.schedule import Schedule, Stage


class Curriculum:
    """A schedule plus the position (epoch, iteration within the epoch) of a training run."""

    def __init__(self, schedule: Schedule, epoch: int = 0, iteration: int = 0) -> None:
        self.schedule = schedule
        self.epoch = epoch
        self.iteration = iteration

    @property
    def finished(self) -> bool:
        return self.epoch >= self.schedule.epochs

    @property
    def stage_index(self) -> int:
        return self.schedule.stage_index(self.epoch, self.iteration)

    @property
    def stage(self) -> Stage:
        return self.schedule.stages[self.stage_index]

    @property
    def global_step(self) -> int:
        """The next training step, counted from the start: ``epoch * iterations_per_epoch + iteration``."""
        return self.epoch * self.schedule.iterations_per_epoch + self.iteration

    def seek(self, epoch: int, iteration: int = 0) -> None:
        """Move to ``iteration`` of ``epoch`` (a training loop that owns the epoch count, e.g. nnU-Net's)."""
        if not 0 <= epoch <= self.schedule.epochs or not 0 <= iteration < self.schedule.iterations_per_epoch:
            raise ValueError(
                f"epoch {epoch}, iteration {iteration} is outside the schedule's {self.schedule.epochs} epochs of "
                f"{self.schedule.iterations_per_epoch} iterations"
            )
        self.epoch, self.iteration = int(epoch), int(iteration)

    def step(self) -> None:
        """Advance by one training iteration."""
        self.iteration += 1
        if self.iteration == self.schedule.iterations_per_epoch:
            self.iteration = 0
            self.epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_dict(), "epoch": self.epoch, "iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_same_schedule(state["schedule"], self.schedule)
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])

    def __repr__(self) -> str:
        return f"Curriculum(mode={self.schedule.mode!r}, epoch={self.epoch}, iteration={self.iteration})"


def check_same_schedule(saved: dict[str, Any], schedule: Schedule) -> None:
    """Raise ``ValueError`` when a checkpoint's schedule (``Schedule.to_dict()``) is not ``schedule``."""
    previous = Schedule.from_dict(saved)
    if previous != schedule:
        raise ValueError(
            "the checkpoint was saved with a different curriculum schedule; resume with the "
            f"same mode, plans and training length.\nsaved:\n{previous}\ncurrent:\n{schedule}"
        )
