"""The article's Figures 2, 3, 4, 5 and A.6 from the collected results, each with its key numbers.

Every ``figureN`` function returns ``(matplotlib Figure, Table)``: the figure, and a small
:class:`~pgps.report.table.Table` of the numbers it shows, which the report writes and sets beside
the article's published values. Where the article prints a number for a figure, the figure also
draws it (hollow black diamonds). A figure without runs is still drawn, with its axes and a note
that says what it needs.

- Figure 2: the schedules (patch, batch, tensor size) and the measured foreground share of the
  main-grid runs of one dataset (MSD Lung in the article), via :mod:`pgps.report.figure2`;
- Figure 3: Dice over training lengths per dataset, and their average after normalizing each
  dataset by its best Dice over strategies and lengths;
- Figure 4: foreground share, classes present per batch and input tensor size per epoch (BTCV);
- Figure 5: Dice of repeated runs (seeds on one fold) per training length, and how often each
  strategy beats both others over all combinations of one run per strategy (Section 3.6);
- Figure A.6: PGPS-Performance's batch constructions on MSD Lung: pseudo Dice over epochs and
  final Dice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, FixedLocator, NullLocator

from pgps.report import datasets as ds
from pgps.report import stats, style
from pgps.report.convergence import smooth_pseudo_dice
from pgps.report.figure2 import panel_title, plot_schedule_panel
from pgps.report.results import aggregate, select
from pgps.report.table import Column, Rank, Table, cell
from pgps.report.tables import JOURNAL_MODES, SAMPLER_LABELS, SHORT, with_effective_sampler

ARTICLE_LENGTHS = (1, 10, 25, 50, 100)
REPEAT_LENGTHS = (1, 10, 100)


def gap_figure(title: str, message: str, size: tuple[float, float] = (6.3, 3.0)) -> Figure:
    """A figure that says what it lacks: ``title`` and ``message`` in a box (the explicit gap of a figure)."""
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.subplots()
        ax.set_axis_off()
        style.draw_gap(ax, message)
        fig.suptitle(title)
    return fig


def _pick(candidates: Sequence[str], preferred: str) -> str | None:
    """``preferred`` if it is among ``candidates``, else the first candidate in the article's order."""
    if preferred in candidates:
        return preferred
    ordered = ds.ordered(candidates)
    return ordered[0] if ordered else None


