"""One look for every figure: each strategy's colour, label and line, and print-sized defaults.

Figures are built as ``matplotlib.figure.Figure`` objects, without pyplot: no GUI backend and no
global figure state, so rendering works headless (the Agg canvas draws PNGs).

Colours follow the article (CPS grey, PGPS-Efficiency green, PGPS-Performance orange), taken
from the Okabe-Ito palette so they stay apart for colour-blind readers and in greyscale print,
where the line styles also differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pgps import names


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How a training strategy (a ``pgps.MODES`` key) is drawn."""

    label: str
    color: str
    linestyle: str = "-"
    linewidth: float = 1.8
    zorder: float = 2.0
    marker: str = "o"
    """Where a strategy is drawn as points: their shape (told apart in greyscale print, as the line styles are)."""

    def line_kwargs(self) -> dict:
        """Keyword arguments for ``Axes.plot``."""
        return {
            "label": self.label,
            "color": self.color,
            "linestyle": self.linestyle,
            "linewidth": self.linewidth,
            "zorder": self.zorder,
        }


_LINES = {  # CPS wide and underneath, so the PGPS lines that coincide with it stay visible on top
    "cps": ("#6E6E6E", "-", 3.2, 1.0),
    "efficiency": ("#009E73", "--", 2.0, 3.0),
    "performance": ("#E69F00", "-", 2.0, 2.0),
    "miccai": ("#56B4E9", "-."),
    "miccai-plus": ("#D55E00", ":"),
    "rpss": ("#CC79A7", "-"),
    "progressive-resolution": ("#0072B2", (0, (5, 1, 1, 1))),
}
_MARKERS = {"cps": "o", "efficiency": "s", "performance": "^", "miccai": "v", "miccai-plus": "P", "rpss": "X",
            "progressive-resolution": "p"}  # fmt: skip
STRATEGIES: dict[str, Strategy] = {
    key: Strategy(names.MODES[key].label, *line, marker=_MARKERS[key]) for key, line in _LINES.items()
}
"""Strategy (a :data:`pgps.names.MODES` key) -> how every figure draws it (labels from the table of names)."""

ORDER: tuple[str, ...] = tuple(STRATEGIES)
"""Order of strategies in legends and tables: baseline first."""


SAMPLERS: dict[str, Strategy] = {
    name: dataclasses.replace(STRATEGIES["performance"], label=f"PGPS-Performance, {names.SAMPLERS[name].label}",
                              linestyle=line)
    for name, line in (("split_crop", "-"), ("single_crop", "--"), ("multi_crop", ":"), ("single_volume", "-."))
}  # fmt: skip
"""PGPS-Performance's batch constructions (Figure A.6): the strategy's colour, one line style each."""

HATCHES: dict[str, str] = {"split_crop": "", "single_crop": "//", "multi_crop": "..", "single_volume": "xx"}
"""Bar hatches of the batch constructions (same colour, told apart in greyscale print too)."""

PUBLISHED_MARKER: dict = {
    "marker": "D",
    "markerfacecolor": "none",
    "markeredgecolor": "black",
    "markeredgewidth": 1.0,
    "markersize": 5,
    "linestyle": "none",
    "zorder": 5,
}
"""How the article's published values are overlaid on our figures (hollow black diamonds)."""


def legend(fig: Figure, handles: list, labels: list, published: str | None = None, ncols: int | None = None) -> None:
    """The figure's legend below its axes; ``published`` (the source's name) adds the published-value marker."""
    handles, labels = list(handles), list(labels)
    if published:
        handles.append(Line2D([], [], **PUBLISHED_MARKER))
        labels.append(published)
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols or len(labels), frameon=False)


def draw_gap(ax, text: str) -> None:
    """Write ``text`` in the middle of ``ax``: the explicit gap of a figure without runs."""
    ax.text(
        0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=8, color="0.25",
        bbox={"boxstyle": "round", "facecolor": "0.95", "edgecolor": "0.6"},
    )  # fmt: skip


def strategy(mode: str) -> Strategy:
    """The style of ``mode``; a clear error for an unknown one."""
    try:
        return STRATEGIES[mode]
    except KeyError:
        raise ValueError(f"no figure style for strategy {mode!r}; known: {', '.join(STRATEGIES)}") from None


def ordered(modes: Iterable[str]) -> list[str]:
    """``modes`` in :data:`ORDER`."""
    modes = list(modes)
    for m in modes:
        strategy(m)
    return sorted(modes, key=ORDER.index)


RC: dict = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.5,
    "grid.alpha": 0.4,
}
"""Matplotlib settings for print (use with ``matplotlib.rc_context(RC)`` while building a figure)."""

DPI = 300
"""Resolution of PNGs."""


SAVE_RC: dict = {"pdf.fonttype": 42, "ps.fonttype": 42}
"""Settings that act when a figure is *saved*, not built: TrueType (Type 42) fonts in PDF/PS, never Type 3."""


def save_figure(fig: Figure, *paths: str | Path) -> None:
    """Write ``fig`` to every path (the format follows the suffix), creating folders; PDFs embed TrueType fonts."""
    with matplotlib.rc_context(SAVE_RC):  # the PDF backend reads pdf.fonttype while saving
        for path in paths:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=_metadata(path))


def _metadata(path: Path) -> dict | None:
    # Fixed metadata keeps PDFs and PNGs byte-stable across re-renders (no creation date).
    if path.suffix == ".pdf":
        return {"Creator": "pgps", "Producer": None, "CreationDate": None}
    if path.suffix == ".png":
        return {"Software": "pgps"}
    return None
