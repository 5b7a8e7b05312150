"""pgps collect / characteristics / report end to end on synthetic fold folders with missing runs,
and the pieces: run selection, table rendering, published-value comparison, task characteristics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from pgps.cli import main
from pgps.report import OUTPUTS, figures, miccai, outputs, tables
from pgps.report.characteristics import task_characteristics
from pgps.report.published import compare, load_published
from pgps.report.render import figure3_published
from pgps.report.results import MANIFEST_COLUMNS, aggregate, select
from pgps.report.table import Column, Rank, Table, cell, to_csv, to_latex, to_markdown
from tests.report_fixtures import synthetic_manifest

CHARACTERISTICS = pd.DataFrame(
    {
        "dataset": ["MSD_Lung", "MSD_Hippocampus", "BTCV", "KiTS23", "AMOS22", "TotalSegmentatorV2", "lesions"],
        "num_classes": [1, 2, 13, 3, 15, 117, 1],
        "training_cases": [63, 260, 30, 489, 300, 1200, 20],
        "patch_to_volume_coverage": [0.2, 1.1, 0.3, 0.1, 0.15, 0.05, 1.2],
        "smallest_class_frequency": [1e-4, 3e-3, 1e-4, 2e-4, 5e-5, 1e-6, 2e-3],
    }
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    runs = synthetic_manifest(root / "runs")
    chars = root / "characteristics.csv"
    CHARACTERISTICS.to_csv(chars, index=False)
    assert main(["collect", "--runs", str(runs), "--characteristics", str(chars), "--out", str(root / "res")]) == 0
    assert main(["report", "--results", str(root / "res"), "--out", str(root / "out")]) == 0
    return {
        "root": root,
        "runs": runs,
        "res": root / "res",
        "out": root / "out",
    }


def _md(out: Path, name: str) -> str:
    return (out / "tables" / f"{name}.md").read_text()


def test_collect_writes_one_row_per_run_and_never_invents(rendered):
    manifest = pd.read_csv(rendered["runs"])
    results = pd.read_csv(rendered["res"] / "results.csv")
    assert len(results) == len(manifest)
    assert list(results.columns[1 : 1 + len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    status = results.groupby("status").size().to_dict()
    # the fixture leaves AMOS22 fold 2, MSD_Lung's Progressive Resolution and its RPSS at 25% unrun, KiTS23
    # PGPS-Perf fold 1 training
    amos = results[(results["dataset"] == "AMOS22") & (results["fold"] == 2)]
    lung = results[results["dataset"] == "MSD_Lung"]
    prog = lung[(lung["mode"] == "progressive-resolution") | ((lung["mode"] == "rpss") & (lung["length"] == 25))]
    training = results[(results["dataset"] == "KiTS23") & (results["mode"] == "performance") & (results["fold"] == 1)]
    missing, unfinished = len(amos) + len(prog), len(training)
    assert status == {"complete": len(results) - missing - unfinished, "missing": missing, "training": unfinished}
    for frame in (amos, prog, training):
        assert frame["dice"].isna().all() and frame["relative_runtime"].isna().all()
    assert amos["train_time_s"].isna().all() and training["train_time_s"].notna().all()
    done = results[results["status"] == "complete"]
    assert done["dice"].between(0, 1).all() and done["epochs"].eq(done["epochs_planned"]).all()
    cps = done[done["mode"] == "cps"]
    assert cps["relative_runtime"].to_numpy() == pytest.approx(1.0)  # CPS's P_max stage is all of it
    epochs = pd.read_csv(rendered["res"] / "epochs.csv")
    assert {"run", "dataset", "mode", "length", "fold", "seed", "epoch", "pseudo_dice"} <= set(epochs.columns)
    assert set(epochs["run"]) == set(results.loc[results["status"] != "missing", "run"])
    schedules = json.loads((rendered["res"] / "schedules.json").read_text())
    assert set(schedules) == {str(r) for r in results.loc[results["status"] != "missing", "run"]}
    assert (rendered["res"] / "characteristics.csv").is_file()


def test_report_writes_every_output(rendered):
    out = rendered["out"]
    for rel in OUTPUTS:
        assert (out / rel).stat().st_size > 0, rel
    for name in outputs.FIGURES + outputs.MICCAI_FIGURES:
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pdf = (out / "figures" / f"{name}.pdf").read_bytes()
        assert pdf[:5] == b"%PDF-"
        # journals reject Type 3 fonts: the text is embedded as TrueType (pdf.fonttype 42)
        assert b"/Type3" not in pdf and b"/FontFile2" in pdf, name
    tex = (out / "tables" / "table1.tex").read_text()
    assert "\\caption{CPS, PGPS-Efficiency" in tex and "Table 1: Table 1" not in tex
    index = (out / "report.md").read_text()
    assert "Runs without a result" in index and "figure5" in index


def test_a_re_render_of_the_same_results_is_byte_identical(rendered):
    """A second render, later and in another process (another hash seed, another clock), writes every file byte for
    byte as the first: PDFs without a creation date, PNGs without a time or matplotlib's version, report.md without
    the time it took. So re-rendering unchanged numbers leaves a checkout clean."""
    again = rendered["root"] / "again"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    env.pop("SOURCE_DATE_EPOCH", None)
    proc = subprocess.run([sys.executable, "-m", "pgps", "report", "--results", str(rendered["res"]), "--out",
                           str(again)], capture_output=True, text=True, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    changed = [rel for rel in OUTPUTS if (again / rel).read_bytes() != (rendered["out"] / rel).read_bytes()]
    assert changed == []
    pdf = (again / "figures" / "figure3.pdf").read_bytes()
    assert b"/CreationDate" not in pdf and b"/ModDate" not in pdf
    png = (again / "figures" / "figure3.png").read_bytes()
    assert b"tIME" not in png and b"matplotlib version" not in png


def test_captions_stand_outside_the_figures(rendered):
    """No figure's title says 'Figure N': each caption is in report.md (and the Snakemake report's labels)."""
    results = pd.read_csv(rendered["res"] / "results.csv")
    epochs = pd.read_csv(rendered["res"] / "epochs.csv")
    schedules = json.loads((rendered["res"] / "schedules.json").read_text())
    built = {
        "figure2": figures.figure2(results, epochs, schedules),
        "figure3": figures.figure3(results),
        "figure4": figures.figure4(results, epochs),
        "figure5": figures.figure5(results),
        "figureA6": figures.figureA6(results, epochs),
        **{name: miccai.FIGURES[name](results) for name in outputs.MICCAI_FIGURES},
    }
    empty = results.iloc[:0]
    built["gap"] = figures.figure3(empty)
    for name, (fig, _) in built.items():
        titles = [fig.get_suptitle(), *(ax.get_title() for ax in fig.axes)]
        assert fig.get_suptitle() and not any("Figure" in t for t in titles), (name, titles)
    index = (rendered["out"] / "report.md").read_text()
    for name in outputs.FIGURES + outputs.MICCAI_FIGURES:
        number, _, caption = outputs.CAPTIONS[name].partition(": ")
        assert number.endswith(("Figure 2", "Figure 3", "Figure 4", "Figure 5", "Figure A.6")), number
        assert f"- **{number}** ([png](figures/{name}.png), [pdf](figures/{name}.pdf)): {caption}\n" in index


def _figure3_with(results: pd.DataFrame, lengths) -> Figure:
    kept = results[results["length"].isin(lengths)]
    return figures.figure3(kept, {("BTCV", m): 80.0 for m in ("cps", "efficiency", "performance")})[0]


def test_figure3_with_few_lengths_sets_the_strategies_side_by_side_with_their_fold_sd(rendered):
    """One or two lengths: at each length a point per strategy with the SD over folds as its error bar, on a linear
    axis of the lengths, no lines between points, and a legend of those points; many lengths: lines, log axis."""
    results = pd.read_csv(rendered["res"] / "results.csv")
    main_grid = select(results, length=None, modes=("cps", "efficiency", "performance"))
    for lengths in ([100], [10, 100]):
        fig = _figure3_with(results, lengths)
        btcv = next(ax for ax in fig.axes if ax.get_title() == "BTCV")
        assert btcv.get_xscale() == "linear"
        assert [t.get_text() for t in btcv.get_xticklabels()] == [str(n) for n in lengths]
        bars = [c for c in btcv.containers if isinstance(c, ErrorbarContainer)]
        assert [c.get_label() for c in bars] == ["CPS", "PGPS-Efficiency", "PGPS-Performance"]
        for bar, mode in zip(bars, ("cps", "efficiency", "performance"), strict=True):
            runs = main_grid[(main_grid["dataset"] == "BTCV") & (main_grid["mode"] == mode)]
            for n, (_, y), segment in zip(lengths, bar.lines[0].get_xydata(), bar.lines[2][0].get_segments(),
                                          strict=True):  # fmt: skip
                dice = 100 * runs.loc[runs["length"] == n, "dice"].dropna()
                assert y == pytest.approx(dice.mean()) and segment[1][1] - y == pytest.approx(np.std(dice))
        lines = [line for line in btcv.get_lines() if len(line.get_xdata()) > 1 and line.get_linestyle() != "None"]
        assert lines == []  # nothing joins the points
        legend = fig.legends[0]
        assert [t.get_text() for t in legend.get_texts()][:3] == ["CPS", "PGPS-Efficiency", "PGPS-Performance"]
    one_fold = _figure3_with(results[results["fold"] == 0], [100])  # no spread to show: no error bars
    btcv = next(ax for ax in one_fold.axes if ax.get_title() == "BTCV")
    bars = [c for c in btcv.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3 and not any(c.has_yerr for c in bars)
    many = _figure3_with(results, [1, 10, 25, 50, 100])
    btcv = next(ax for ax in many.axes if ax.get_title() == "BTCV")
    assert btcv.get_xscale() == "log" and len([line for line in btcv.get_lines() if len(line.get_xdata()) > 1]) == 3


def test_tables_show_gaps_and_partial_means(rendered):
    out = rendered["out"]
    t1 = pd.read_csv(out / "tables" / "table1.csv").set_index("dataset")
    assert t1.loc["MSD_Brain", ["dice.cps", "dice.efficiency", "dice.performance"]].isna().all()  # no runs
    assert t1.loc["BTCV", ["dice.cps", "reldice.performance", "flops.efficiency"]].notna().all()
    assert "lesions" in t1.index and t1.index[-1] == "norm_avg"
    # KiTS23's unfinished PGPS-Perf fold counts no FLOPs; the fixture's schedules are the same everywhere
    assert t1.loc["KiTS23", "flops.performance"] == pytest.approx(t1.loc["BTCV", "flops.performance"])
    assert "| AMOS22 | " in _md(out, "table1") and "†" in _md(out, "table1").split("| AMOS22 |")[1].split("\n")[0]
    t2 = pd.read_csv(out / "tables" / "table2.csv").set_index("dataset")
    assert math.isnan(t2.loc["MSD_Lung", "dice.progressive-resolution"])
    assert not math.isnan(t2.loc["BTCV", "dice.progressive-resolution"])
    a4 = pd.read_csv(out / "tables" / "tableA4.csv").set_index("metric")
    assert a4.loc["flops", "MSD_Lung|cps"] == pytest.approx(100.0)
    assert math.isnan(a4.loc["dice", "AMOS22|single_crop"])
    assert "No runs for this table" in _md(out, "tableD9") or "MSD Lung" in _md(out, "tableD9")
    f5 = pd.read_csv(out / "tables" / "figure5.csv").set_index("dataset|length")
    assert (f5["combinations"] == 125).all()  # five seeds per strategy on BTCV and MSD Lung
    wins = f5[["cps|wins", "efficiency|wins", "performance|wins"]].sum(axis=1)
    assert (wins <= 100 + 1e-9).all()
    spearman = pd.read_csv(out / "tables" / "stats_spearman.csv").set_index("mode|length")
    assert spearman.loc["performance|100", "num_classes|rho"] == pytest.approx(
        _spearman_check(rendered, "performance", 100), abs=1e-5
    )


def _spearman_check(rendered, mode: str, length: int) -> float:
    """Spearman's rho recomputed by hand: rank correlation = Pearson correlation of the ranks."""
    results = pd.read_csv(rendered["res"] / "results.csv")
    agg = aggregate(select(results, length=length, modes=("cps", mode)))
    gain = agg[agg["mode"] == mode].set_index("dataset")["relative_dice"] - 1
    x = CHARACTERISTICS.set_index("dataset").loc[gain.index, "num_classes"]
    return float(np.corrcoef(x.rank(), gain.rank())[0, 1])