def _runs(frame: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``frame`` whose run has telemetry in ``epochs``."""
    if not len(epochs) or "run" not in epochs:
        return frame.iloc[:0]
    return frame[frame["run"].isin(set(epochs["run"]))]


def _per_epoch(epochs: pd.DataFrame, runs: Sequence[int], column: str) -> pd.DataFrame:
    """``epoch -> mean, min, max`` of ``column`` over the runs (folds)."""
    e = epochs[epochs["run"].isin(list(runs))]
    return e.groupby("epoch")[column].agg(["mean", "min", "max"]).reset_index()


# -- Figure 2 ------------------------------------------------------------------------------------------
def figure2(
    results: pd.DataFrame, epochs: pd.DataFrame, schedules: Mapping[str, dict], dataset: str | None = None
) -> tuple[Figure, Table]:
    """Figure 2 for ``dataset`` (default: MSD Lung, else the first dataset with schedules)."""
    main = select(results, modes=JOURNAL_MODES)
    with_schedule = main[main["run"].astype(str).isin(set(schedules))]
    dataset = dataset or _pick(list(with_schedule["dataset"].unique()), "MSD_Lung")
    table = _figure2_table(main)
    title = "Curriculum schedules over training"
    if dataset is None:
        return gap_figure(title, "No run has written its schedule (pgps_summary.json) yet."), table
    summaries, foreground = {}, {}
    for mode in JOURNAL_MODES:
        runs = with_schedule[(with_schedule["dataset"] == dataset) & (with_schedule["mode"] == mode)]
        if not len(runs):
            continue
        summaries[mode] = schedules[str(runs.sort_values("fold")["run"].iloc[0])]
        measured = _runs(main[(main["dataset"] == dataset) & (main["mode"] == mode)], epochs)
        if len(measured):
            curve = _per_epoch(epochs, measured["run"], "fg_voxel_share")
            foreground[mode] = (curve["epoch"].tolist(), curve["mean"].tolist())
    try:
        panel = panel_title(ds.label(dataset), next(iter(summaries.values())))
        fig = plot_schedule_panel(summaries, panel, foreground)
    except ValueError as exc:  # e.g. runs of one dataset planned with different sizes
        return gap_figure(title, f"{ds.label(dataset)}: {exc}"), table
    return fig, table


def _figure2_table(main: pd.DataFrame) -> Table:
    datasets = ds.ordered(main["dataset"].unique(), first=ds.ARTICLE_DATASETS)
    first = main.sort_values(["dataset", "mode", "fold"]).groupby(["dataset", "mode"]).first() if len(main) else None
    columns = [
        Column("stages.performance", "", "stages", digits=0),
        Column("first_batch.performance", "PGPS-Perf", "first batch size", digits=0),
        Column("relvoxels.efficiency", "planned rel. FLOPs [%]", SHORT["efficiency"], digits=1),
        Column("relvoxels.performance", "planned rel. FLOPs [%]", SHORT["performance"], digits=1),
    ]
    cells = []
    for d in datasets:
        for key, mode, source, scale in (
            ("stages.performance", "performance", "num_stages", 1),
            ("first_batch.performance", "performance", "first_batch_size", 1),
            ("relvoxels.efficiency", "efficiency", "planned_relative_voxels", 100),
            ("relvoxels.performance", "performance", "planned_relative_voxels", 100),
        ):
            found = first is not None and (d, mode) in first.index and source in first.columns
            value = scale * float(first.loc[(d, mode), source]) if found else math.nan
            cells.append(cell(d, key, value, n=int(math.isfinite(value))))
    return Table(
        name="figure2",
        title="Figure 2: the schedules' stages, first batch size and planned FLOPs relative to CPS",
        row_key="dataset",
        row_header="Dataset",
        rows=[(d, ds.label(d)) for d in datasets],
        columns=columns,
        cells=pd.DataFrame(cells),
        notes=["From each dataset's main-grid run with the lowest fold (pgps_summary.json's schedule)."],
    )


# -- Figure 3 ------------------------------------------------------------------------------------------
FEW_LENGTHS = 3
"""Up to this many training lengths, Figure 3 sets the strategies side by side at each length (points with the
SD over folds); with more, it draws each strategy's line over a log axis of the lengths."""


def figure3(results: pd.DataFrame, published: Mapping[tuple[str, str], float] | None = None) -> tuple[Figure, Table]:
    """Figure 3: Dice over training lengths. ``published``: ``(dataset, mode) -> Dice [%]`` at 100%."""
    sel = select(results, length=None, modes=JOURNAL_MODES)
    agg = aggregate(sel)
    agg = agg[agg["dice"].notna()]
    lengths = sorted(set(ARTICLE_LENGTHS) | set(sel["length"].astype(int)))
    dice = {(r["dataset"], r["mode"], int(r["length"])): 100 * r["dice"] for r in agg.to_dict("records")}
    sd = {(r["dataset"], r["mode"], int(r["length"])): 100 * r["dice_sd"] for r in agg.to_dict("records") if r["n"] > 1}
    datasets = ds.ordered(agg["dataset"].unique())
    best = {d: max(v for (dd, _, _), v in dice.items() if dd == d) for d in datasets}
    normalized = {}  # (mode, length) -> (mean over datasets of Dice / its best x 100, datasets)
    for mode in JOURNAL_MODES:
        for n in lengths:
            have = [d for d in datasets if (d, mode, n) in dice]
            value, count = stats.normalized_average([dice[d, mode, n] for d in have], [best[d] for d in have])
            if count:
                normalized[mode, n] = (value, count)
    table = _figure3_table(ds.ordered(sel["dataset"].unique(), first=ds.ARTICLE_DATASETS), lengths, dice, normalized)
    title = "Convergence over training lengths"
    if not datasets:
        return gap_figure(title, "No finished runs of CPS / PGPS-Efficiency / PGPS-Performance yet."), table
    measured = sorted({n for _, _, n in dice})
    grouped = len(measured) <= FEW_LENGTHS
    if grouped:  # the lengths with a value, and 100% where the article's values are drawn
        lengths = sorted(set(measured) | ({100} if published else set()))
    panels = [*datasets, "norm_avg"]
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(max(6.3, 1.9 * ncols + 0.6), 1.8 * nrows + 1.0), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        drew_published = False
        for ax, panel in zip(axes, panels, strict=False):
            if panel == "norm_avg":
                curves = {m: {n: normalized[m, n][0] for n in lengths if (m, n) in normalized} for m in JOURNAL_MODES}
                spread = {}  # the normalized average has no spread over folds
            else:
                curves = {m: {n: dice[panel, m, n] for n in lengths if (panel, m, n) in dice} for m in JOURNAL_MODES}
                spread = {m: {n: sd[panel, m, n] for n in curves[m] if (panel, m, n) in sd} for m in JOURNAL_MODES}
            at_100 = {m: published[panel, m] for m in JOURNAL_MODES if published and (panel, m) in published}
            if grouped:
                drew_published |= _figure3_grouped(ax, curves, spread, at_100, lengths)
            else:
                drew_published |= _figure3_lines(ax, curves, at_100, lengths)
            ax.set_title("Normalized average" if panel == "norm_avg" else ds.label(panel))
        for ax in axes[len(panels) :]:
            ax.set_axis_off()
        for ax in axes[::ncols]:
            ax.set_ylabel("Dice [%]")
        axes[len(panels) - 1].set_ylabel("Dice [% of best]")
        for i, ax in enumerate(axes[: len(panels)]):
            if i + ncols >= len(panels):  # nothing drawn below it
                ax.set_xlabel("training length [% of nnU-Net's iterations]")
        style.legend(fig, *axes[0].get_legend_handles_labels(), "article, Table 1 (100%)" if drew_published else None)
        fig.suptitle(title + ("" if grouped else " (log scale)"))
    return fig, table


def _length_axis(ax, lengths: Sequence[int]) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(list(lengths)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{n:g}" for n in lengths])


def _figure3_lines(ax, curves: Mapping[str, Mapping[int, float]], at_100: Mapping[str, float], lengths) -> bool:
    """One panel of Figure 3 with many lengths: each strategy's Dice over a log axis of the lengths, the published
    100% values as diamonds."""
    for mode, points in curves.items():
        if points:
            ax.plot(list(points), list(points.values()), marker="o", markersize=3, **style.strategy(mode).line_kwargs())
    for mode, value in at_100.items():
        ax.plot([100], [value], **{**style.PUBLISHED_MARKER, "markeredgecolor": style.strategy(mode).color})
    _length_axis(ax, lengths)
    ax.set_xlim(min(lengths) / 1.5, max(lengths) * 1.5)
    ax.tick_params(axis="x", labelsize=7)
    return bool(at_100)


def _figure3_grouped(
    ax,
    curves: Mapping[str, Mapping[int, float]],
    spread: Mapping[str, Mapping[int, float]],
    at_100: Mapping[str, float],
    lengths: Sequence[int],
) -> bool:
    """One panel of Figure 3 with few lengths: at each length the strategies side by side, a point (mean over folds)
    with the SD over folds as its error bar (none from one fold), and the published 100% value as a diamond beside
    it."""
    modes = [m for m in JOURNAL_MODES if curves.get(m) or m in at_100]
    width = 0.7 / max(1, len(modes))
    for j, mode in enumerate(modes):
        s = style.strategy(mode)
        offset = (j - (len(modes) - 1) / 2) * width
        points = curves.get(mode, {})
        if points:
            x = [lengths.index(n) + offset for n in points]
            sds = spread.get(mode, {})
            yerr = [sds.get(n, math.nan) for n in points] if sds else None  # NaN: no bar
            ax.errorbar(x, list(points.values()), yerr=yerr, fmt=s.marker, color=s.color, markersize=5, capsize=3,
                        elinewidth=1.0, label=s.label, zorder=3)  # fmt: skip
        if mode in at_100 and 100 in lengths:
            x100 = lengths.index(100) + offset + width * 0.35
            ax.plot([x100], [at_100[mode]], **{**style.PUBLISHED_MARKER, "markeredgecolor": s.color})
    ax.set_xticks(range(len(lengths)), [f"{n:g}" for n in lengths])
    ax.set_xlim(-0.6, len(lengths) - 0.4)
    ax.grid(False, axis="x")
    return bool(at_100) and 100 in lengths


def _figure3_table(rows: Sequence[str], lengths, dice: Mapping[tuple, float], normalized: Mapping[tuple, tuple]):
    cells = [
        cell(d, f"{m}|{n}", dice.get((d, m, n), math.nan), n=int((d, m, n) in dice))
        for d in rows
        for m in JOURNAL_MODES
        for n in lengths
    ]
    for m in JOURNAL_MODES:
        for n in lengths:
            value, count = normalized.get((m, n), (math.nan, 0))
            cells.append(cell("norm_avg", f"{m}|{n}", value, n=count))
    return Table(
        name="figure3",
        title="Figure 3: Dice [%] over training lengths (% of nnU-Net's iterations)",
        row_key="dataset",
        row_header="Dataset",
        rows=[(d, ds.label(d)) for d in rows] + [("norm_avg", "Normalized average [% of best]")],
        columns=[Column(f"{m}|{n}", SHORT[m], f"{n}%") for m in JOURNAL_MODES for n in lengths],
        cells=pd.DataFrame(cells),
        ranks=[Rank(tuple(f"{m}|{n}" for m in JOURNAL_MODES), "max") for n in lengths],
        notes=[
            "Main grid (seed 0) at every training length; Dice = mean over folds. Normalized average: each dataset's "
            "Dice divided by its best over strategies and lengths, averaged over the datasets that have the value.",
        ],
    )


# -- Figure 4 ------------------------------------------------------------------------------------------
FIGURE4_PUBLISHED_NOTE = "article Sec. 4.2 (BTCV)"


FIGURE4_QUANTITIES = (
    ("fg", "fg_voxel_share", "foreground voxels [% of batch]", 100.0),
    ("classes", "class_presence_share", "classes present [% of classes]", 100.0),
    ("tensor", "tensor_voxels", "input tensor b·numel(P)\n[voxels per channel]", 1.0),
)
"""Figure 4's panels: key, telemetry column, axis label, scale."""


def figure4(
    results: pd.DataFrame, epochs: pd.DataFrame, published: Mapping[tuple[str, str], float] | None = None
) -> tuple[Figure, Table]:
    """Figure 4: foreground share, classes per batch and input tensor size per epoch (BTCV, else the
    first dataset with telemetry). ``published``: ``(row, column) -> value`` of the figure's table."""
    main = select(results, modes=JOURNAL_MODES)
    measured = _runs(main, epochs)
    dataset = _pick(list(measured["dataset"].unique()), "BTCV")
    curves: dict[str, dict[str, pd.DataFrame]] = {}
    if dataset is not None:
        e = epochs.assign(
            tensor_voxels=epochs["iterated_voxels"] / epochs["iterations"].where(epochs["iterations"] > 0)
        )
        for mode in JOURNAL_MODES:
            runs = measured[(measured["dataset"] == dataset) & (measured["mode"] == mode)]["run"]
            if len(runs):
                curves[mode] = {key: _per_epoch(e, runs, column) for key, column, _, _ in FIGURE4_QUANTITIES}
    table = _figure4_table(dataset, curves)
    title = f"Training characteristics{'' if dataset is None else ' (' + ds.label(dataset) + ')'}"
    if not curves:
        return gap_figure(title, "No main-grid run has written telemetry (pgps_telemetry.csv) yet.", (7.2, 2.8)), table
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(7.2, 2.8), layout="constrained")
        axes = fig.subplots(1, len(FIGURE4_QUANTITIES))
        for ax, (key, _, ylabel, scale) in zip(axes, FIGURE4_QUANTITIES, strict=True):
            _figure4_panel(ax, {mode: c[key] for mode, c in curves.items()}, scale, ylabel)
        axes[0].set_ylim(bottom=0)
        axes[1].set_ylim(0, 105)
        axes[2].set_ylim(bottom=0)
        axes[2].yaxis.set_major_formatter(EngFormatter(sep="\N{THIN SPACE}"))
        shown = published if published and dataset == "BTCV" else {}
        for (row, col), value in shown.items():  # the article's classes-per-batch values, on the middle panel
            mode = row.split("|")[1]
            if col.startswith("classes.") and mode in curves:
                x = 0 if col.endswith("first") else curves[mode]["classes"]["epoch"].iloc[-1]
                axes[1].plot([x], [value], **{**style.PUBLISHED_MARKER, "markeredgecolor": style.strategy(mode).color})
        style.legend(fig, *axes[0].get_legend_handles_labels(), FIGURE4_PUBLISHED_NOTE if shown else None)
        fig.suptitle(title)
    return fig, table


def _figure4_panel(ax, curves: Mapping[str, pd.DataFrame], scale: float, ylabel: str) -> None:
    """One panel of Figure 4: per strategy the mean over folds per epoch, and its min-max band."""
    for mode in style.ordered(curves):
        c = curves[mode]
        kwargs = style.strategy(mode).line_kwargs()
        ax.fill_between(c["epoch"], scale * c["min"], scale * c["max"], color=kwargs["color"], alpha=0.15, linewidth=0)
        ax.plot(c["epoch"], scale * c["mean"], **kwargs)
    ax.set_xlabel("training epoch")
    ax.set_ylabel(ylabel)


def _figure4_table(dataset: str | None, curves: Mapping[str, Mapping[str, pd.DataFrame]]) -> Table:
    rows = [f"BTCV|{m}" for m in JOURNAL_MODES]
    if dataset not in (None, "BTCV"):
        rows += [f"{dataset}|{m}" for m in JOURNAL_MODES]
    cells = []
    cps_tensor = curves["cps"]["tensor"]["mean"].mean() if "cps" in curves else math.nan
    for row in rows:
        d, mode = row.split("|")
        c = curves.get(mode) if d == dataset else None
        for key, scale in (("fg", 100), ("classes", 100)):
            first = scale * c[key]["mean"].iloc[0] if c is not None else math.nan
            mean = scale * c[key]["mean"].mean() if c is not None else math.nan
            cells += [
                cell(row, f"{key}.first", first, n=int(c is not None)),
                cell(row, f"{key}.mean", mean, n=int(c is not None)),
            ]
        tensor = 100 * c["tensor"]["mean"].mean() / cps_tensor if c is not None else math.nan
        cells.append(cell(row, "tensor.mean", tensor, n=int(math.isfinite(tensor))))
    return Table(
        name="figure4",
        title="Figure 4: batch statistics over training (first epoch and mean over epochs)",
        row_key="dataset|mode",
        row_header="Dataset, strategy",
        rows=[(r, f"{ds.label(r.split('|')[0])}, {SHORT[r.split('|')[1]]}") for r in rows],
        columns=[
            Column("fg.first", "foreground voxels [%]", "first epoch"),
            Column("fg.mean", "foreground voxels [%]", "mean"),
            Column("classes.first", "classes present [%]", "first epoch", digits=1),
            Column("classes.mean", "classes present [%]", "mean", digits=1),
            Column("tensor.mean", "input tensor [% of CPS]", "mean", digits=1),
        ],
        cells=pd.DataFrame(cells),
        notes=["Main-grid runs; per epoch the mean over folds of the batch statistics pgps_telemetry.csv records."],
    )


# -- Figure 5 ------------------------------------------------------------------------------------------
def repeated_runs(results: pd.DataFrame) -> dict[tuple[str, int], dict]:
    """The repeated-run experiment: ``(dataset, length) -> {"fold", "dice": {mode: [Dice %]}}`` for every
    dataset and length with at least two seeds on one fold (the fold with the most seeds)."""
    sel = select(results, length=None, seed=None, modes=JOURNAL_MODES)
    out = {}
    for (d, n), g in sel.groupby(["dataset", "length"], sort=False):
        seeds = g.groupby("fold")["seed"].nunique()
        if not len(seeds) or seeds.max() < 2:
            continue
        fold = int(seeds[seeds == seeds.max()].index.min())
        g = g[g["fold"] == fold]
        outcomes = {m: [100 * v for v in g.loc[g["mode"] == m, "dice"] if math.isfinite(v)] for m in JOURNAL_MODES}
        out[d, int(n)] = {
            "fold": fold,
            "dice": outcomes,
            "runs": {m: int((g["mode"] == m).sum()) for m in JOURNAL_MODES},
        }
    return out


def figure5(
    results: pd.DataFrame, published: Mapping[tuple[str, str], tuple[float, float]] | None = None
) -> tuple[Figure, Table]:
    """Figure 5: repeated runs per strategy and length, with win shares over all combinations.

    ``published``: ``(row, column) -> (value, spread)`` of the figure's table (article Section 4.5)."""
    repeats = repeated_runs(results)
    datasets = ds.ordered({d for d, _ in repeats}, first=("BTCV", "MSD_Lung"))
    lengths = {d: sorted(set(REPEAT_LENGTHS) | {n for dd, n in repeats if dd == d}) for d in datasets}
    cells, rows = [], []
    for d in datasets:
        for n in lengths[d]:
            key = f"{d}|{n}"
            rows.append((key, f"{ds.label(d)}, {n}%"))
            r = repeats.get((d, n))
            outcomes = r["dice"] if r else {}
            wins = stats.win_counts(outcomes) if r else {}
            total = stats.combinations(outcomes) if r else 0
            for m in JOURNAL_MODES:
                mean, sd, k = stats.mean_sd(outcomes.get(m, []))
                runs = r["runs"][m] if r else 0
                cells.append(cell(key, f"{m}|mean", mean, sd=sd, n=k, runs=runs))
                share = 100 * wins[m] / total if total else math.nan
                cells.append(cell(key, f"{m}|wins", share, n=total))
            cells.append(cell(key, "combinations", total if total else math.nan, n=total))
    columns = [Column(f"{m}|mean", "Dice [%] (mean ± SD over seeds)", SHORT[m], sd_digits=2) for m in JOURNAL_MODES]
    columns += [Column(f"{m}|wins", "beats both others [% of combinations]", SHORT[m], digits=1) for m in JOURNAL_MODES]
    columns.append(Column("combinations", "", "combinations", digits=0))
    table = Table(
        name="figure5",
        title="Figure 5: repeated runs (seeds on one fold): Dice and wins over all combinations",
        row_key="dataset|length",
        row_header="Dataset, length",
        rows=rows,
        columns=columns,
        cells=pd.DataFrame(cells),
        ranks=[Rank(tuple(f"{m}|mean" for m in JOURNAL_MODES))],
        notes=[
            "A combination takes one run per strategy (5 × 5 × 5 = 125 with five seeds each); a strategy wins it when "
            "its Dice beats both others (ties: nobody). SD: sample SD over seeds.",
        ],
    )
    title = "Stochastic variability of repeated runs"
    if not repeats:
        return gap_figure(title, "No repeated runs (two or more seeds on one fold) in these results."), table
    shown = [d for d in datasets if any((d, n) in repeats for n in lengths[d])]
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(3.4 * len(shown) + 0.4, 3.2), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(shown), squeeze=False)).ravel()
        drew_published = False
        for ax, d in zip(axes, shown, strict=True):
            drew_published |= _figure5_panel(ax, d, lengths[d], repeats, table, published or {})
            fold = next(r["fold"] for (dd, _), r in repeats.items() if dd == d)
            ax.set_title(f"{ds.label(d)} (fold {fold})", pad=12)
        handles = [
            Line2D([], [], marker="o", linestyle="none", color=style.strategy(m).color, label=style.strategy(m).label)
            for m in JOURNAL_MODES
        ]
        style.legend(
            fig, handles, [h.get_label() for h in handles], "article, Sec. 4.5 (mean ± SD)" if drew_published else None
        )
        fig.suptitle(f"{title}\n(dots: seeds; bars: mean ± SD; % above: share of combinations won)")
    return fig, table


