"""The article's tables (1, 2, 3, A.4, B.5, D.7, D.8, D.9) and its statistics, from a results table.

Every builder takes the collected results (``results.csv``, see :mod:`pgps.report.results`) and
returns a :class:`~pgps.report.table.Table` whose rows are the article's (kept, as gaps, when
there are no runs for them) followed by any other dataset whose runs the table can use; its
column and row keys are those of the published-value files (:mod:`pgps.report.published`).
All Dice values are in percent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import pandas as pd

from pgps import names
from pgps.report import datasets as ds
from pgps.report import stats
from pgps.report.characteristics import MEASURES
from pgps.report.results import MODE_SAMPLERS, aggregate, select, with_defaults
from pgps.report.table import Column, Rank, Table, cell

JOURNAL_MODES: tuple[str, ...] = names.JOURNAL_MODES
SHORT: dict[str, str] = {key: mode.short for key, mode in names.MODES.items()}
"""Strategy labels as the article's table headers print them (:data:`pgps.names.MODES`)."""

MAIN_GRID_NOTE = (
    "Runs: U-Net backbone, each strategy's own batch construction, the dataset's full training length, "
    "seed 0, mirroring as in the article (none for ToothFairy2 and TotalSegmentatorV2); Dice = mean over folds."
)


def _index(agg: pd.DataFrame, keys: Sequence[str]) -> dict[tuple, dict]:
    return {tuple(r[k] for k in keys): r for r in agg.to_dict("records")}


def _datasets(frame: pd.DataFrame, article: Iterable[str], having: Callable[[pd.DataFrame], pd.Series]) -> list[str]:
    """The article's datasets, then the others of ``frame`` with a row matching ``having``."""
    extra = frame.loc[having(frame), "dataset"].unique() if len(frame) else []
    return ds.ordered(extra, first=article)


def _dice_cell(row: str, col: str, g: dict | None) -> dict:
    if g is None:
        return cell(row, col, math.nan)
    return cell(row, col, 100 * g["dice"], n=g["n"], runs=g["runs"])


def _scaled(row: str, col: str, g: dict | None, key: str, scale: float = 100.0, offset: float = 0.0) -> dict:
    if g is None:
        return cell(row, col, math.nan)
    return cell(row, col, scale * g[key] + offset, n=g["n"], runs=g["runs"])


def _normalized(row: str, col: str, groups: Sequence[dict | None], offset: float = 0.0) -> dict:
    """The normalized average (:func:`pgps.report.stats.normalized_average`) of the groups' paired Dice."""
    found = [g for g in groups if g is not None]
    value, n = stats.normalized_average([g["paired_dice"] for g in found], [g["paired_cps_dice"] for g in found])
    return cell(row, col, value + offset, n=n, runs=len(found))


def _mean_sd(row: str, col: str, groups: Sequence[dict | None], key: str) -> dict:
    found = [g for g in groups if g is not None]
    mean, sd, n = stats.mean_sd([100 * g[key] for g in found])
    return cell(row, col, mean, sd=sd, n=n, runs=len(found))


