"""Child processes that end with the process that started them (standard library only).

A training's helpers (nnU-Net's loader workers) must not outlive a trainer killed without a chance to finish them
(SIGKILL, an OOM kill): they would hold memory and poll for work that never comes. On Linux :func:`end_with_parent`
asks the kernel to signal a process when its parent dies (``PR_SET_PDEATHSIG``); elsewhere it does nothing. (The
workers of a ``multiprocessing`` pool, as in nnU-Net's final validation, end by themselves when their parent
dies.) :func:`wait_for_group` is how ``pgps gpu-slot`` makes sure a command's whole process group is gone before
it hands the GPU to the next job.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent ``parent`` dies (Linux; elsewhere nothing).
    Exits at once if the parent died before the request took effect."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent:
        os._exit(0)


@contextlib.contextmanager
def spawn_as_fork(enabled: bool = True) -> Iterator[None]:
    """Within this block ``multiprocessing.get_context("spawn")`` returns the ``fork`` context (where there is
    one): a pool's workers then start at once instead of importing their parent's modules anew (seconds per
    pool for torch and nnU-Net). For a parent that uses no CUDA: a forked child of a CUDA process cannot use it."""
    if not enabled or "fork" not in multiprocessing.get_all_start_methods():
        yield
        return
    original = multiprocessing.get_context

    def get_context(method: str | None = None):
        return original("fork" if method == "spawn" else method)

    multiprocessing.get_context = get_context
    try:
        yield
    finally:
        multiprocessing.get_context = original


def group_alive(group: int) -> bool:
    """Whether a live process of process group ``group`` remains. On Linux zombies do not count (a container's
    first process may never reap the orphans it inherits); elsewhere any member counts."""
    proc = Path("/proc")
    if proc.is_dir():
        for stat in proc.glob("[0-9]*/stat"):
            try:
                state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue  # it ended while we looked
            if int(pgrp) == group and state not in ("Z", "X"):
                return True
        return False
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal is still a member
        return True
    return True


def wait_for_group(group: int, grace_s: float, poll_s: float = 0.05) -> bool:
    """Wait until process group ``group`` is empty; after ``grace_s`` seconds SIGKILL what is left and wait
    for it. Returns whether anything had to be killed."""
    deadline = time.monotonic() + grace_s
    while group_alive(group):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            while group_alive(group):
                time.sleep(poll_s)
            return True
        time.sleep(poll_s)
    return False