DODGE = 0.8
"""Width the strategies of one training length share on Figure 5's axis (seaborn's default dodge width)."""


def _figure5_panel(ax, dataset: str, lengths, repeats, table: Table, published) -> bool:
    """One dataset of Figure 5: the seeds as a seaborn swarm per length and strategy (deterministic placement),
    mean ± SD bars, the share of combinations each strategy won above, the article's mean ± SD as diamonds."""
    import seaborn as sns

    frame = pd.DataFrame(
        [
            {"length": f"{n}%", "mode": m, "dice": v}
            for n in lengths
            for m in JOURNAL_MODES
            for v in (repeats[dataset, n]["dice"][m] if (dataset, n) in repeats else [])
        ],
        columns=["length", "mode", "dice"],
    )
    palette = {m: style.strategy(m).color for m in JOURNAL_MODES}
    order = [f"{n}%" for n in lengths]
    sns.swarmplot(frame, x="length", y="dice", hue="mode", order=order, hue_order=list(JOURNAL_MODES),
                  palette=palette, dodge=True, size=3, alpha=0.8, legend=False, ax=ax)  # fmt: skip
    drew = False
    for i, n in enumerate(lengths):
        for j, m in enumerate(JOURNAL_MODES):
            color = style.strategy(m).color
            x0 = i + (j - (len(JOURNAL_MODES) - 1) / 2) * DODGE / len(JOURNAL_MODES)
            c = table.cell(f"{dataset}|{n}", f"{m}|mean")
            if math.isfinite(c["value"]):
                sd = 0 if math.isnan(c["sd"]) else c["sd"]
                ax.errorbar([x0], [c["value"]], yerr=[sd], fmt="_", color=color, markersize=12, capsize=3, zorder=4)
                wins = table.value(f"{dataset}|{n}", f"{m}|wins")
                ax.annotate(f"{wins:.0f}%", (x0, 1.0), xycoords=("data", "axes fraction"), ha="center",
                            va="bottom", fontsize=7, color=color)  # fmt: skip
            if (f"{dataset}|{n}", f"{m}|mean") in published:
                value, spread = published[f"{dataset}|{n}", f"{m}|mean"]
                ax.errorbar([x0 + 0.1], [value], yerr=[0 if math.isnan(spread) else spread], ecolor="black",
                            elinewidth=0.8, **{**style.PUBLISHED_MARKER, "markeredgecolor": color})  # fmt: skip
                drew = True
    ax.set_xticks(range(len(lengths)), order)
    ax.set_xlim(-0.6, len(lengths) - 0.4)
    ax.set_xlabel("training length [% of iterations]")
    ax.set_ylabel("Dice [%]")
    return drew


