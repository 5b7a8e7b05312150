"""Child processes that end with the process that started them (standard library only).

A training's helpers (nnU-Net's loader workers) must not outlive a trainer killed without a chance to finish them
(SIGKILL, an OOM kill): they would hold memory and poll for work that never comes. On Linux :func:`end_with_parent`
asks the kernel to signal a process when its parent dies (``PR_SET_PDEATHSIG``); elsewhere it does nothing. (The
workers of a ``multiprocessing`` pool, as in nnU-Net's final validation, end by themselves when their parent
dies.) :func:`wait_for_group` is how ``pgps gpu-slot`` makes sure a command's whole process group is gone before
it hands the GPU to the next job. :func:`lock_file` is the lock a process holds while it writes a folder
(a fold being trained, a dataset being written): the kernel drops it when the process dies, by any signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import multiprocessing
import os
import signal
import socket
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


def live_members(*, group: int | None = None, session: int | None = None) -> list[int] | None:
    """The live processes (zombies do not count: a container's first process may never reap the orphans it
    inherits) of process group ``group`` or session ``session``, read from ``/proc``; None without ``/proc``."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    key, field = (group, 2) if group is not None else (session, 3)
    found = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command: state, ppid, pgrp, session
            if int(fields[field]) == key and fields[0] not in ("Z", "X"):
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # it ended while we looked
    return found


def group_alive(group: int) -> bool:
    """Whether a live process of process group ``group`` remains (:func:`live_members`; without ``/proc`` any
    member, zombies too, counts)."""
    members = live_members(group=group)
    if members is not None:
        return bool(members)
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


class Busy(OSError):
    """Another process holds the lock; the message names it (an ``OSError``, as ``EBUSY`` would be)."""


def holder(path: str | os.PathLike, patience_s: float = 1.0, locked: os.stat_result | None = None) -> str | None:
    """Who holds (or last held) the lock file ``path``, as it says (a holder that has just taken the lock gets
    ``patience_s`` seconds to write its name). With ``locked`` (the file found locked): None once ``path`` is no
    longer that file, i.e. its holder has released and removed it."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            if locked is not None and not os.path.samestat(os.stat(path), locked):
                return None
            with open(path) as f:
                info = json.load(f)
            return f"host {info['host']}, pid {info['pid']}, since {info['started']}"
        except FileNotFoundError:
            if locked is not None:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() >= deadline:
            return "a process that has not written its name yet"
        time.sleep(0.05)


def lock_file(path: str | os.PathLike, wait: bool = False) -> int:
    """Take an exclusive POSIX record lock (``fcntl.lockf``) on ``path`` (created if missing) and write this
    process's host, pid and start time into it; returns its file descriptor (closing it releases the lock, and
    so does the kernel when the process dies). Raises :class:`Busy` naming the holder when another process holds
    it (``wait``: block until it is free). Without ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        fcntl = None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            break
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            locked = os.fstat(fd)
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            who = holder(path, locked=locked)
            if who is None:  # released and removed meanwhile: try again
                continue
            raise Busy(who) from None
        try:  # a holder that removes its lock file on release (release_file) may have done so meanwhile
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started})
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode() + b"\n", 0)
    os.fsync(fd)
    return fd


def release_file(path: str | os.PathLike, fd: int) -> None:
    """Release a lock of :func:`lock_file` and remove its file (while still holding it, so that no other process
    can have locked the removed file: :func:`lock_file` checks that the file it locked is still ``path``)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)
