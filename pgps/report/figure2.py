"""Figure 2 (right-hand panel): patch size, batch size, input tensor size and FG balance over training.

One panel per dataset compares the strategies (CPS, PGPS-Efficiency, PGPS-Performance, ...)
from their schedule summaries (``pgps schedule --json``): each quantity is a step function of
the training epoch, one step per curriculum stage. Given measured telemetry, a fourth axis shows
the foreground-voxel share of the training batches per epoch.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter

from pgps.report import style
from pgps.report.schedules import Summary, first_epochs, stages, total_epochs
from pgps.schedule import Stage
from pgps.sizes import numel


def _size(size) -> str:
    return "\N{MULTIPLICATION SIGN}".join(str(int(v)) for v in size)


def panel_title(dataset: str, summary: Summary) -> str:
    """``'MSD_Lung: P_max = 80x192x160 voxels, b_base = 2'`` (with multiplication signs)."""
    p_max, b_base = _size(summary["patch_size_max"]), summary["batch_size_base"]
    return f"{dataset}: P$_{{max}}$ = {p_max} voxels, b$_{{base}}$ = {b_base}"


def step_curve(summary: Summary, value: Callable[[Stage], float]) -> tuple[list[int], list[float]]:
    """``(epochs, values)`` for ``drawstyle="steps-post"``: one point per stage start, one at E."""
    stage_list = stages(summary)
    values = [value(s) for s in stage_list]
    return [*first_epochs(stage_list), total_epochs(summary)], [*values, values[-1]]


def _legend_label(mode: str, summary: Summary) -> str:
    label = style.strategy(mode).label
    if mode == "cps":
        return label
    return f"{label} (FLOPs {float(summary['relative_voxels']):.0%} of CPS)"


def plot_schedule_panel(
    schedules: Mapping[str, Summary],
    title: str,
    foreground: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Figure:
    """Patch size, batch size and input tensor size over the training epochs, per strategy.

    ``schedules`` maps a mode (``pgps.MODES`` key) to its CLI summary; all must share P_max,
    b_base and the number of epochs. Patch size is shown as a share of numel(P_max), batch size
    on a log axis, the input tensor as b x numel(P) voxels per channel. RPSS, which draws a
    stage per iteration, is drawn as its range (band) and mean over stages (line).
    ``foreground`` (optional) maps a mode to measured ``(epochs, foreground-voxel share [0-1])``
    and adds a fourth axis with them (the article's FG balance).
    """
    if not schedules:
        raise ValueError("plot_schedule_panel needs at least one schedule")
    modes = style.ordered(schedules)
    first = schedules[modes[0]]
    for mode in modes:
        planned = (list(schedules[mode]["patch_size_max"]), schedules[mode]["batch_size_base"])
        if planned != (list(first["patch_size_max"]), first["batch_size_base"]):
            raise ValueError(f"schedule {mode!r} has another P_max or b_base than {modes[0]!r}")
    epochs = max(total_epochs(s) for s in schedules.values())
    voxels_max = numel(first["patch_size_max"])

    quantities: list[tuple[str, Callable[[Stage], float]]] = [
        ("patch size numel(P)\n[% of numel(P$_{max}$)]", lambda s: 100 * numel(s.patch_size) / voxels_max),
        ("batch size b\n[patches, log scale]", lambda s: s.batch_size),
        ("input tensor b\N{MIDDLE DOT}numel(P)\n[voxels per channel]", lambda s: s.tensor_voxels),
    ]

    with matplotlib.rc_context(style.RC):
        rows = len(quantities) + bool(foreground)
        fig = Figure(figsize=(6.3, 2.2 * rows), layout="constrained")
        axes = fig.subplots(rows, 1, sharex=True)
        for ax, (ylabel, value) in zip(axes, quantities, strict=False):
            for mode in modes:
                summary = schedules[mode]
                kwargs = style.strategy(mode).line_kwargs()
                kwargs["label"] = _legend_label(mode, summary)
                if mode == "rpss":
                    values = [value(s) for s in stages(summary)]
                    ax.axhspan(min(values), max(values), color=kwargs["color"], alpha=0.15, linewidth=0)
                    ax.axhline(statistics.fmean(values), **kwargs)
                else:
                    x, y = step_curve(summary, value)
                    ax.plot(x, y, drawstyle="steps-post", **kwargs)
            ax.set_ylabel(ylabel)
        patch_ax, batch_ax, tensor_ax = axes[:3]
        if foreground:
            fg_ax = axes[3]
            for mode in style.ordered(foreground):
                x, y = foreground[mode]
                fg_ax.plot(list(x), [100 * v for v in y], **{**style.strategy(mode).line_kwargs(), "label": None})
            fg_ax.set_ylabel("foreground voxels\n[% of batch, measured]")
            fg_ax.set_ylim(bottom=0)
        patch_ax.set_ylim(0, 105)
        batch_ax.set_yscale("log")
        batch_ax.yaxis.set_major_locator(LogLocator(base=10))
        batch_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        batch_ax.yaxis.set_minor_formatter(NullFormatter())
        lo, hi = batch_ax.get_ylim()
        batch_ax.set_ylim(min(lo, 1), max(hi, 10))
        tensor_ax.set_ylim(bottom=0)
        tensor_ax.yaxis.set_major_formatter(EngFormatter(sep="\N{THIN SPACE}"))
        axes[-1].set_xlim(0, epochs)
        axes[-1].set_xlabel("training epoch")
        handles, labels = patch_ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), frameon=False)
        fig.suptitle(title)
    return fig