# -- Figure A.6 ------------------------------------------------------------------------------------------
A6_VARIANTS = ("cps", "split_crop", "single_crop", "multi_crop", "single_volume")


def _variant_style(variant: str) -> style.Strategy:
    return style.strategy("cps") if variant == "cps" else style.SAMPLERS[variant]


def figureA6(
    results: pd.DataFrame, epochs: pd.DataFrame, published: Mapping[tuple[str, str], float] | None = None
) -> tuple[Figure, Table]:
    """Figure A.6: batch constructions of PGPS-Performance (MSD Lung, else the dataset with the most)."""
    sel = with_effective_sampler(select(results, sampler=None, modes=("cps", "performance")))
    sel = sel[(sel["mode"] == "performance") | (sel["sampler"] == "default")]
    sel = sel.assign(variant=np.where(sel["mode"] == "cps", "cps", sel["sampler"]))
    perf = sel[sel["mode"] == "performance"]
    counts = perf.groupby("dataset")["sampler"].nunique() if len(perf) else pd.Series(dtype=int)
    dataset = "MSD_Lung" if "MSD_Lung" in counts.index else (counts.idxmax() if len(counts) else None)
    agg = aggregate(sel[sel["dataset"] == dataset]) if dataset else pd.DataFrame(columns=["mode", "sampler"])
    by = {("cps" if r["mode"] == "cps" else r["sampler"]): r for r in agg.to_dict("records")}
    table = _figureA6_table(dataset, by)
    title = f"Batch constructions of PGPS-Performance{'' if dataset is None else ' (' + ds.label(dataset) + ')'}"
    if dataset is None:
        return gap_figure(title, "No PGPS-Performance runs in these results.", (7.2, 3.0)), table
    measured = _runs(sel[sel["dataset"] == dataset], epochs)
    variants = [v for v in A6_VARIANTS if v in by or v in set(measured["variant"])]
    published = {
        v: published[f"{dataset}|{v}", "dice"] for v in variants if (f"{dataset}|{v}", "dice") in (published or {})
    }
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(7.2, 3.0), layout="constrained")
        curve_ax, bar_ax = fig.subplots(1, 2, width_ratios=(1.6, 1))
        _figureA6_curves(curve_ax, variants, measured, epochs)
        _figureA6_bars(bar_ax, variants, by, published)
        handles, labels = curve_ax.get_legend_handles_labels()
        handles.append(Line2D([], [], marker="o", markersize=3, color="black", linestyle="none"))
        labels.append("validation Dice per fold")
        style.legend(fig, handles, labels, "article, Table A.4" if published else None, ncols=3)
        fig.suptitle(title)
    return fig, table