def test_comparison_views_hold_ours_published_and_difference(rendered):
    out = rendered["out"]
    comp = pd.read_csv(out / "compare" / "table1.csv", keep_default_na=True)
    brain = comp[(comp["row"] == "MSD_Brain") & (comp["column"] == "dice.cps")].iloc[0]
    assert math.isnan(brain["ours"]) and brain["published"] == 74.12 and math.isnan(brain["difference"])
    btcv = comp[(comp["row"] == "BTCV") & (comp["column"] == "dice.performance")].iloc[0]
    assert btcv["difference"] == pytest.approx(btcv["ours"] - 83.81, abs=1e-4)
    assert "83.81" in (out / "compare" / "table1.md").read_text()
    for name in outputs.TABLES + outputs.FIGURES:
        comp = pd.read_csv(out / "compare" / f"{name}.csv")
        published = figure3_published() if name == "figure3" else load_published(name)
        assert comp["published"].notna().sum() == len(published), name


def test_published_cells_match_rendered_table_keys():
    """Every published value lands on a cell of its table (also when the results are empty)."""
    empty = pd.DataFrame(columns=["run", *MANIFEST_COLUMNS, "status", "dice"])
    built = {name: (tables.TABLES[name](empty, pd.DataFrame(columns=["dataset"])) if name == "stats_spearman"
                    else tables.TABLES[name](empty)) for name in outputs.TABLES}  # fmt: skip
    epochs = pd.DataFrame(columns=["run", "epoch"])
    built["figure2"] = figures.figure2(empty, epochs, {})[1]
    built["figure3"] = figures.figure3(empty)[1]
    built["figure4"] = figures.figure4(empty, epochs)[1]
    built["figure5"] = figures.figure5(empty)[1]
    built["figureA6"] = figures.figureA6(empty, epochs)[1]
    for name in outputs.MICCAI_TABLES:
        built[name] = miccai.TABLES[name](empty, pd.DataFrame(columns=["run", "case", "label", "dice"]))
    for name in outputs.MICCAI_FIGURES:
        built[name] = miccai.FIGURES[name](empty)[1]
    for name, table in built.items():
        published = figure3_published() if name == "figure3" else load_published(name)
        keys = {(r, c.key) for r, _ in table.rows for c in table.columns}
        missing = {(r, c) for r, c in zip(published["row"], published["column"], strict=True)} - keys
        assert not missing, (name, sorted(missing)[:5])
        assert table.filled() == 0


