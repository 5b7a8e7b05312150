"""The PGPS trainers' checkpoints: atomic, frequent, never resumed from ``checkpoint_best.pth``, and holding the
curriculum state (its position, the batch planner's settings, the telemetry and every rank's random states) inside
nnU-Net's own checkpoint (:class:`CurriculumLogger`), so that ``nnUNetv2_train ... --c`` resumes at the exact step.

:class:`CheckpointMixin` is a part of :class:`pgps.nnunet.trainer.PGPSMixin`.
"""

from __future__ import annotations

import os
import pickle
import random
import time
import warnings
from typing import Any

import numpy as np
import torch

import pgps
from pgps.io import atomic_link, atomic_write

CHECKPOINT_KEY = "pgps_curriculum"
CHECKPOINT_LATEST, CHECKPOINT_BEST = "checkpoint_latest.pth", "checkpoint_best.pth"
CHECKPOINT_FINAL = "checkpoint_final.pth"
CONTINUE_ORDER = (CHECKPOINT_FINAL, CHECKPOINT_LATEST, CHECKPOINT_BEST)
"""The checkpoint nnU-Net's ``--c`` continues from: the first of these in the fold folder."""

_UNREADABLE = (
    "cannot read this checkpoint ({}: {}); it was cut short, e.g. by a kill during its write (the pgps trainers "
    "write checkpoints atomically); remove it to resume from another checkpoint or to start over"
)


class CurriculumLogger:
    """Wraps nnU-Net's logger so that its checkpoint entry also carries the curriculum state.

    nnU-Net stores ``logger.get_checkpoint()`` under ``checkpoint["logging"]`` and hands it back
    to ``logger.load_checkpoint`` on ``--c``; the wrapped logger never sees the extra key.
    """

    def __init__(self, inner: Any, trainer: Any) -> None:
        self._inner = inner
        self._trainer = trainer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_checkpoint(self) -> dict:
        logged = self._inner.get_checkpoint()
        partial = self._trainer._partial_epoch
        if partial is not None:  # written mid-epoch (a stop): nnU-Net's values of the finished epochs only
            logged = {key: value[: partial["epoch"]] if isinstance(value, list) else value
                      for key, value in logged.items()}  # fmt: skip
        return {**logged, CHECKPOINT_KEY: self._trainer.curriculum_state_dict()}

    def load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint = dict(checkpoint)
        state = checkpoint.pop(CHECKPOINT_KEY, None)
        self._inner.load_checkpoint(checkpoint)
        self._trainer.load_curriculum_state_dict(state)

    def plot_progress_png(self, output_folder: str) -> None:
        """nnU-Net's progress plot, drawn every ``progress_plot_every`` epochs and after the last one (never at 0):
        matplotlib takes seconds of CPU per plot, more than a short CPU run's epoch."""
        t = self._trainer
        every, epoch = t.progress_plot_every, t.current_epoch
        if every and ((epoch + 1) % every == 0 or epoch + 1 >= t.num_epochs):
            self._inner.plot_progress_png(output_folder)


