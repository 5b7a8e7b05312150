"""The AMOS22 large-batch/large-patch study's Tables 1-4 from held-out scores, beside the published values.

Source: "Large Batch and Patch Size Training for Medical Image Segmentation" (``shared/papers/
large-batch-patch-amos22.txt``): nnU-Net on AMOS22 with larger patches (Table 1) and batches (Table 2),
four losses (Table 3), and two five-fold models and their ensemble (Table 4), scored by Dice (DSC) and
Normalized Surface Dice (NSD) on the official validation cases. Tables 1-3 are on Task 2, one fold each.

Input: the held-out manifest (:data:`pgps.experiments.heldout.EVALUATION_COLUMNS`; ``pgps amos22-report --manifest``)
whose ``scores`` files are ``pgps surface`` tables (``case``, ``class``, ``dice``, ``nsd``). A score is the mean
over cases of each case's mean over its foreground classes (classes absent from both prediction and
reference are left out), as the AMOS22 challenge averages organs and cases. A missing score file is a gap.

Columns: ``dsc.<mode>`` and ``nsd.<mode>`` for each curriculum mode the manifest holds (``cps`` = plain
nnU-Net, the paper's; ``efficiency``/``performance`` = the same setting trained with PGPS), published
values in the ``cps`` columns. The paper's patch (64, 354, 354) is trained as (64, 352, 352), the nearest
multiple of the network's stride (noted in the table).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pgps.experiments.heldout import EVALUATION_COLUMNS
from pgps.report.published import PUBLISHED_DIR, load_published
from pgps.report.render import _write_table
from pgps.report.table import Column, Rank, Table, cell

MODES = ("cps", "efficiency", "performance")
MODE_LABELS = {"cps": "nnU-Net (CPS)", "efficiency": "PGPS-Eff", "performance": "PGPS-Perf"}
PATCHES = {"64x160x160": "64x160x160", "64x288x288": "64x288x288", "64x354x354": "64x352x352",
           "64x384x384": "64x384x384"}  # fmt: skip
"""Table 1's rows: the paper's patch -> the patch we train (354 is not a multiple of the stride 32)."""
BATCHES = ("2", "4", "16", "64")
LOSSES = {"dice_ce": "Dice & CE (nnU-Net's)", "dice_focal": "Dice & Focal", "dice_topk10": "Dice & TopK10",
          "dice_perimeter": "Dice & Perimeter"}  # fmt: skip


def case_scores(path: str | Path) -> pd.DataFrame | None:
    """Per case: the mean Dice and NSD over its scored classes (``None`` if the score file is not there yet)."""
    path = Path(path)
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    missing = [c for c in ("case", "dice", "nsd") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: a score table needs columns case, dice, nsd; it lacks {', '.join(missing)}")
    return df.groupby("case")[["dice", "nsd"]].mean()


def _score(rows: pd.DataFrame, metric: str) -> tuple[float, float, int]:
    """Mean over the rows' cases (every score file pooled), its SD and the number of cases."""
    frames = [f for f in (case_scores(p) for p in rows["scores"]) if f is not None]
    if not frames:
        return math.nan, math.nan, 0
    values = pd.concat(frames)[metric].dropna()
    return float(values.mean()), float(values.std()) if len(values) > 1 else math.nan, len(values)


def _columns(modes: list[str]) -> list[Column]:
    return [
        Column(f"{metric}.{mode}", MODE_LABELS.get(mode, mode), metric.upper(), digits=4, sd_digits=3)
        for mode in modes
        for metric in ("dsc", "nsd")
    ]


def _cells(rows: list[tuple[str, pd.DataFrame]], modes: list[str]) -> list[dict]:
    cells = []
    for key, selected in rows:
        for mode in modes:
            chosen = selected[selected["mode"] == mode]
            for metric in ("dsc", "nsd"):
                value, sd, n = _score(chosen, "dice" if metric == "dsc" else "nsd")
                cells.append(cell(key, f"{metric}.{mode}", value, sd, n, runs=n if n else 0))
    return cells


def _modes(manifest: pd.DataFrame) -> list[str]:
    present = set(manifest["mode"]) if len(manifest) else set()
    return [m for m in MODES if m in present or m == "cps"] + sorted(present - set(MODES))


def _task(dataset: str, tasks: dict[str, str]) -> str:
    return tasks.get(dataset, "task1" if "task1" in dataset else "task2" if "task2" in dataset else dataset)