# -- Table 1 ----------------------------------------------------------------------------------------
def table1(results: pd.DataFrame) -> Table:
    """Table 1: Dice, relative Dice, relative runtime and FLOPs of CPS, PGPS-Eff, PGPS-Perf per dataset."""
    main = select(results, modes=JOURNAL_MODES)
    by = _index(aggregate(main), ("dataset", "mode"))
    datasets = ds.ordered(main["dataset"].unique(), first=ds.ARTICLE_DATASETS)
    pgps_modes = ("efficiency", "performance")
    columns = [Column(f"dice.{m}", "Dice score [%] ↑", SHORT[m]) for m in JOURNAL_MODES]
    columns += [Column(f"reldice.{m}", "Δ rel. Dice score [%] ↑", SHORT[m], kind="delta") for m in pgps_modes]
    columns += [Column(f"runtime.{m}", "Rel. runtime [%] ↓", SHORT[m], digits=0) for m in pgps_modes]
    columns += [Column(f"flops.{m}", "Rel. FLOPs [%] ↓", SHORT[m], digits=0) for m in pgps_modes]
    cells = []
    for d in datasets:
        for m in JOURNAL_MODES:
            g = by.get((d, m))
            cells.append(_dice_cell(d, f"dice.{m}", g))
            if m != "cps":
                cells.append(_scaled(d, f"reldice.{m}", g, "relative_dice", offset=-100.0))
                cells.append(_scaled(d, f"runtime.{m}", g, "relative_runtime"))
                cells.append(_scaled(d, f"flops.{m}", g, "relative_flops"))
    for m in JOURNAL_MODES:
        groups = [by.get((d, m)) for d in datasets]
        cells.append(_normalized("norm_avg", f"dice.{m}", groups))
        if m != "cps":
            cells.append(_normalized("norm_avg", f"reldice.{m}", groups, offset=-100.0))
            cells.append(_mean_sd("norm_avg", f"runtime.{m}", groups, "relative_runtime"))
            cells.append(_mean_sd("norm_avg", f"flops.{m}", groups, "relative_flops"))
    return Table(
        name="table1",
        title="Table 1: CPS, PGPS-Efficiency and PGPS-Performance per dataset",
        row_key="dataset",
        row_header="Dataset",
        rows=[(d, ds.label(d)) for d in datasets] + [("norm_avg", "Norm. Avg.")],
        columns=columns,
        cells=pd.DataFrame(cells),
        ranks=[Rank(tuple(f"dice.{m}" for m in JOURNAL_MODES))],
        notes=[
            MAIN_GRID_NOTE,
            "Δ rel. Dice = (Dice / CPS Dice - 1) × 100, both means over the folds both strategies have. "
            "Rel. runtime: virtual relative runtime (run time / (mean P_max-stage epoch time × epochs)), median over "
            "folds. Rel. FLOPs: iterated voxels / CPS's, mean over folds.",
            "Norm. Avg.: Dice columns = mean over datasets of Dice / CPS Dice × 100 (how many: column n of "
            "compare/table1.csv); runtime "
            "and FLOPs = mean ± sample SD over datasets.",
        ],
    )


# -- Table 2 ----------------------------------------------------------------------------------------
TABLE2_DATASETS = ("MSD_Lung", "KiTS23", "BTCV", "AMOS22")


def table2(results: pd.DataFrame) -> Table:
    """Table 2: Progressive Resolution against PGPS-Efficiency (Dice)."""
    modes = ("progressive-resolution", "efficiency")
    main = select(results, modes=modes)
    by = _index(aggregate(main), ("dataset", "mode"))
    datasets = _datasets(main, TABLE2_DATASETS, lambda f: f["mode"] == "progressive-resolution")
    cells = [_dice_cell(d, f"dice.{m}", by.get((d, m))) for d in datasets for m in modes]
    return Table(
        name="table2",
        title="Table 2: Progressive Resolution vs PGPS-Efficiency, Dice [%]",
        row_key="dataset",
        row_header="Dataset",
        rows=[(d, ds.label(d)) for d in datasets],
        columns=[Column(f"dice.{m}", "", SHORT[m]) for m in modes],
        cells=pd.DataFrame(cells),
        ranks=[Rank(tuple(f"dice.{m}" for m in modes))],
        notes=[MAIN_GRID_NOTE],
    )


# -- Table 3 ----------------------------------------------------------------------------------------
TABLE3_BACKBONES = ("unet", "unetr", "swinunetr")


def table3(results: pd.DataFrame) -> Table:
    """Table 3: CPS, PGPS-Eff and PGPS-Perf on the U-Net, UNETR and SwinUNETR backbones (Dice)."""
    sel = select(results, backbone=TABLE3_BACKBONES, modes=JOURNAL_MODES)
    by = _index(aggregate(sel), ("dataset", "backbone", "mode"))
    datasets = _datasets(sel, ("BTCV",), lambda f: f["backbone"] != "unet")
    rows, cells = [], []
    for d in datasets:
        for b in TABLE3_BACKBONES:
            key = f"{d}|{b}"
            rows.append((key, f"{ds.label(d)}: {ds.backbone_label(b)}"))
            cells += [_dice_cell(key, f"dice.{m}", by.get((d, b, m))) for m in JOURNAL_MODES]
    return Table(
        name="table3",
        title="Table 3: PGPS on different backbones, Dice [%]",
        row_key="dataset|backbone",
        row_header="Backbone",
        rows=rows,
        columns=[Column(f"dice.{m}", "", SHORT[m]) for m in JOURNAL_MODES],
        cells=pd.DataFrame(cells),
        ranks=[Rank(tuple(f"dice.{m}" for m in JOURNAL_MODES))],
        notes=[MAIN_GRID_NOTE.replace("U-Net backbone, ", ""), "A diverged run scores 0 (the article's UNETR row)."],
    )


