"""One trainer per fold folder: a run lock held for the trainer process's whole life.

Two trainings of one fold (a restarted Snakemake that resubmits running jobs, a hand-started duplicate)
would both exit 0 with diverged weights, each overwriting the other's checkpoints. The PGPS trainers
take a POSIX record lock (``fcntl.lockf``) on :data:`LOCK_FILE` in the fold folder before they touch
anything there and never release it; the kernel drops it when the process ends, by any signal (a
SIGKILLed run leaves no stale lock: the file stays, the lock does not). POSIX record locks are the
portable choice on cluster file systems: NFS carries them to the server (NLM for v3, the protocol's
own locks for v4), Lustre with its ``flock`` mount option and GPFS honour them; on a file system that
ignores them every run gets the lock and the protection is gone (nothing worse). Under DDP the rank-0
process holds it.

A second trainer of a locked fold stops at once with one line naming the folder and the holder (host,
pid, start time, read from the lock file) and exit status :data:`EXIT_BUSY`; with :data:`WAIT_ENV` set
it waits for the lock instead.
"""

from __future__ import annotations

import os
import sys

from pgps import processes

LOCK_FILE = ".pgps_run.lock"
WAIT_ENV = "PGPS_WAIT_FOR_LOCK"
"""Set (to anything but ``0``/empty) to wait for a busy fold instead of exiting."""
EXIT_BUSY = 2


class FoldBusy(RuntimeError):
    """Another process holds the fold's run lock."""


def holder(folder: str | os.PathLike) -> str:
    """Who holds (or last held) the lock of ``folder``, as the lock file says."""
    return processes.holder(os.path.join(folder, LOCK_FILE))


def hold(folder: str | os.PathLike, wait: bool = False) -> int:
    """Take the run lock of ``folder`` (created if missing) for this process's life; its file descriptor.

    Raises :class:`FoldBusy` if another process holds it (``wait``: block until it is free)."""
    os.makedirs(folder, exist_ok=True)
    try:
        return processes.lock_file(os.path.join(folder, LOCK_FILE), wait)
    except processes.Busy as exc:
        raise FoldBusy(f"{os.fspath(folder)} is being trained by {exc}") from None


def wait_wanted() -> bool:
    return os.environ.get(WAIT_ENV, "").strip().lower() not in ("", "0", "false", "no")


def hold_or_exit(folder: str | os.PathLike) -> int:
    """:func:`hold`; when the fold is busy, one line on stderr and exit status :data:`EXIT_BUSY`, or with
    :data:`WAIT_ENV` one line saying whom it waits for, then the lock once that process is gone."""
    try:
        return hold(folder)
    except FoldBusy as exc:
        if not wait_wanted():
            print(f"PGPS: {exc}; not starting a second training of this fold (set {WAIT_ENV}=1 to wait for it)",
                  file=sys.stderr, flush=True)  # fmt: skip
            raise SystemExit(EXIT_BUSY) from None
        print(f"PGPS: {exc}; waiting until it ends ({WAIT_ENV} is set)", file=sys.stderr, flush=True)
    return hold(folder, wait=True)
