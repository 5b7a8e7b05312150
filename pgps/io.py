"""Small file helpers shared by the CLI, the trainers and the workflow: atomic writes, and JSON/CSV files read and
written in one way (errors name the file; writes never leave half a file)."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from glob import escape as glob_escape
from pathlib import Path
from typing import Any


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
        try:
            write(tmp)
        except Exception as exc:
            if _out_of_space(tmp):  # e.g. torch.save's "unexpected pos 195520 vs 195408" on a full disk
                raise OSError(errno.ENOSPC, f"no space left on device while writing {path}; the previous file (if "
                              "any) is intact") from exc  # fmt: skip
            raise
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


def _out_of_space(tmp: str) -> bool:
    """Whether writing more to the file ``tmp`` fails for want of space (a write of a few blocks, synced)."""
    if not os.path.exists(tmp):
        return False
    try:
        with open(tmp, "ab") as f:
            f.write(bytes(1 << 16))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return False


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a hidden sibling (``.NAME.partial-PID``) and rename it to ``target`` when the block ends.

    An existing ``target`` is replaced; on any error (or interruption) the partial folder is removed and
    ``target`` is left as it was, so a half-written folder never appears under its real name. One writer at a
    time: the block holds the lock ``.NAME.lock`` beside ``target`` (removed at the end); a second writer raises
    :class:`pgps.processes.Busy` naming the first (host, pid, start time) before it touches anything.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(target):
        partial = fresh_partial(target)
        try:
            yield partial
            if target.exists():
                shutil.rmtree(target)
            partial.rename(target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise


def fresh_partial(target: str | os.PathLike) -> Path:
    """This process's new, empty ``.NAME.partial-PID`` beside ``target``, after removing those that killed writers
    left behind. Call it holding :func:`writer_lock` on ``target``."""
    target = Path(target)
    for stale in target.parent.glob(f".{glob_escape(target.name)}.partial*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    partial.mkdir()
    return partial


@contextlib.contextmanager
def writer_lock(target: str | os.PathLike) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``target`` for the block: one process writes ``target`` at a time (a second
    raises :class:`pgps.processes.Busy` saying who writes it)."""
    from pgps.processes import Busy, lock_file, release_file

    target = Path(target)
    lock = target.parent / f".{target.name}.lock"
    try:
        fd = lock_file(lock)
    except Busy as exc:
        raise Busy(f"{target} is being written by {exc}; wait until it ends") from None
    try:
        yield
    finally:
        release_file(lock, fd)  # no lock file is left beside the dataset


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: readers never see half a file."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write, durable=durable)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; a file that is not JSON (e.g. cut short by a kill) raises ``ValueError`` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); was it cut short?") from None


def write_json(path: str | os.PathLike, value: Any, *, indent: int = 2, durable: bool = False) -> None:
    """Write ``value`` as JSON to ``path``, atomically."""
    atomic_write_text(path, json.dumps(value, indent=indent) + "\n", durable=durable)


def csv_text(rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str], float_format: str | None = None) -> str:
    """CSV text: a header of ``fieldnames``, then one line per row; ``float_format`` (e.g. ``".6f"``) formats the
    finite floats (NaN and infinities are written as Python writes them)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        if float_format is not None:
            row = {k: _formatted(v, float_format) for k, v in row.items()}
        writer.writerow(row)
    return buf.getvalue()


def _formatted(value: Any, float_format: str) -> Any:
    return format(value, float_format) if isinstance(value, float) and math.isfinite(value) else value


def write_csv(
    path: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    fieldnames: Sequence[str],
    float_format: str | None = None,
    *,
    durable: bool = False,
) -> None:
    """Write :func:`csv_text` to ``path``, atomically."""
    atomic_write_text(path, csv_text(rows, fieldnames, float_format), durable=durable)


def read_csv_rows(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts of strings; a missing file or missing ``required`` columns
    raise ``ValueError`` naming the file."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    return rows


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make ``path`` a second name of the complete file ``source`` (a hard link, else a copy), atomically."""

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