def test_select_main_grid_rules():
    rows = [
        {"dataset": "ToothFairy2", "mode": "cps", "mirroring": m, "length": n, "fold": 0, "dice": 0.5}
        for m in (True, False) for n in (10, 100)
    ] + [
        {"dataset": "lesions", "mode": "performance", "sampler": s, "mirroring": True, "length": 4, "fold": 0,
         "dice": 0.5}
        for s in ("default", "split_crop", "single_crop")
    ]  # fmt: skip
    main_grid = select(pd.DataFrame(rows))
    tooth = main_grid[main_grid["dataset"] == "ToothFairy2"]
    assert tooth[["mirroring", "length"]].values.tolist() == [[False, 100]]  # the article trains it unmirrored
    lesions = main_grid[main_grid["dataset"] == "lesions"]
    assert sorted(lesions["sampler"]) == ["default", "split_crop"] and (lesions["length"] == 4).all()


def test_aggregate_relative_dice_over_common_folds():
    rows = [{"dataset": "A", "mode": "cps", "fold": f, "dice": d} for f, d in enumerate((0.8, 0.6, 0.1))]
    rows += [{"dataset": "A", "mode": "performance", "fold": f, "dice": d} for f, d in enumerate((0.9, 0.6))]
    rows.append({"dataset": "A", "mode": "performance", "fold": 2, "dice": math.nan})  # unfinished
    agg = aggregate(pd.DataFrame(rows)).set_index("mode")
    assert agg.loc["performance", "relative_dice"] == pytest.approx((0.9 + 0.6) / (0.8 + 0.6))
    assert (agg.loc["performance", "n"], agg.loc["performance", "runs"]) == (2, 3)
    assert agg.loc["cps", "dice"] == pytest.approx(0.5) and agg.loc["cps", "dice_sd"] == pytest.approx(
        np.std([0.8, 0.6, 0.1])
    )


