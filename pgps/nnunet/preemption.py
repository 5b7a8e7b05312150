"""Graceful stop of a PGPS training on SIGTERM or SIGUSR1: finish the iteration, checkpoint it, exit 75.

A cluster ends a job at its time limit or on preemption with SIGTERM, then SIGKILL after a grace period
(SLURM's ``KillWait``, 30 s by default), and can send a warning signal some time before the limit (``sbatch
--signal``). Without a handler the trainer dies at once and loses everything since its last
``checkpoint_latest.pth`` (up to ``checkpoint_every_epochs`` epochs or ``checkpoint_every_minutes``).

With :class:`GracefulStop` installed (the PGPS trainers' single-process training loop,
:meth:`pgps.nnunet.trainer.PGPSMixin.run_training`), the handler only records the signal; the loop looks at it
after every training iteration, writes ``checkpoint_latest.pth`` (atomically, as every checkpoint) holding the
state after that iteration, including the epoch's iterations so far (their losses, the telemetry sums and the
random states), and exits with :data:`EXIT_STOPPED`. ``nnUNetv2_train ... --c`` then resumes at that epoch and
iteration, so a stop loses at most the iteration that was running when the signal came. A signal during the
epoch's validation stops the run after the next epoch's first iteration.

The handlers are installed for the training loop only: loader workers forked during the loop inherit them (the
signal SLURM sends to every process of the job does not end them under the trainer), and the final validation
after the loop dies on SIGTERM as before. For the same reason multiprocessing's exit handler, which ends a daemonic
child with SIGTERM and then waits for it, would wait forever (until the scheduler's SIGKILL, ``KillWait`` later):
before exiting, the stopped trainer ends its remaining children with SIGKILL (:func:`end_children`). Under DDP the
trainer keeps nnU-Net's loop (no graceful stop).
"""

from __future__ import annotations

import multiprocessing
import signal
from types import FrameType

EXIT_STOPPED = 75
"""Exit status of a training stopped by a signal after checkpointing (``EX_TEMPFAIL`` of ``sysexits.h``: try
again). The workflow re-runs the job (Snakemake's ``retries``), which resumes from the checkpoint."""

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class GracefulStop:
    """While entered, SIGTERM and SIGUSR1 set :attr:`signum` instead of ending the process; the previous handlers
    come back on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> GracefulStop:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def end_children(timeout: float = 10.0) -> None:
    """SIGKILL this process's remaining ``multiprocessing`` children (a stopped trainer's loader workers, which ignore
    SIGTERM: module docstring) and reap them."""
    children = multiprocessing.active_children()
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout)
