"""Damaged training inputs named: one line with the file and what is wrong, exit status 2.

A training reads nnU-Net's plans, ``dataset.json`` and ``splits_final.json`` (JSON, through
``batchgenerators``' ``load_json``), every case's properties (``<case>.pkl``, ``load_pickle``) and arrays
(``.b2nd``/``.npz``), and its checkpoints. A truncated or otherwise damaged file raises deep inside those
readers (``JSONDecodeError ... line 142``, ``pickle data was truncated``) with a traceback that does not
say which file. Here:

- :func:`check_case_files` reads every case's properties before training starts (a thousand small pickles
  take well under a second), so a damaged one stops the run at once instead of when a batch first draws it;
- :func:`read_case` is the loaders' ``load_case``: what cannot be read raises :class:`DamagedInput` naming the
  file; a loader worker hands it to the trainer in place of the batch, and the trainer raises it
  (:mod:`pgps.nnunet.loading.sampling`, :mod:`pgps.nnunet.loading.batches`), so no worker dies with a traceback;
- :func:`install_excepthook` (done when a pgps trainer is imported, i.e. by ``nnUNetv2_train -tr
  nnUNetTrainer_PGPS_...``) turns an uncaught :class:`DamagedInput`, or a decoding error raised inside one of
  the readers above (the file is then read from the reader's arguments), into that one line and exit status 2.
  Other errors keep their traceback.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

EXIT_DAMAGED = 2

READERS = {"load_json": "file", "load_pickle": "file"}
"""Functions of ``batchgenerators`` that read one file, and their argument naming it."""

DECODING = (json.JSONDecodeError, pickle.UnpicklingError, EOFError, UnicodeDecodeError)
"""What a reader raises for a file cut short or overwritten."""


class DamagedInput(ValueError):
    """A training input that cannot be read: ``path`` and what is wrong with it."""

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path, self.what = os.fspath(path), what
        super().__init__(f"{self.path}: {what}")


def describe(exc: BaseException) -> str:
    """What is wrong with a file, from the error its reader raised."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); is it cut short?"
    if isinstance(exc, pickle.UnpicklingError | EOFError):
        return f"not a complete pickle ({exc or 'ran out of input'}); is it cut short?"
    return f"cannot be read ({type(exc).__name__}: {exc})"


def file_of(exc: BaseException) -> str | None:
    """The file a decoding error was raised for: the argument of the innermost reader (:data:`READERS`) of its
    traceback; None if it was not raised inside one."""
    if not isinstance(exc, DECODING):
        return None
    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        argument = READERS.get(frame.f_code.co_name)
        value = frame.f_locals.get(argument) if argument else None
        if isinstance(value, str | os.PathLike):
            return os.fspath(value)
    return None


def damaged(exc: BaseException) -> DamagedInput | None:
    """``exc`` (or an exception it was raised from) as a :class:`DamagedInput`, if it is one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DamagedInput):
            return exc
        path = file_of(exc)
        if path is not None:
            return DamagedInput(path, describe(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def read_case(dataset, key: str) -> tuple:
    """``dataset.load_case(key)``; a case file that cannot be read raises :class:`DamagedInput` naming it."""
    try:
        return dataset.load_case(key)
    except DamagedInput:
        raise
    except Exception as exc:
        found = damaged(exc)
        if found is None:
            raise
        raise found from exc


def check_case_files(folder: str | os.PathLike, identifiers: Iterable[str]) -> None:
    """Read every case's properties (``<case>.pkl``) in nnU-Net's preprocessed ``folder``; raise
    :class:`DamagedInput` for the first that is missing or cannot be read."""
    for key in identifiers:
        path = Path(folder) / f"{key}.pkl"
        try:
            with open(path, "rb") as f:
                pickle.load(f)
        except FileNotFoundError:
            raise DamagedInput(path, "missing (the case is listed but has no properties file)") from None
        except Exception as exc:
            raise DamagedInput(path, describe(exc)) from None


def install_excepthook() -> None:
    """Report an uncaught damaged input as one line on stderr and exit with :data:`EXIT_DAMAGED` (idempotent)."""
    if getattr(sys.excepthook, "pgps_damaged_inputs", False):
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        found = damaged(value) if isinstance(value, BaseException) else None
        if found is None:
            return previous(kind, value, tb)
        sys.stdout.flush()
        print(f"PGPS: damaged input: {found}", file=sys.stderr, flush=True)
        os._exit(EXIT_DAMAGED)  # the interpreter would exit 1 after an excepthook; workers end with this process

    hook.pgps_damaged_inputs = True
    sys.excepthook = hook