def _figureA6_curves(ax, variants: Sequence[str], measured: pd.DataFrame, epochs: pd.DataFrame) -> None:
    """Left panel: nnU-Net's smoothed pseudo Dice per epoch of each batch construction (mean over folds)."""
    for v in variants:
        runs = measured[measured["variant"] == v]["run"]
        if len(runs):
            e = epochs[epochs["run"].isin(list(runs))].sort_values("epoch")
            smooth = e.groupby("run", group_keys=False)["pseudo_dice"].apply(smooth_pseudo_dice)
            curve = e.assign(smooth=smooth).groupby("epoch")["smooth"].mean()
            ax.plot(curve.index, 100 * curve.values, **_variant_style(v).line_kwargs())
    ax.set_xlabel("training epoch")
    ax.set_ylabel("pseudo Dice (EMA) at P$_{max}$ [%]")
    ax.set_ylim(bottom=0)


def _figureA6_bars(ax, variants: Sequence[str], by: Mapping[str, dict], published: Mapping[str, float]) -> None:
    """Right panel: final validation Dice per batch construction (bars: mean; dots: folds; diamonds: the
    article's). The axis starts below the lowest value, and says so when that is not 0."""
    for i, v in enumerate(variants):
        s, g = _variant_style(v), by.get(v)
        if g is not None and math.isfinite(g["dice"]):
            ax.bar(i, 100 * g["dice"], color=s.color, alpha=0.75, hatch=style.HATCHES.get(v, ""),
                   edgecolor="black", linewidth=0.5)  # fmt: skip
            ax.scatter([i] * len(g["folds"]), [100 * x for x in g["folds"].values()], s=8, color="black", zorder=3)
        else:
            ax.annotate("no result", (i, 0.02), xycoords=("data", "axes fraction"), ha="center", fontsize=7)
        if v in published:
            ax.plot([i], [published[v]], **style.PUBLISHED_MARKER)
    labels = ["CPS" if v == "cps" else SAMPLER_LABELS[v] for v in variants]
    ax.set_xticks(range(len(variants)), labels, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(variants) - 0.4)
    ax.set_ylabel("validation Dice [%]")
    shown = [100 * by[v]["dice"] for v in variants if v in by and math.isfinite(by[v]["dice"])]
    shown += [100 * x for v in variants if v in by for x in by[v]["folds"].values()] + list(published.values())
    if shown:
        bottom = max(0.0, min(shown) - 10)
        ax.set_ylim(bottom, min(100.0, max(shown) + 5))
        if bottom > 0:  # a bar axis that does not start at 0 says so
            ax.set_ylabel(f"validation Dice [%]\n(axis starts at {bottom:.0f}, not 0)")


def _figureA6_table(dataset: str | None, by: Mapping[str, dict]) -> Table:
    cells, rows = [], []
    for d in ds.ordered([dataset] if dataset else [], first=("MSD_Lung",)):
        for v in A6_VARIANTS:
            key = f"{d}|{v}"
            rows.append((key, f"{ds.label(d)}, {'CPS' if v == 'cps' else 'PGPS-Perf ' + SAMPLER_LABELS[v]}"))
            g = by.get(v) if d == dataset else None
            for col, field in (("dice", "dice"), ("runtime", "relative_runtime")):
                cells.append(
                    cell(key, col, 100 * g[field], n=g["n"], runs=g["runs"]) if g else cell(key, col, math.nan)
                )
    return Table(
        name="figureA6",
        title="Figure A.6: batch constructions for PGPS-Performance: final Dice and relative runtime",
        row_key="dataset|variant",
        row_header="Dataset, batch construction",
        rows=rows,
        columns=[Column("dice", "", "Dice [%]"), Column("runtime", "", "rel. runtime [%]", digits=0)],
        cells=pd.DataFrame(cells),
        ranks=[Rank(("dice",), "max")],
        notes=["Full-length, seed-0 runs with mirroring as in the article; Dice = mean over folds."],
    )