def test_table_rendering_marks_escaping_and_gaps():
    table = Table(
        name="t",
        title="T_1: 50% & more",
        row_key="dataset",
        row_header="Dataset",
        rows=[("a", "A_x"), ("b", "B"), ("c", "C")],
        columns=[
            Column("x", "Dice [%] ↑", "CPS"),
            Column("y", "Dice [%] ↑", "Perf"),
            Column("z", "Δ", "Perf", kind="delta"),
        ],
        cells=pd.DataFrame(
            [
                cell("a", "x", 70.004),
                cell("a", "y", 72.0, n=2, runs=3),
                cell("a", "z", -0.071),
                cell("b", "x", 70.0),
                cell("b", "y", 70.001),
            ]
        ),
        ranks=[Rank(("x", "y"))],
    )
    md = to_markdown(table)
    assert "| A_x | <u>70.00</u> | **72.00†** | ▼ 0.07 |" in md
    assert "| B | **70.00** | **70.00** | – |" in md  # equal as printed: both best
    assert "| C | – | – | – |" in md and "fewer runs" in md
    tex = to_latex(table)
    assert "T\\_1: 50\\% \\& more" in tex and "\\textbf{72.00$^\\dagger$}" in tex and "\\underline{70.00}" in tex
    assert "$\\blacktriangledown$ 0.07" in tex and "\\multicolumn{2}{c}{Dice [\\%] $\\uparrow$}" in tex
    csv = to_csv(table).splitlines()
    assert csv[0] == "dataset,label,x,y,z" and csv[3] == "c,C,,,"
    published = pd.DataFrame({"row": ["a", "zz"], "column": ["x", "x"], "value": [71.0, 1.0], "spread": [math.nan] * 2,
                              "source": ["s", "s"], "note": ["", ""]})  # fmt: skip
    comp = compare(table, published).set_index(["row", "column"])
    assert comp.loc[("a", "x"), "difference"] == pytest.approx(-0.996)
    assert math.isnan(comp.loc[("zz", "x"), "ours"]) and comp.loc[("zz", "x"), "published"] == 1.0
    assert math.isnan(comp.loc[("c", "y"), "published"])


