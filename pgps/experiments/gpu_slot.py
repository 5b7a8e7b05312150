"""Run a command on one free GPU of this machine: ``pgps gpu-slot --slots N -- COMMAND``.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once but does not say which GPU
each job gets. A job here takes an exclusive lock (``filelock``) on one of N lock files (one per
GPU index), runs its command with ``CUDA_VISIBLE_DEVICES`` set to that GPU, and releases the lock
only when the command has exited: SIGTERM, SIGINT and SIGHUP sent to the wrapper (a scheduler
cancelling the job, Ctrl-C) are forwarded to the command, and the wrapper keeps the GPU until the
command is gone, so that no second job starts on a GPU still in use. If the wrapper itself is
killed with SIGKILL the kernel drops its lock and sends the command SIGTERM. The command runs in a
process group of its own, and the slot is released only when that whole group is gone: a worker the
command leaves behind is given ``--grace`` seconds, then SIGKILLed. If ``CUDA_VISIBLE_DEVICES`` is
already set (e.g. ``2,3``), slot i maps to its i-th entry.

The lock folder is per user by default. A folder named with ``--lock-dir`` or ``PGPS_GPU_LOCK_DIR``
is shared: created world-writable (mode 0777, without the sticky bit, which would forbid locking a
file another user created) and its lock files mode 0666, so that the jobs of several users on one
machine exclude each other.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from pgps.processes import end_with_parent, wait_for_group

log = logging.getLogger(__name__)

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)  # USR1: a cluster's warning
"""Signals the wrapper passes on to its command instead of dying."""

GRACE_S = 10.0
"""Seconds the processes a command leaves in its group get to end after it, before they are SIGKILLed."""

SHARED_MODE = 0o666
"""Mode of the lock files in a shared lock folder (any user may lock them)."""


def user_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"pgps-gpu-locks-{os.getuid()}"


def shared_lock_dir() -> Path | None:
    return Path(os.environ["PGPS_GPU_LOCK_DIR"]) if os.environ.get("PGPS_GPU_LOCK_DIR") else None


def _make_shared(lock_dir: Path) -> None:
    """Create a shared lock folder world-writable without the sticky bit (an existing one is left as it is)."""
    if not lock_dir.is_dir():
        lock_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(lock_dir, 0o777)


def acquire(
    slots: int, lock_dir: Path, poll_s: float = 2.0, timeout_s: float | None = None, shared: bool = False
) -> tuple[int, FileLock]:
    """Lock the lowest free slot in ``range(slots)``; wait (polling) while all are taken. ``shared``: the
    folder and lock files are usable by every user (see the module's text).

    Returns the slot and its acquired lock; release it with ``lock.release()``."""
    if slots < 1:
        raise ValueError(f"--slots must be at least 1, got {slots}")
    if shared:
        _make_shared(lock_dir)
    else:
        lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        for slot in range(slots):
            path = lock_dir / f"gpu{slot}.lock"
            lock = FileLock(path, mode=SHARED_MODE) if shared else FileLock(path)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            except PermissionError as exc:
                raise PermissionError(
                    f"cannot lock {path} ({exc.strerror or exc}): a lock folder shared by several users must be "
                    f"writable by all of them and not sticky (chmod 0777 {lock_dir}; /tmp itself is sticky)"
                ) from None
            return slot, lock
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"all {slots} GPU slots in {lock_dir} stayed busy for {timeout_s:.0f} s")
        time.sleep(poll_s)


def visible_device(slot: int, visible: str | None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value for ``slot``, within an already restricted set if any."""
    if not visible:
        return str(slot)
    devices = [d.strip() for d in visible.split(",") if d.strip()]
    if slot >= len(devices):
        raise ValueError(f"GPU slot {slot} but CUDA_VISIBLE_DEVICES={visible!r} lists only {len(devices)} devices")
    return devices[slot]


def run_on_free_gpu(command: Sequence[str], slots: int, lock_dir: Path | None = None, grace_s: float = GRACE_S) -> int:
    """Run ``command`` pinned to one free GPU; return its exit status (128 + N when a forwarded signal N
    ended it, as a shell reports it). The slot is released when the command's whole process group is gone."""
    if not command:
        raise ValueError("no command given (pgps gpu-slot --slots N -- COMMAND ...)")
    if grace_s < 0:
        raise ValueError(f"--grace must be at least 0 seconds, got {grace_s}")
    shared = lock_dir or shared_lock_dir()
    slot, lock = acquire(slots, shared or user_lock_dir(), shared=shared is not None)
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in FORWARDED}
    child: subprocess.Popen | None = None

    def forward(signum: int, _frame) -> None:
        received.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        device = visible_device(slot, os.environ.get("CUDA_VISIBLE_DEVICES"))
        log.info("running on GPU %s (slot %d of %d)", device, slot, slots)
        if received:  # a signal arrived before the command started: do not start it
            return 128 + received[0]
        try:
            child = subprocess.Popen(
                list(command),
                env={**os.environ, "CUDA_VISIBLE_DEVICES": device},
                process_group=0,  # its workers too: the slot is freed when the whole group is gone
                preexec_fn=functools.partial(end_with_parent, os.getpid(), signal.SIGTERM),  # if we are SIGKILLed
            )
        except FileNotFoundError:
            raise ValueError(f"command not found: {command[0]}") from None
        if received:  # a signal arrived while the command was starting
            child.send_signal(received[-1])
        status = child.wait()  # returns only when the command has exited (signals are forwarded meanwhile)
        if wait_for_group(child.pid, grace_s):
            log.warning("processes of the command outlived it by %g s and were killed", grace_s)
        return 128 - status if status < 0 else status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.release()
