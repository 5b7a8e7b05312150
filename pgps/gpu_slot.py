"""Run a command on one free GPU of this machine: ``pgps gpu-slot --slots N -- COMMAND``.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once but does not say which GPU
each job gets. A job here takes an exclusive lock on one of N lock files (one per GPU index),
runs its command with ``CUDA_VISIBLE_DEVICES`` set to that GPU, and releases the lock when the
command ends (also when it is killed: the kernel drops the lock with the process). If
``CUDA_VISIBLE_DEVICES`` is already set (e.g. ``2,3``), slot i maps to its i-th entry.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO


def default_lock_dir() -> Path:
    return Path(os.environ.get("PGPS_GPU_LOCK_DIR") or Path(tempfile.gettempdir()) / f"pgps-gpu-locks-{os.getuid()}")


def acquire(slots: int, lock_dir: Path, poll_s: float = 2.0, timeout_s: float | None = None) -> tuple[int, IO]:
    """Lock the lowest free slot in ``range(slots)``; wait (polling) while all are taken.

    Returns the slot and the open lock file, which holds the lock until it is closed."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        for slot in range(slots):
            handle = open(lock_dir / f"gpu{slot}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return slot, handle
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
    """Run ``command`` pinned to one free GPU; return its exit status."""
    if not command:
        raise ValueError("no command given (pgps gpu-slot --slots N -- COMMAND ...)")
    slot, handle = acquire(slots, lock_dir or default_lock_dir())
    try:
        device = visible_device(slot, os.environ.get("CUDA_VISIBLE_DEVICES"))
        print(f"pgps gpu-slot: running on GPU {device} (slot {slot} of {slots})", file=sys.stderr, flush=True)
        return subprocess.call(list(command), env={**os.environ, "CUDA_VISIBLE_DEVICES": device})
    finally:
        handle.close()
