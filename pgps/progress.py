"""Progress of long steps, one way for every command and library function.

``enabled`` is the ``--progress`` / ``--no-progress`` of the commands: ``True`` draws a tqdm bar on stderr, ``False``
shows nothing, and ``None`` (the default) draws the bar on a terminal and otherwise logs a line about every tenth of
the way on the ``pgps`` logger (INFO: a job's log file shows the progress; ``-q`` silences it). tqdm is imported only
when a bar is drawn (``pgps[synth]``, ``pgps[nnunet]``); without it a bar falls back to the lines.

The bar is tqdm's; what is ours is the rest: tqdm's ``disable=None`` shows nothing off a terminal, where a job's log
should still say how far a step got, and ``pgps[report]`` and the core do not install tqdm.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def bar_wanted(enabled: bool | None) -> bool:
    """Whether ``enabled`` asks for a bar: ``True``, or ``None`` with stderr on a terminal (for tools that draw their
    own, such as nnU-Net's predictor)."""
    return bool(enabled) or (enabled is None and hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


class Progress:
    """Progress of one step of ``total`` units (``None``: unknown), from ``initial``; :meth:`update` to a count,
    :meth:`advance` by some, :meth:`close` at the end (or use it as a context manager)."""

    def __init__(self, desc: str, total: int | None = None, enabled: bool | None = None, unit: str = "it",
                 initial: int = 0) -> None:  # fmt: skip
        self.desc, self.total, self.unit, self.n = desc, total, unit, initial
        self.bar: Any = None
        self.lines = False
        if bar_wanted(enabled):
            try:
                from tqdm import tqdm
            except ImportError:
                if enabled:
                    warnings.warn("tqdm is not installed: progress shows as log lines (pip install tqdm)", stacklevel=3)
                enabled = None
            else:
                self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit == "B",
                                file=sys.stderr)  # fmt: skip
        if self.bar is None and enabled is None:
            self.lines = True
            smallest = 1 << 24 if unit == "B" else 1
            self.step = max(smallest, total // 10) if total else 1000 * smallest
            self.next_line = initial + self.step

    def advance(self, n: int = 1) -> None:
        self.update(self.n + n)

    def update(self, n: int) -> None:
        if n == self.n:
            return
        if self.bar is not None:
            self.bar.update(n - self.n)
        self.n = n
        if self.lines and (n >= self.next_line or n == self.total):
            self.next_line = n + self.step
            log.info("%s: %d%s %s", self.desc, n, f"/{self.total}" if self.total else "", self.unit)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    items: Iterable[T], desc: str, total: int | None = None, enabled: bool | None = None, unit: str = "it"
) -> Iterator[T]:
    """``items``, one :class:`Progress` step each."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, enabled, unit) as bar:
        for item in items:
            yield item
            bar.advance()
