"""The MICCAI 2024 paper's Table 1, Supplemental Table 2 and Figures 2 and 3, from the collected results.

Fischer et al., "Progressive Growing of Patch Size", MICCAI 2024 (``shared/papers/pgps-miccai-2024.txt``):

- Table 1: CPS, PGPS (``miccai``) and PGPS+ (``miccai-plus``), and RPSS where it was run, on the ten MSD
  tasks: Dice (5-fold mean, as a fraction), the p-value of a one-sided paired t-test on the Dice of every
  validation case pooled over the folds against CPS, runtime per fold [h], voxels shown [% of CPS] and
  CO2-eq per fold [kg]; then the averages its text prints (runtime, voxels and CO2 relative to CPS as mean
  ± population SD over tasks, tasks better than CPS, and the mean ± SD of the relative gain and loss).
- Supplemental Table 2 and Figure 2: CPS, RPSS and PGPS on MSD Lung at 10, 25, 50 and 100% of the
  iterations: Dice, runtime and voxels shown relative to CPS at 100%.
- Figure 3: the fold-wise Dice difference to CPS per task, mean and standard error over the folds.

Conventions (each checked against the paper's own numbers in ``tests/test_miccai_report.py``): the
averages use the population SD (Table 1's rows give 46.09 ± 6.8 and 35.09 ± 2.30 only so); the t-test
is one-sided in the direction of the Dice difference the table shows (its text reads p = 0.0210 on
Hepatic Vessel as "outperformed significantly by CPS", and Brain's p = 0.5972 > 0.5 shows that the
direction was not taken from the per-case values); a case's Dice is the mean over its foreground
labels that nnU-Net scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from pgps.report import datasets as ds
from pgps.report import stats, style
from pgps.report.figures import gap_figure
from pgps.report.results import aggregate, select
from pgps.report.table import Column, Rank, Table, cell

SCHEMES: tuple[str, ...] = ("cps", "miccai", "miccai-plus", "rpss")
"""The strategies of the conference paper, in its order (RPSS only on MSD Lung, Sec. 3.1)."""

LABELS: dict[str, str] = {"cps": "CPS", "miccai": "PGPS", "miccai-plus": "PGPS+", "rpss": "RPSS"}
"""Scheme names as the conference paper prints them."""

LUNG_SCHEMES: tuple[str, ...] = ("cps", "rpss", "miccai")
LUNG_LENGTHS: tuple[int, ...] = (10, 25, 50, 100)
SIGNIFICANCE = 0.05

NOTE_RUNS = (
    "Runs: U-Net backbone, seed 0, full training length (Table 1; Supplemental Table 2: each length); Dice = mean "
    "over folds, as a fraction like the paper's."
)


def _index(agg: pd.DataFrame, keys: Sequence[str]) -> dict[tuple, dict]:
    return {tuple(r[k] for k in keys): r for r in agg.to_dict("records")}


def case_dice(cases: pd.DataFrame) -> pd.DataFrame:
    """One row per run and validation case: ``run``, ``case``, ``dice`` = mean over the labels nnU-Net scored."""
    if not len(cases):
        return pd.DataFrame(columns=["run", "case", "dice"])
    return cases.groupby(["run", "case"], as_index=False)["dice"].mean()  # NaN labels (absent from both) skipped


def one_sided_ttest(cases: pd.DataFrame, runs: Sequence[int], cps_runs: Sequence[int], better: bool) -> dict:
    """MICCAI Table 1's p-value: a one-sided paired t-test of a scheme's per-case Dice against CPS's, the cases
    of all folds pooled and paired by case; ``better`` chooses the alternative (scheme > CPS, else <)."""
    per_case = case_dice(cases)
    ours = per_case[per_case["run"].isin(list(runs))].groupby("case")["dice"].mean()
    cps = per_case[per_case["run"].isin(list(cps_runs))].groupby("case")["dice"].mean()
    both = pd.concat({"ours": ours, "cps": cps}, axis=1).dropna()
    return stats.paired_ttest(both["ours"], both["cps"], "greater" if better else "less")


# -- Table 1 ----------------------------------------------------------------------------------------------
TABLE1_COLUMNS: tuple[Column, ...] = (
    Column("dice", "", "Dice score", digits=4),
    Column("p_value", "", "P-value", digits=4, kind="p"),
    Column("runtime_h", "", "Runtime [h]"),
    Column("voxels", "", "Voxels shown [%]", sd_digits=2),
    Column("co2_kg", "", "CO2-eq [kg]"),
    Column("rel_runtime", "", "rel. runtime [%]", sd_digits=2),
    Column("rel_co2", "", "rel. CO2-eq [%]", sd_digits=2),
    Column("tasks_better", "", "tasks better than CPS", digits=0),
    Column("gain", "", "gain when better [%]", sd_digits=1),
    Column("loss", "", "loss when worse [%]", sd_digits=1),
)


def _scheme_cells(key: str, g: dict | None, test: dict | None) -> list[dict]:
    if g is None:
        return [cell(key, c.key, math.nan) for c in TABLE1_COLUMNS[:7]]
    n, runs = g["n"], g["runs"]
    p = test["p_value"] if test else math.nan
    return [
        cell(key, "dice", g["dice"], n=n, runs=runs),
        cell(key, "p_value", p, n=test["n"] if test else 0),
        cell(key, "runtime_h", g["train_time_s"] / 3600, n=n, runs=runs),
        cell(key, "voxels", 100 * g["relative_flops"], n=n, runs=runs),
        cell(key, "co2_kg", g["co2_kg"], n=n, runs=runs),
        cell(key, "rel_runtime", 100 * g["relative_runtime"], n=n, runs=runs),
        cell(key, "rel_co2", 100 * g["relative_co2"], n=n, runs=runs),
    ]


def _average_cells(key: str, groups: Sequence[tuple[dict | None, dict | None]]) -> list[dict]:
    """The text's averages over tasks: relative runtime, voxels, CO2 (mean ± population SD), tasks better than
    CPS, and the relative Dice gain where better / loss where worse (mean ± population SD, %)."""
    found = [(g, c) for g, c in groups if g is not None]
    out = []
    for col, field in (("rel_runtime", "relative_runtime"), ("voxels", "relative_flops"), ("rel_co2", "relative_co2")):
        mean, sd, n = stats.mean_sd([100 * g[field] for g, _ in found], ddof=0)
        out.append(cell(key, col, mean, sd=sd, n=n, runs=len(found)))
    change = [100 * (stats.relative(g["dice"], c["dice"]) - 1) for g, c in found if c is not None]
    change = [v for v in change if math.isfinite(v)]
    out.append(cell(key, "tasks_better", sum(v > 0 for v in change) if change else math.nan, n=len(change)))
    for col, values in (("gain", [v for v in change if v > 0]), ("loss", [-v for v in change if v < 0])):
        mean, sd, n = stats.mean_sd(values, ddof=0)
        out.append(cell(key, col, mean, sd=sd, n=n))
    return out


def miccai_table1(results: pd.DataFrame, cases: pd.DataFrame) -> Table:
    """MICCAI 2024 Table 1 with its averages (see the module docstring)."""
    main = select(results, modes=SCHEMES)
    by = _index(aggregate(main), ("dataset", "mode"))
    runs = {k: list(g["run"]) for k, g in main.groupby(["dataset", "mode"])} if len(main) else {}
    extra = main.loc[main["mode"].isin(["miccai", "miccai-plus", "rpss"]), "dataset"].unique() if len(main) else []
    datasets = ds.ordered(extra, first=ds.MSD_DATASETS)
    rows, cells = [], []
    for d in datasets:
        for scheme in SCHEMES:
            if scheme == "rpss" and (d, scheme) not in by:
                continue  # RPSS: only where it was run
            key = f"{d}|{scheme}"
            rows.append((key, f"{ds.label(d)}, {LABELS[scheme]}"))
            g, cps = by.get((d, scheme)), by.get((d, "cps"))
            test = None
            if scheme != "cps" and g is not None and cps is not None:
                better = g["dice"] >= cps["dice"]
                test = one_sided_ttest(cases, runs.get((d, scheme), []), runs.get((d, "cps"), []), better)
            cells += _scheme_cells(key, g, test)
    for scheme in SCHEMES[1:]:
        key = f"avg|{scheme}"
        rows.append((key, f"Average, {LABELS[scheme]}"))
        cells += _average_cells(key, [(by.get((d, scheme)), by.get((d, "cps"))) for d in datasets])
    return Table(
        name="miccai_table1",
        title="MICCAI 2024 Table 1: CPS, PGPS and PGPS+ on the Medical Segmentation Decathlon",
        row_key="dataset|scheme",
        row_header="Task, scheme",
        rows=rows,
        columns=list(TABLE1_COLUMNS),
        cells=pd.DataFrame(cells),
        notes=[
            NOTE_RUNS,
            "P-value: one-sided paired t-test (scipy.stats.ttest_rel) of the per-case validation Dice (mean over "
            "the labels nnU-Net scored), every case of the 5 folds paired with CPS's, in the direction of the Dice "
            f"difference shown; * = p < {SIGNIFICANCE}. Runtime: training time per fold (validation excluded). "
            "Voxels shown: iterated voxels / CPS's. CO2-eq: CodeCarbon's estimate per fold (pip install "
            "pgps[carbon]); relative runtime is the virtual relative runtime (Sec. 3.2.2 of the journal).",
            "Average rows: mean ± population SD over the tasks (the paper's convention); gain/loss: relative Dice "
            "change (Dice / CPS Dice - 1) × 100 over the tasks where the scheme is better / worse than CPS.",
        ],
    )


# -- Supplemental Table 2 and Figure 2 --------------------------------------------------------------------
def _lung_groups(results: pd.DataFrame) -> tuple[str | None, dict[tuple, dict]]:
    """The dataset of the training-length comparison (MSD Lung, else the one with RPSS runs) and its groups."""
    sel = select(results, length=None, modes=LUNG_SCHEMES)
    with_rpss = list(sel.loc[sel["mode"] == "rpss", "dataset"].unique()) if len(sel) else []
    dataset = "MSD_Lung" if "MSD_Lung" in with_rpss or not with_rpss else ds.ordered(with_rpss)[0]
    sel = sel[sel["dataset"] == dataset]
    if not len(sel):
        return dataset, {}
    full = sel[(sel["mode"] == "cps") & (sel["length"] == sel["length"].max())]
    cps_full = full.set_index("fold")["iterated_voxels"].where(full.set_index("fold")["status"] == "complete")
    sel = sel.assign(voxels_shown=sel["iterated_voxels"].where(sel["status"] == "complete") / sel["fold"].map(cps_full))
    agg = aggregate(sel)
    shown = sel.groupby(["mode", "length"])["voxels_shown"].mean()
    groups = {}
    for r in agg.to_dict("records"):
        r["voxels_shown"] = shown.get((r["mode"], r["length"]), math.nan)
        groups[r["mode"], int(r["length"])] = r
    return dataset, groups


def _lengths_table(name: str, title: str, results: pd.DataFrame) -> Table:
    dataset, groups = _lung_groups(results)
    lengths = sorted(set(LUNG_LENGTHS) | {n for scheme, n in groups if scheme != "cps"})
    rows, cells = [], []
    for n in lengths:
        for scheme in LUNG_SCHEMES:
            key = f"{dataset}|{n}|{scheme}"
            rows.append((key, f"{ds.label(dataset)}, {n}%, {LABELS[scheme]}"))
            g = groups.get((scheme, n))
            if g is None:
                cells += [cell(key, c, math.nan) for c in ("dice", "runtime_h", "voxels")]
                continue
            cells += [
                cell(key, "dice", g["dice"], n=g["n"], runs=g["runs"]),
                cell(key, "runtime_h", g["train_time_s"] / 3600, n=g["n"], runs=g["runs"]),
                cell(key, "voxels", 100 * g["voxels_shown"], n=g["n"], runs=g["runs"]),
            ]
    return Table(
        name=name,
        title=title,
        row_key="dataset|length|scheme",
        row_header="Task, iterations per epoch, scheme",
        rows=rows,
        columns=[
            Column("dice", "", "Dice score", digits=4),
            Column("runtime_h", "", "Runtime [h]"),
            Column("voxels", "", "Voxels shown [% of CPS at 100%]", digits=1),
        ],
        cells=pd.DataFrame(cells),
        ranks=[Rank(("dice",), "max")],
        notes=[
            NOTE_RUNS,
            "Iterations per epoch in % of nnU-Net's 250 (floor(250 × length), so 25% is 62 iterations: voxels shown "
            "24.8%). Voxels shown: iterated voxels / those of the CPS run of the same fold at the full length.",
        ],
    )


def miccai_tableS2(results: pd.DataFrame, cases: pd.DataFrame | None = None) -> Table:
    """MICCAI 2024 Supplemental Table 2: CPS, RPSS and PGPS on MSD Lung over training lengths."""
    return _lengths_table(
        "miccai_tableS2", "MICCAI 2024 Supplemental Table 2: CPS, RPSS and PGPS over training lengths", results
    )


def miccai_figure2(
    results: pd.DataFrame, published: Mapping[tuple[str, str], float] | None = None
) -> tuple[Figure, Table]:
    """MICCAI 2024 Figure 2: Dice over iterations per epoch, voxels shown and runtime (CPS, RPSS, PGPS)."""
    table = _lengths_table("miccai_figure2", "MICCAI 2024 Figure 2: Dice over training lengths", results)
    title = "Convergence of CPS, RPSS and PGPS"
    if table.filled() == 0:
        return gap_figure(title, "No CPS / RPSS / PGPS (MICCAI) runs over training lengths yet."), table
    dataset = table.rows[0][0].split("|")[0]
    lengths = sorted({int(r.split("|")[1]) for r, _ in table.rows})
    axes_spec = (("length", "iterations per epoch [% of 250]"), ("voxels", "voxels shown [% of CPS at 100%]"))
    axes_spec += (("runtime_h", "training runtime per fold [h]"),)
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(7.2, 2.6), layout="constrained")
        axes = fig.subplots(1, 3, sharey=True)
        drew_published = False
        for ax, (x_key, xlabel) in zip(axes, axes_spec, strict=True):
            drew_published |= _plot_length_panel(ax, table, dataset, lengths, x_key, published)
            ax.set_xlabel(xlabel)
        axes[0].set_ylabel("Dice score (5-fold mean)")
        source = "MICCAI 2024, Supp. Table 2" if drew_published else None
        style.legend(fig, *axes[0].get_legend_handles_labels(), source)
        fig.suptitle(f"{title} ({ds.label(dataset)})")
    return fig, table


def _plot_length_panel(ax, table: Table, dataset: str, lengths, x_key: str, published) -> bool:
    """One panel of Figure 2: Dice against ``x_key`` per scheme, published points as hollow diamonds."""
    drew = False
    for scheme in LUNG_SCHEMES:
        points, ref = [], []
        for n in lengths:
            key = f"{dataset}|{n}|{scheme}"
            x = n if x_key == "length" else table.value(key, x_key)
            if math.isfinite(x) and math.isfinite(y := table.value(key, "dice")):
                points.append((x, y))
            if published and (key, "dice") in published:
                px = n if x_key == "length" else published.get((key, x_key), math.nan)
                if math.isfinite(px):
                    ref.append((px, published[key, "dice"]))
        kwargs = {**style.strategy(scheme).line_kwargs(), "label": LABELS[scheme]}
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, **kwargs)
        if ref:
            ax.plot(*zip(*ref, strict=True), **{**style.PUBLISHED_MARKER, "markeredgecolor": kwargs["color"]})
            drew = True
    if x_key == "length":
        ax.set_xticks(lengths)
    return drew


# -- Figure 3 ---------------------------------------------------------------------------------------------
def miccai_figure3(
    results: pd.DataFrame, published: Mapping[tuple[str, str], float] | None = None
) -> tuple[Figure, Table]:
    """MICCAI 2024 Figure 3: fold-wise Dice difference of PGPS and PGPS+ to CPS, mean ± SE over folds."""
    main = select(results, modes=("cps", "miccai", "miccai-plus"))
    agg = _index(aggregate(main), ("dataset", "mode"))
    extra = main.loc[main["mode"] != "cps", "dataset"].unique() if len(main) else []
    datasets = ds.ordered(extra, first=ds.MSD_DATASETS)
    schemes = ("miccai", "miccai-plus")
    cells, shown = [], {}
    for d in datasets:
        cps = agg.get((d, "cps"))
        for scheme in schemes:
            g = agg.get((d, scheme))
            folds = sorted(set(g["folds"]) & set(cps["folds"])) if g is not None and cps is not None else []
            diffs = [100 * (g["folds"][f] - cps["folds"][f]) for f in folds]
            mean, se, n = stats.standard_error(diffs)
            cells.append(cell(d, f"{scheme}|diff", mean, sd=se, n=n, runs=g["runs"] if g is not None else 0))
            if n:
                shown[d, scheme] = (mean, se, diffs)
    for scheme in schemes:
        means = [shown[d, scheme][0] for d in datasets if (d, scheme) in shown]
        cells.append(cell("better", f"{scheme}|diff", sum(m > 0 for m in means) if means else math.nan, n=len(means)))
    table = Table(
        name="miccai_figure3",
        title="MICCAI 2024 Figure 3: fold-wise Dice difference to CPS [Dice points], mean ± SE over folds",
        row_key="dataset",
        row_header="Task",
        rows=[(d, ds.label(d)) for d in datasets] + [("better", "Tasks with a positive mean difference")],
        columns=[Column(f"{s}|diff", "", LABELS[s], sd_digits=2) for s in schemes],
        cells=pd.DataFrame(cells),
        row_digits={"better": 0},
        notes=[
            "Per task: the differences scheme - CPS of the folds both have, in Dice points (×100); mean ± standard "
            "error (scipy.stats.sem). Last row: the number of tasks whose mean difference is positive.",
        ],
    )
    title = "Fold-wise Dice difference of PGPS and PGPS+ to CPS"
    if not shown:
        return gap_figure(title, "No PGPS / PGPS+ (MICCAI) runs with a CPS run of the same folds yet."), table
    return _difference_figure(title, datasets, schemes, shown, table, published), table


def _difference_figure(title, datasets, schemes, shown, table, published) -> Figure:
    tasks = [d for d in datasets if any((d, s) in shown for s in schemes)]
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(7.2, 0.32 * len(tasks) * len(schemes) + 1.2), layout="constrained")
        ax = fig.subplots()
        height = 0.8 / len(schemes)
        for j, scheme in enumerate(schemes):
            s = style.strategy(scheme)
            for i, d in enumerate(tasks):
                if (d, scheme) not in shown:
                    continue
                mean, se, diffs = shown[d, scheme]
                y = i + (j - (len(schemes) - 1) / 2) * height
                ax.barh(
                    y, mean, height=height * 0.9, color=s.color, alpha=0.8, label=LABELS[scheme] if i == 0 else None
                )
                ax.errorbar(mean, y, xerr=0 if math.isnan(se) else se, color="black", capsize=2, linewidth=0.8)
                ax.scatter(diffs, [y] * len(diffs), s=6, color="black", zorder=3)
        ax.axvline(0, color="0.3", linewidth=0.8)
        ax.set_yticks(range(len(tasks)), [ds.label(d) for d in tasks])
        ax.invert_yaxis()
        ax.set_xlabel("Dice difference to CPS [Dice points] (bars: mean ± SE over folds; dots: folds)")
        wins = ", ".join(f"{LABELS[s]} {table.value('better', f'{s}|diff'):.0f}" for s in schemes)
        text = f"tasks with a positive mean: {wins}"
        if published:
            text += (
                " (paper: "
                + ", ".join(
                    f"{LABELS[s]} {published[('better', f'{s}|diff')]:.0f}"
                    for s in schemes
                    if ("better", f"{s}|diff") in published
                )
                + " of 10)"
            )
        ax.set_title(text, fontsize=8)
        fig.legend(loc="outside lower center", ncols=len(schemes), frameon=False)
        fig.suptitle(title)
    return fig


TABLES = {"miccai_table1": miccai_table1, "miccai_tableS2": miccai_tableS2}
"""The conference paper's tables by output name; each takes ``(results, cases)``."""

FIGURES = {"miccai_figure2": miccai_figure2, "miccai_figure3": miccai_figure3}
"""The conference paper's figures by output name; each takes ``(results, published cells)``."""

__all__ = ["FIGURES", "TABLES", "case_dice", "one_sided_ttest"]