def test_report_package_import_is_light_and_outputs_fixed():
    code = "import sys, pgps.report; print(sorted(m for m in ('matplotlib', 'pandas', 'scipy') if m in sys.modules))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
    figures = outputs.FIGURES + outputs.MICCAI_FIGURES
    tables = outputs.TABLES + outputs.MICCAI_TABLES + figures
    assert len(OUTPUTS) == len(set(OUTPUTS)) == 5 * len(tables) + 2 * len(figures) + 1
    assert {"tables/table1.tex", "compare/tableD8.md", "figures/figureA6.pdf", "report.md"} <= set(OUTPUTS)
    assert {"tables/miccai_table1.csv", "compare/miccai_tableS2.md", "figures/miccai_figure3.pdf"} <= set(OUTPUTS)
    assert len(tables) == 19


def test_report_cli_lists_outputs_and_rejects_missing_results(tmp_path, capsys):
    assert main(["report", "--list-outputs"]) == 0
    assert capsys.readouterr().out.split() == list(OUTPUTS)
    assert main(["report", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert "pgps collect" in capsys.readouterr().err


# -- task characteristics ------------------------------------------------------------------------------
def _preprocessed(root: Path, labels: dict, segs: list[np.ndarray], fmt: str) -> Path:
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "numTraining": len(segs)}))
    conf = {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [4, 4, 4], "batch_size": 2,
            "median_image_size_in_voxels": [8.0, 8.0, 8.0]}  # fmt: skip
    plans = {"configurations": {"3d_fullres": conf, "3d_light": {"inherits_from": "3d_fullres"}}}
    (root / "nnUNetPlans.json").write_text(json.dumps(plans))
    data = root / "nnUNetPlans_3d_fullres"
    data.mkdir()
    for i, seg in enumerate(segs):
        if fmt == "b2nd":
            import blosc2

            blosc2.asarray(seg, urlpath=str(data / f"case_{i}_seg.b2nd"), mode="w")
        else:
            np.save(data / f"case_{i}_seg.npy", seg)
    return root


