"""Small file helpers shared by the CLI and the trainers."""

from __future__ import annotations

import os
from collections.abc import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, durable: bool = True) -> None:
    """Create or replace ``path`` so that no reader and no crash ever sees half a file.

    ``write(tmp)`` writes the new content to a temporary file in the same folder; it is then
    flushed to disk (``fsync``, when ``durable``), renamed over ``path`` (``os.replace``, atomic on
    POSIX) and the folder entry is synced too. A process killed at any instant leaves either the
    old file or the new one under ``path``, plus at most a stray ``path.tmp<pid>``.
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        if not os.path.exists(tmp):  # the writer decided not to write (e.g. checkpointing disabled)
            return
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(os.path.dirname(path) or ".")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: readers never see half a file."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write, durable=durable)


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make ``path`` a second name of the complete file ``source`` (a hard link, else a copy), atomically."""
    import shutil

    def link(tmp: str) -> None:
        try:
            os.link(source, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, tmp)

    atomic_write(path, link)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
