"""Run a command on one free GPU of this machine: ``pgps gpu-slot --slots N -- COMMAND``.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once but does not say which GPU
each job gets. A job here takes an exclusive lock (``filelock``) on one of N lock files (one per
GPU index), runs its command with ``CUDA_VISIBLE_DEVICES`` set to that GPU, and releases the lock
only when the command has exited: SIGTERM, SIGINT and SIGHUP sent to the wrapper (a scheduler
cancelling the job, Ctrl-C) are forwarded to the command, and the wrapper keeps the GPU until the
command is gone, so that no second job starts on a GPU still in use. If the wrapper itself is
killed with SIGKILL the kernel drops its lock (the command is then orphaned). If
``CUDA_VISIBLE_DEVICES`` is already set (e.g. ``2,3``), slot i maps to its i-th entry.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""Signals the wrapper passes on to its command instead of dying."""


def default_lock_dir() -> Path:
    return Path(os.environ.get("PGPS_GPU_LOCK_DIR") or Path(tempfile.gettempdir()) / f"pgps-gpu-locks-{os.getuid()}")


def acquire(slots: int, lock_dir: Path, poll_s: float = 2.0, timeout_s: float | None = None) -> tuple[int, FileLock]:
    """Lock the lowest free slot in ``range(slots)``; wait (polling) while all are taken.

    Returns the slot and its acquired lock; release it with ``lock.release()``."""
    if slots < 1:
        raise ValueError(f"--slots must be at least 1, got {slots}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        for slot in range(slots):
            lock = FileLock(lock_dir / f"gpu{slot}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
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


def run_on_free_gpu(command: Sequence[str], slots: int, lock_dir: Path | None = None) -> int:
    """Run ``command`` pinned to one free GPU; return its exit status (128 + N when a forwarded signal N
    ended it, as a shell reports it)."""
    if not command:
        raise ValueError("no command given (pgps gpu-slot --slots N -- COMMAND ...)")
    slot, lock = acquire(slots, lock_dir or default_lock_dir())
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
            child = subprocess.Popen(list(command), env={**os.environ, "CUDA_VISIBLE_DEVICES": device})
        except FileNotFoundError:
            raise ValueError(f"command not found: {command[0]}") from None
        if received:  # a signal arrived while the command was starting
            child.send_signal(received[-1])
        status = child.wait()  # returns only when the command has exited (signals are forwarded meanwhile)
        return 128 - status if status < 0 else status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.release()