def _segs() -> list[np.ndarray]:
    a = np.zeros((1, 4, 4, 4), np.int16)
    a[0, 0, :2, :] = 1  # 8 voxels of label 1
    a[0, 1, 0, :2] = 2  # 2 voxels of label 2
    a[0, 3, 3, :] = -1  # nnU-Net's outside-the-mask marker: background
    b = np.zeros((1, 4, 4, 4), np.int16)
    b[0, 2, 2, 2] = 2
    return [a, b]


@pytest.mark.parametrize("fmt", ["b2nd", "npy"])
def test_characteristics_hand_computed(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr("pgps.report.characteristics.SLAB_VOXELS", 16)  # one slice per slab: exercises slabbing
    folder = _preprocessed(tmp_path / "ds", {"background": 0, "big": 1, "small": 2}, _segs(), fmt)
    c = task_characteristics(folder, "nnUNetPlans", "3d_light", dataset="toy")
    assert (c["dataset"], c["num_classes"], c["training_cases"], c["cases_counted"]) == ("toy", 2, 2, 2)
    assert c["patch_to_volume_coverage"] == pytest.approx(64 / 512)
    assert c["smallest_class"] == "small" and c["smallest_class_frequency"] == pytest.approx(3 / 128)
    assert c["foreground_frequency"] == pytest.approx(11 / 128)


def test_characteristics_regions_and_cli(tmp_path, capsys):
    labels = {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3}
    folder = _preprocessed(tmp_path / "ds", labels, _segs(), "npy")
    out = tmp_path / "chars.csv"
    assert main(["characteristics", "--dataset", f"Toy={folder}", "--out", str(out), "--quiet"]) == 0
    row = pd.read_csv(out).iloc[0]
    assert (row["dataset"], row["num_classes"], row["smallest_class"]) == ("Toy", 2, "core")
    assert row["smallest_class_frequency"] == pytest.approx(3 / 128)
    assert "Toy" in capsys.readouterr().out
    assert main(["characteristics", "--dataset", "no-equals-sign", "--out", str(out)]) == 2


def test_report_renders_a_results_table_without_manifest_factors(tmp_path):
    """A hand-made results.csv (no manifest factors, no run column, no telemetry) still renders all."""
    rows = [
        {"dataset": "lesions", "trainer": f"t_{m}", "mode": m, "fold": 0, "dice": d, "dice_per_class": "{}",
         "epochs": 40, "train_time_s": t, "p_max_mean_epoch_time_s": 2.5, "iterated_voxels": v,
         "planned_relative_voxels": v / 2e8}
        for m, d, t, v in (("cps", 0.88, 100.0, 2e8), ("efficiency", 0.87, 40.0, 7e7),
                           ("performance", 0.89, 95.0, 1.9e8))
    ]  # fmt: skip
    (tmp_path / "res").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "res" / "results.csv", index=False)
    assert main(["report", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "out")]) == 0
    assert all((tmp_path / "out" / rel).is_file() for rel in OUTPUTS)
    t1 = pd.read_csv(tmp_path / "out" / "tables" / "table1.csv").set_index("dataset")
    assert t1.loc["lesions", "flops.efficiency"] == pytest.approx(35.0)
    assert t1.loc["lesions", "runtime.efficiency"] == pytest.approx(100 * 40 / (2.5 * 40))