class CheckpointMixin:
    """Checkpoints of a :class:`pgps.nnunet.trainer.PGPSMixin` trainer (nnU-Net's hooks, then the curriculum state)."""

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written atomically (temporary file, fsync, rename): a kill at any
        instant leaves the previous checkpoint loadable. ``checkpoint_best.pth`` is a second name of a
        ``checkpoint_latest.pth`` written with it, so that the latest state is never older than the best."""
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)
            return
        folder, name = os.path.split(filename)
        if name == CHECKPOINT_BEST:
            latest = os.path.join(folder, CHECKPOINT_LATEST)
            if self._latest_saved[0] != self.current_epoch:
                self.save_checkpoint(latest)
            atomic_link(latest, filename)
            return
        atomic_write(filename, super().save_checkpoint)
        if name == CHECKPOINT_LATEST:
            self._latest_saved = (self.current_epoch, time.monotonic())

    def _maybe_save_latest_by_time(self, epoch: int) -> None:
        """After epoch ``epoch`` (nnU-Net has moved ``current_epoch`` on): write ``checkpoint_latest.pth``
        when ``checkpoint_every_minutes`` have passed since the last one (the last epoch gets the final one)."""
        minutes = self.checkpoint_every_minutes
        last_epoch, when = self._latest_saved
        if not minutes or epoch >= self.num_epochs - 1 or last_epoch == epoch:
            return
        if time.monotonic() - when >= 60 * minutes:
            self.current_epoch -= 1  # the state after `epoch`, as nnU-Net's on_train_end does for the final one
            try:
                self.save_checkpoint(os.path.join(self.output_folder, CHECKPOINT_LATEST))
            finally:
                self.current_epoch += 1

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """nnU-Net's ``load_checkpoint``, refusing to continue a training (``--c``) from ``checkpoint_best.pth``
        (an earlier state than the last) and naming a checkpoint that cannot be read.

        The trainer is initialised first, which takes the fold's run lock (:mod:`pgps.nnunet.runlock`), and the
        checkpoint is read only then: nnU-Net chose it before, and with ``PGPS_WAIT_FOR_LOCK`` the trainer may have
        waited for another trainer of the fold, which has since moved on or finished (and removed
        ``checkpoint_latest.pth``). So a ``--c`` checkpoint of this fold is chosen again after the wait, as nnU-Net
        chooses it (:data:`CONTINUE_ORDER`)."""
        if isinstance(filename_or_checkpoint, str):
            if not self.was_initialized:
                self.initialize()
            path = self._continue_from(filename_or_checkpoint)
            if os.path.basename(path) == CHECKPOINT_BEST and self._continue_training and not self._training_ended:
                raise RuntimeError(
                    f"{path}: refusing to continue training from checkpoint_best.pth (the best pseudo-Dice, not "
                    "the last state), because checkpoint_latest.pth and checkpoint_final.pth are missing; remove "
                    "the fold folder to train from scratch"
                )
            try:
                super().load_checkpoint(path)
            except (EOFError, pickle.UnpicklingError) as exc:
                raise RuntimeError(f"{path}: {_UNREADABLE.format(type(exc).__name__, exc)}") from exc
            except RuntimeError as exc:
                if "PytorchStreamReader" in str(exc) or "zip archive" in str(exc):
                    raise RuntimeError(f"{path}: {_UNREADABLE.format(type(exc).__name__, exc)}") from exc
                raise RuntimeError(f"{path}: {exc}") from exc
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from exc
            return
        super().load_checkpoint(filename_or_checkpoint)

    def _continue_from(self, path: str) -> str:
        """The checkpoint ``--c`` continues from now that this trainer holds the fold (see :meth:`load_checkpoint`):
        ``path`` unless it is one of :data:`CONTINUE_ORDER` in this fold folder, else the first of them that exists."""
        folder, name = os.path.split(os.path.abspath(path))
        if not self._continue_training or name not in CONTINUE_ORDER or folder != os.path.abspath(self.output_folder):
            return path
        return next((os.path.join(folder, n) for n in CONTINUE_ORDER if os.path.isfile(os.path.join(folder, n))), path)

    def _rng_state(self) -> dict:
        state = {"numpy": np.random.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()}
        if self.device.type == "cuda" and torch.cuda.is_initialized():  # CPU runs never touch torch.cuda
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore_rng(self, state: dict) -> None:
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        if state.get("cuda") is not None and self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def curriculum_state_dict(self) -> dict:
        """What goes into nnU-Net's checkpoint: the curriculum's position (the next step to train, with its
        schedule), the batch planner's settings, the telemetry and the random states (numpy's, torch's, Python's
        and CUDA's on a GPU; under DDP one set per rank). Batches need no state of their own: a step's batch is
        a function of the planner's settings and the step."""
        return {
            "curriculum": self.curriculum.state_dict() if self.curriculum else None,
            "planner": self.planner.state() if self.planner else self._saved_planner,
            "telemetry": list(self.telemetry_rows),
            "rng": self._rank_rng_states or self._rng_state(),  # DDP: one per rank
            "partial_epoch": self._partial_epoch,  # the epoch's iterations before a stop (pgps.nnunet.preemption)
        }

    def load_curriculum_state_dict(self, state: dict | None) -> None:
        if state is None:
            self.print_to_log_file("PGPS: the checkpoint has no curriculum state; starting the telemetry afresh")
            return
        position = state.get("curriculum")
        if position is None:  # a checkpoint of pgps before the one batch plan: its schedule and next epoch
            position = {"schedule": state["schedule"], "epoch": state["epoch"], "iteration": 0}
            note = "a checkpoint of an earlier pgps: the epochs from here on draw the batch plan's batches"
            self.print_to_log_file(f"PGPS: {note}")
            warnings.warn(note, stacklevel=2)
        self.curriculum = pgps.Curriculum(self.schedule)
        try:
            self.curriculum.load_state_dict(position)
        except ValueError as exc:
            raise ValueError(
                f"{exc}\nResume with the same trainer, plans, configuration and PGPS_* settings, or remove the fold "
                "folder to train it anew."
            ) from None
        self._saved_planner = state.get("planner")
        epoch, iteration = self.curriculum.epoch, self.curriculum.iteration
        partial = state.get("partial_epoch")
        if partial is not None:  # written on a stop inside (or at the end of) an epoch
            epoch, iteration = partial["epoch"], partial["iterations"]
        self.telemetry_rows = [r for r in state["telemetry"] if r["epoch"] < epoch]
        self._resume_state = state
        index = self.schedule.stage_index(min(epoch, self.schedule.epochs - 1))
        at = f", iteration {iteration}" if partial is not None else ""
        self.print_to_log_file(f"PGPS: resuming at epoch {epoch}{at}, stage {index}")