# -- Table A.4 ----------------------------------------------------------------------------------------
TABLEA4_DATASETS = ("MSD_Lung", "KiTS23", "AMOS22")
SAMPLER_LABELS = {"default": "nnU-Net default", **{key: s.label for key, s in names.SAMPLERS.items()}}


def effective_sampler(mode: str, sampler: str) -> str:
    """The batch construction a run used: ``"default"`` resolved to the mode's own where it has a name."""
    return MODE_SAMPLERS.get(mode, "default") if sampler == "default" else sampler


def with_effective_sampler(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``sampler`` replaced by :func:`effective_sampler`."""
    frame = with_defaults(frame)
    samplers = [effective_sampler(m, s) for m, s in zip(frame["mode"], frame["sampler"], strict=True)]
    return frame.assign(sampler=samplers)


def tableA4(results: pd.DataFrame) -> Table:
    """Table A.4: PGPS-Performance with Split-Crop and Single-Crop against CPS (Dice, FLOPs, runtime)."""
    sel = with_effective_sampler(select(results, sampler=None, modes=("cps", "performance")))
    sel = sel[(sel["mode"] == "performance") | (sel["sampler"] == "default")]
    by = _index(aggregate(sel), ("dataset", "mode", "sampler"))
    datasets = _datasets(sel, TABLEA4_DATASETS, lambda f: f["sampler"] == "single_crop")
    variants = (("cps", "default", "CPS"), ("performance", "split_crop", "PGPS-Perf (Split-Crop)"))
    variants += (("performance", "single_crop", "PGPS-Perf (Single-Crop)"),)
    metrics = (("dice", "Dice score [%] ↑"), ("flops", "Rel. FLOPs [%] ↓"), ("runtime", "Rel. runtime [%] ↓"))
    columns, cells, ranks = [], [], []
    for d in datasets:
        keys = tuple(f"{d}|{s if m == 'performance' else m}" for m, s, _ in variants)
        columns += [Column(k, ds.label(d), label) for k, (_, _, label) in zip(keys, variants, strict=True)]
        for key, (m, s, _) in zip(keys, variants, strict=True):
            g = by.get((d, m, s))
            cells.append(_dice_cell("dice", key, g))
            cells.append(_scaled("flops", key, g, "relative_flops"))
            cells.append(_scaled("runtime", key, g, "relative_runtime"))
        ranks += [Rank(keys, "max", ("dice",)), Rank(keys, "min", ("flops", "runtime"))]
    return Table(
        name="tableA4",
        title="Table A.4: Split-Crop vs Single-Crop batch construction for PGPS-Performance",
        row_key="metric",
        row_header="Metric",
        rows=list(metrics),
        columns=columns,
        cells=pd.DataFrame(cells),
        ranks=ranks,
        notes=[
            MAIN_GRID_NOTE.replace("each strategy's own batch construction, ", ""),
            "FLOPs and runtime relative to CPS (CPS = 100 by construction).",
        ],
        row_digits={"flops": 0, "runtime": 0},
    )


# -- Table B.5 ----------------------------------------------------------------------------------------
TABLEB5_DATASETS = ("BTCV", "AMOS22", "TotalSegmentatorV2", "ToothFairy2")


def tableB5(results: pd.DataFrame) -> Table:
    """Table B.5: CPS and PGPS-Performance with and without mirroring (Dice)."""
    modes = ("cps", "performance")
    sel = select(results, mirroring=None, modes=modes)
    by = _index(aggregate(sel), ("dataset", "mirroring", "mode"))
    both = sel.groupby("dataset")["mirroring"].nunique() if len(sel) else pd.Series(dtype=int)
    datasets = _datasets(sel, TABLEB5_DATASETS, lambda f: f["dataset"].map(both).fillna(0) > 1)
    settings = ((True, "mirror", "With mirror"), (False, "nomirror", "Without mirror"))
    columns = [Column(f"{key}.{m}", group, SHORT[m]) for _, key, group in settings for m in modes]
    cells = [
        _dice_cell(d, f"{key}.{m}", by.get((d, mirror, m)))
        for d in datasets
        for mirror, key, _ in settings
        for m in modes
    ]
    return Table(
        name="tableB5",
        title="Table B.5: mirroring augmentation, Dice [%]",
        row_key="dataset",
        row_header="Dataset",
        rows=[(d, ds.label(d)) for d in datasets],
        columns=columns,
        cells=pd.DataFrame(cells),
        ranks=[Rank(tuple(f"{key}.{m}" for m in modes)) for _, key, _ in settings],
        notes=[
            MAIN_GRID_NOTE.replace(", mirroring as in the article (none for ToothFairy2 and TotalSegmentatorV2)", "")
        ],
    )


# -- Tables D.7 and D.8 ----------------------------------------------------------------------------------
RESENC_BACKBONES = ("unet", "resenc_m", "resenc_l", "resenc_xl")
TABLED_DATASETS = ("BTCV", "KiTS23")


def _resenc(results: pd.DataFrame) -> tuple[dict[tuple, dict], list[str]]:
    sel = select(results, backbone=RESENC_BACKBONES, modes=("cps", "performance"))
    by = _index(aggregate(sel), ("dataset", "backbone", "mode"))
    datasets = _datasets(sel, TABLED_DATASETS, lambda f: f["backbone"] != "unet")
    return by, datasets


def _resenc_columns(datasets: Sequence[str]) -> list[Column]:
    return [Column(f"{d}|{m}", ds.label(d), SHORT[m]) for d in datasets for m in ("cps", "performance")]


def tableD7(results: pd.DataFrame) -> Table:
    """Table D.7: CPS and PGPS-Performance on the nnU-Net ResEnc presets (Dice)."""
    by, datasets = _resenc(results)
    cells = [
        _dice_cell(b, f"{d}|{m}", by.get((d, b, m)))
        for b in RESENC_BACKBONES
        for d in datasets
        for m in ("cps", "performance")
    ]
    return Table(
        name="tableD7",
        title="Table D.7: CPS vs PGPS-Performance on nnU-Net ResEnc presets, Dice [%]",
        row_key="backbone",
        row_header="Model",
        rows=[(b, "nnU-Net (orig.)" if b == "unet" else ds.backbone_label(b)) for b in RESENC_BACKBONES],
        columns=_resenc_columns(datasets),
        cells=pd.DataFrame(cells),
        ranks=[Rank((f"{d}|cps", f"{d}|performance")) for d in datasets],
        notes=[MAIN_GRID_NOTE.replace("U-Net backbone, ", "")],
    )


def tableD8(results: pd.DataFrame) -> Table:
    """Table D.8: SD over folds per preset, and the inter/intra-method SD ratio (nnU-Net Revisited)."""
    by, datasets = _resenc(results)
    cells = []
    for d in datasets:
        for m in ("cps", "performance"):
            col = f"{d}|{m}"
            found = {b: by.get((d, b, m)) for b in RESENC_BACKBONES}
            for b, g in found.items():
                cells.append(_scaled(b, col, g, "dice_sd"))
            folds = {b: [100 * v for v in g["folds"].values()] for b, g in found.items() if g is not None}
            r = stats.sd_ratio(folds)
            n, runs = r["methods"], len(folds)
            cells.append(cell("intra", col, r["intra_sd"], n=n, runs=runs))
            cells.append(cell("inter", col, r["inter_sd"], n=n, runs=runs))
            cells.append(cell("ratio", col, 100 * r["ratio"], n=n, runs=runs))
    rows = [(b, "nnU-Net (orig.)" if b == "unet" else ds.backbone_label(b)) for b in RESENC_BACKBONES]
    rows += [
        ("intra", "Avg. intra-method SD [%]"),
        ("inter", "Inter-method SD [%]"),
        ("ratio", "Inter/intra ratio [%] ↑"),
    ]
    return Table(
        name="tableD8",
        title="Table D.8: Dice SD over folds and the inter/intra-method SD ratio",
        row_key="row",
        row_header="",
        rows=rows,
        columns=_resenc_columns(datasets),
        cells=pd.DataFrame(cells),
        ranks=[Rank((f"{d}|cps", f"{d}|performance"), "max", ("ratio",)) for d in datasets],
        notes=[
            MAIN_GRID_NOTE.replace("U-Net backbone, ", ""),
            "SD over folds is the population SD (ddof=0) of the fold Dice; intra-method SD = mean over presets of "
            "it; inter-method SD = population SD of the presets' mean Dice; ratio = inter / intra × 100.",
        ],
        row_digits={"ratio": 1},
    )


# -- Table D.9 ----------------------------------------------------------------------------------------
TABLED9_MODES = ("cps", "efficiency", "performance", "miccai", "miccai-plus")


def tableD9(results: pd.DataFrame) -> Table:
    """Table D.9: new (journal) vs MICCAI 2024 modes on the MSD tasks (Dice, normalized average, FLOPs)."""
    main = select(results, modes=TABLED9_MODES)
    by = _index(aggregate(main), ("dataset", "mode"))
    datasets = _datasets(main, ds.MSD_DATASETS, lambda f: f["mode"].isin(["miccai", "miccai-plus"]))
    groups = {
        "cps": "",
        "efficiency": "New",
        "performance": "New",
        "miccai": "MICCAI 2024",
        "miccai-plus": "MICCAI 2024",
    }
    columns = [Column(f"dice.{m}", groups[m], SHORT[m]) for m in TABLED9_MODES]
    cells = [_dice_cell(d, f"dice.{m}", by.get((d, m))) for d in datasets for m in TABLED9_MODES]
    for m in TABLED9_MODES:
        found = [by.get((d, m)) for d in datasets]
        cells.append(_normalized("norm_avg", f"dice.{m}", found))
        cells.append(_mean_sd("flops", f"dice.{m}", found, "relative_flops") | {"sd": math.nan})
    keys = tuple(c.key for c in columns)
    rows = [(d, ds.label(d)) for d in datasets] + [
        ("norm_avg", "Avg. normalized Dice ↑"),
        ("flops", "Rel. FLOPs [%] ↓"),
    ]
    return Table(
        name="tableD9",
        title="Table D.9: journal PGPS modes vs the MICCAI 2024 modes on the MSD tasks, Dice [%]",
        row_key="dataset",
        row_header="Dataset",
        rows=rows,
        columns=columns,
        cells=pd.DataFrame(cells),
        ranks=[Rank(keys, "max", tuple(r for r, _ in rows[:-1])), Rank(keys, "min", ("flops",))],
        notes=[MAIN_GRID_NOTE, "Rel. FLOPs: mean over the datasets of iterated voxels / CPS's (CPS = 100)."],
        row_digits={"flops": 0},
    )


# -- statistics -----------------------------------------------------------------------------------------
WILCOXON_PAIRS = (("performance", "cps"), ("performance", "efficiency"), ("efficiency", "cps"))


def _lengths(frame: pd.DataFrame, article: Sequence[int]) -> list[int]:
    return sorted(set(article) | set(frame["length"].astype(int))) if len(frame) else list(article)


def stats_wilcoxon(results: pd.DataFrame) -> Table:
    """Two-sided paired Wilcoxon signed-rank tests over datasets (relative Dice), per training length."""
    sel = select(results, length=None, modes=JOURNAL_MODES)
    by = _index(aggregate(sel), ("dataset", "length", "mode"))
    datasets = sorted(sel["dataset"].unique())
    fewest = stats.wilcoxon_min_pairs()
    rows, cells = [], []
    for length in _lengths(sel, (100,)):
        for a, b in WILCOXON_PAIRS:
            key = f"{a}-{b}|{length}"
            rows.append((key, f"{SHORT[a]} vs {SHORT[b]}, {length}% length"))
            pairs = [(by.get((d, length, a)), by.get((d, length, b))) for d in datasets]
            pairs = [(x["relative_dice"], y["relative_dice"]) for x, y in pairs if x is not None and y is not None]
            r = stats.wilcoxon_paired([x for x, _ in pairs], [y for _, y in pairs])
            n = r["n"]
            cells.append(cell(key, "datasets", len(pairs) if pairs else math.nan, n=n))
            if pairs and n < fewest:  # no test over so few pairs could reach p < 0.05: not reported
                text = f"too few datasets ({n} < {fewest})"
                cells += [cell(key, c, math.nan, text=text) for c in ("statistic", "p_value", "median_difference")]
                continue
            cells += [
                cell(key, "statistic", r["statistic"], n=n),
                cell(key, "p_value", r["p_value"], n=n),
                cell(key, "median_difference", 100 * r["median_difference"], n=n),
            ]
    return Table(
        name="stats_wilcoxon",
        title="Paired Wilcoxon signed-rank tests over datasets (Section 3.2.1)",
        row_key="comparison|length",
        row_header="Comparison",
        rows=rows,
        columns=[
            Column("datasets", "", "datasets", digits=0),
            Column("statistic", "", "W", digits=1),
            Column("p_value", "", "p (two-sided)", digits=4),
            Column("median_difference", "", "median Δ rel. Dice [%]", digits=2),
        ],
        cells=pd.DataFrame(cells),
        notes=[
            "One pair per dataset: the two strategies' relative Dice (Dice / CPS Dice, means over folds); zero "
            "differences dropped, exact null distribution up to 50 pairs. This reproduces the p-values of Section "
            "4.1.1 from Table 1's Dice columns.",
            f"Below {stats.wilcoxon_min_pairs()} non-zero pairs no two-sided exact test can reach p < 0.05: such "
            'rows say "too few datasets" instead of a test.',
            MAIN_GRID_NOTE.replace("the dataset's full training length", "each training length"),
        ],
    )


def stats_spearman(results: pd.DataFrame, characteristics: pd.DataFrame) -> Table:
    """Spearman correlations of the relative Dice gain with the four task characteristics, per length."""
    sel = select(results, length=None, modes=JOURNAL_MODES)
    by = _index(aggregate(sel), ("dataset", "length", "mode"))
    chars = characteristics.set_index("dataset") if len(characteristics) else pd.DataFrame()
    datasets = sorted(sel["dataset"].unique())
    rows, cells = [], []
    columns = [
        Column(f"{m}|{stat}", label, stat_label, digits=4)
        for m, label in MEASURES.items()
        for stat, stat_label in (("rho", "ρ"), ("p", "p"))
    ]
    for mode in ("efficiency", "performance"):
        for length in _lengths(sel, (1, 10, 25, 50, 100)):
            key = f"{mode}|{length}"
            rows.append((key, f"{SHORT[mode]}, {length}% length"))
            gains = {d: by[(d, length, mode)]["relative_dice"] - 1 for d in datasets if (d, length, mode) in by}
            for measure in MEASURES:
                x = [float(chars.at[d, measure]) if d in chars.index and measure in chars else math.nan for d in gains]
                r = stats.spearman(x, list(gains.values()))
                cells += [
                    cell(key, f"{measure}|rho", r["rho"], n=r["n"]),
                    cell(key, f"{measure}|p", r["p_value"], n=r["n"]),
                ]
    notes = [
        "Relative Dice gain = Dice / CPS Dice - 1 per dataset (means over folds) against each task characteristic "
        "of characteristics.csv (see pgps.report.characteristics); two-sided p; n = datasets with both values.",
    ]
    if not len(chars):
        notes.insert(0, "No task characteristics in the results folder (pgps collect --characteristics): all gaps.")
    return Table(
        name="stats_spearman",
        title="Spearman correlations of relative Dice gain with task characteristics (Section 3.3)",
        row_key="mode|length",
        row_header="Strategy, length",
        rows=rows,
        columns=columns,
        cells=pd.DataFrame(cells),
        notes=notes,
    )


TABLES: dict[str, Callable[..., Table]] = {
    "table1": table1,
    "table2": table2,
    "table3": table3,
    "tableA4": tableA4,
    "tableB5": tableB5,
    "tableD7": tableD7,
    "tableD8": tableD8,
    "tableD9": tableD9,
    "stats_wilcoxon": stats_wilcoxon,
    "stats_spearman": stats_spearman,
}
"""Every table builder by output name (``stats_spearman`` also takes the characteristics)."""