def build_tables(manifest: pd.DataFrame, tasks: dict[str, str] | None = None) -> list[Table]:
    """Tables 1-4 from the held-out manifest (one row per scored prediction)."""
    tasks = tasks or {}
    m = manifest.astype({c: str for c in ("patch_size", "batch_size", "loss", "mode", "kind", "dataset", "folds")})
    m = m.assign(task=[_task(d, tasks) for d in m["dataset"]])
    modes = _modes(m)
    runs = m[(m["kind"] == "run") & (m["task"] == "task2")]
    ce = runs[runs["loss"] == "dice_ce"]
    ranks = [Rank(tuple(f"{k}.{mode}" for mode in modes)) for k in ("dsc", "nsd")]
    note = "Mean over cases of each case's mean over organs; ± = SD over cases; n = cases scored (runs column)."
    t1_rows = [(paper, ce[(ce["patch_size"] == ours) & (ce["batch_size"] == "2")]) for paper, ours in PATCHES.items()]
    t2_rows = [(b, ce[(ce["patch_size"] == "64x160x160") & (ce["batch_size"] == b)]) for b in BATCHES]
    at288 = runs[(runs["patch_size"] == "64x288x288") & (runs["batch_size"] == "2")]
    t3_rows = [(loss, at288[at288["loss"] == loss]) for loss in LOSSES]
    t4_rows = []
    for task in ("task1", "task2"):
        here = m[m["task"] == task]
        models = here[here["kind"] == "model"]
        member = models["name"].str.rsplit(":", n=1).str[-1] if len(models) else pd.Series(dtype=str)
        for key in ("model_a", "model_b"):
            t4_rows.append((f"{task}|{key}", models[member == key]))
        t4_rows.append((f"{task}|ensemble", here[here["kind"] == "ensemble"]))
    specs = [
        ("amos22_table1", "AMOS22 Table 1: patch size (batch 2, Dice & CE, Task 2, one fold)", "patch", t1_rows,
         {k: f"({k.replace('x', ', ')})" + (" [trained (64, 352, 352)]" if k != v else "") for k, v in PATCHES.items()},
         ["The paper's (64, 354, 354) is trained as (64, 352, 352): 354 is not a multiple of the stride 32."]),
        ("amos22_table2", "AMOS22 Table 2: batch size (patch (64, 160, 160), Dice & CE, Task 2, one fold)", "batch",
         t2_rows, {b: b for b in BATCHES}, []),
        ("amos22_table3", "AMOS22 Table 3: loss (batch 2, patch (64, 288, 288), Task 2, one fold)", "loss", t3_rows,
         LOSSES, []),
        ("amos22_table4", "AMOS22 Table 4: model A, model B (five folds each) and their ensemble", "model", t4_rows,
         {f"{t}|{k}": f"Task {t[-1]}: {label}" for t in ("task1", "task2") for k, label in
          (("model_a", "model A (64,160,160), bs 16, Dice & CE"), ("model_b", "model B (64,288,288), bs 8, Dice & "
           "Focal"), ("ensemble", "ensemble (model A & B)"))},
         ["Models predict with the mean of their five folds; the ensemble averages the two models' probabilities "
          "with post-processing as configured (pgps ensemble)."]),
    ]  # fmt: skip
    tables = []
    for name, title, header, rows, labels, notes in specs:
        tables.append(Table(
            name=name, title=title, row_key=header, row_header=header, rows=[(k, labels[k]) for k, _ in rows],
            columns=_columns(modes), cells=pd.DataFrame(_cells(rows, modes)), ranks=ranks, notes=[*notes, note],
        ))  # fmt: skip
    return tables


def render_amos22(
    manifest_path: str | Path,
    out_dir: str | Path,
    published_dir: str | Path | None = None,
    tasks: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write ``tables/amos22_table{1..4}.csv|md|tex`` and ``compare/amos22_table{1..4}.csv|md`` under ``out_dir``."""
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    missing = [c for c in EVALUATION_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"{manifest_path}: the held-out manifest lacks column(s) {', '.join(missing)}")
    written: list[Path] = []
    for table in build_tables(manifest, tasks):
        written += _write_table(Path(out_dir), table, load_published(table.name, published_dir or PUBLISHED_DIR))
        if log:
            log(f"{table.name}: {table.filled()} of {len(table.cells)} cells")
    return written
