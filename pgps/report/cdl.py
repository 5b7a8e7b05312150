"""The data-curriculum experiment's table in the style of CDL-UNet's Table 5, beside the published one.

Inputs are small files the expensive steps wrote: one ``pgps surface`` table per arm (Dice and NSD per
test case and class), ``difficulty.csv`` and the synthetic dataset's ``dataset.json`` (class names and the
known corruption level of every case). :func:`render_cdl` writes into ``out``:

- ``table5.csv``: per class and the average, DSC and NSD [%] of every arm (mean over the test cases where
  the class occurs in prediction or reference, then over the classes, as nnU-Net averages Dice);
- ``table5.md``: that table, the published Table 5 (FLARE organs), and the comparable quantity, the
  average gain of the easy-then-hard course over the easy course alone, ours beside published (with
  several folds, also the gain within each fold: its spread is the run-to-run noise);
- ``difficulty.md``: the discriminator on the experiment's data: groups, L_real per label set, and the
  Spearman correlation between DS and the known corruption level.

Only pandas and numpy (scipy for Spearman): the analysis stack renders it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pgps.io import atomic_write_text
from pgps.report.published import load_published

ARM_LABELS = {
    "uniform": "uniform (all cases)",
    "easy_only": "only easy course",
    "easy_then_hard": "easy then hard",
    "uniform_pgps": "uniform + PGPS",
    "easy_then_hard_pgps": "easy then hard + PGPS",
}
"""Names of the experiment's arms in the table (others are shown as they are)."""

OUR_GAINS = [
    ("ours (easy then hard - only easy)", "easy_then_hard", "easy_only"),
    ("ours (easy then hard - uniform)", "easy_then_hard", "uniform"),
    ("ours with PGPS (easy then hard - uniform)", "easy_then_hard_pgps", "uniform_pgps"),
]
"""The gains table5.md reports: (label, arm after, arm before); rows whose arms were not run are left out."""


def arm_table(surface: pd.DataFrame, class_names: Mapping[int, str]) -> pd.DataFrame:
    """Rows: classes and ``average``; columns ``dsc``, ``nsd`` in percent."""
    per_class = surface.groupby("class")[["dice", "nsd"]].mean() * 100
    per_class.index = [class_names.get(int(c), str(c)) for c in per_class.index]
    per_class.loc["average"] = per_class.mean()
    return per_class.rename(columns={"dice": "dsc"})


def cdl_table(surfaces: Mapping[str, pd.DataFrame], class_names: Mapping[int, str]) -> pd.DataFrame:
    """One ``<arm>.dsc`` and ``<arm>.nsd`` column pair per arm, classes and ``average`` as rows."""
    parts = []
    for arm, surface in surfaces.items():
        t = arm_table(surface, class_names)
        parts.append(t.rename(columns={c: f"{arm}.{c}" for c in t.columns}))
    table = pd.concat(parts, axis=1)
    table.index.name = "class"
    return table


def _fmt(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.2f}"


def _markdown(table: pd.DataFrame, header: list[str], keys: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "--:|" * (len(header) - 1)]
    for row, values in table.iterrows():
        lines.append(f"| {row} | " + " | ".join(_fmt(values.get(k, math.nan)) for k in keys) + " |")
    return lines


def published_table(published_dir: str | Path | None = None) -> pd.DataFrame:
    pub = load_published("cdl_table5", published_dir)
    table = pub.pivot(index="row", columns="column", values="value")
    order = [r for r in pub["row"].drop_duplicates() if r != "average"] + ["average"]
    return table.loc[order]


def gain(table: pd.DataFrame, after: str, before: str) -> tuple[float, float]:
    """Average DSC and NSD of ``after`` minus ``before`` (percentage points)."""
    if f"{after}.dsc" not in table or f"{before}.dsc" not in table:
        return math.nan, math.nan
    avg = table.loc["average"]
    return avg[f"{after}.dsc"] - avg[f"{before}.dsc"], avg[f"{after}.nsd"] - avg[f"{before}.nsd"]


def difficulty_summary(difficulty: pd.DataFrame, case_levels: Mapping[str, float] | None) -> list[str]:
    """Markdown lines on the discriminator: groups, L_real, and Spearman(DS, known corruption level)."""
    lines = ["**Label-based difficulty discriminator on the experiment's training cases**", ""]
    groups = difficulty["group"].value_counts()
    lines.append(
        f"{len(difficulty)} cases: " + ", ".join(f"{int(groups.get(g, 0))} {g}" for g in ("easy", "hard", "erroneous"))
        + f"; mean DS {difficulty['ds'].mean():.4f}; L_real: "
        + ", ".join(f"{k} {v}" for k, v in difficulty["real"].value_counts().sort_index().items())
    )  # fmt: skip
    if case_levels:
        from scipy.stats import spearmanr

        levels = difficulty["case"].map(case_levels)
        rho = spearmanr(difficulty["ds"], levels).statistic
        lines += ["", f"Spearman correlation of DS with the known corruption level: {rho:.3f} (-1: DS ranks the "
                  "cases exactly in reverse corruption order)"]  # fmt: skip
    return lines


def render_cdl(
    surface_files: Mapping[str, str | Path | list[str | Path]],
    dataset_json: str | Path,
    difficulty_csv: str | Path,
    out: str | Path,
    published_dir: str | Path | None = None,
    notes: str = "",
) -> list[Path]:
    """Write ``table5.csv``, ``table5.md`` and ``difficulty.md`` into ``out`` (see the module docstring).

    ``surface_files`` maps each arm to its ``pgps surface`` table, or to several (folds pooled as repeats).
    """
    meta = json.loads(Path(dataset_json).read_text())
    class_names = {int(v): k for k, v in meta["labels"].items() if int(v) != 0}
    repeats = {
        arm: [pd.read_csv(p) for p in (paths if isinstance(paths, list) else [paths])]
        for arm, paths in surface_files.items()
    }
    surfaces = {arm: pd.concat(frames, ignore_index=True) for arm, frames in repeats.items()}
    table = cdl_table(surfaces, class_names)
    # the same comparison within each repeat (fold), when every arm has that many: its spread is the noise
    n_repeats = min(len(frames) for frames in repeats.values())
    per_repeat = [cdl_table({arm: frames[r] for arm, frames in repeats.items()}, class_names) for r in range(n_repeats)]
    tolerance = sorted({float(t) for s in surfaces.values() for t in s["tolerance_mm"].unique()})
    cases = sorted({c for s in surfaces.values() for c in s["case"].unique()})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table5.csv", table.to_csv(float_format="%.4f", lineterminator="\n"))

    arms = list(surfaces)
    header = ["class"] + [f"{ARM_LABELS.get(a, a)} {m}" for a in arms for m in ("DSC", "NSD")]
    keys = [f"{a}.{m}" for a in arms for m in ("dsc", "nsd")]
    pub = published_table(published_dir)
    lines = [
        "**Data-level curriculum on synthetic noisy labels, in the style of CDL-UNet Table 5 (ours)**",
        "",
        f"DSC and NSD [%] on {len(cases)} test cases with clean labels (NSD tolerance "
        f"{', '.join(f'{t:g}' for t in tolerance)} mm); trained on each case's most reliable noisy label set (L_real).",
        *([notes] if notes else []),
        "",
        *_markdown(table, header, keys),
        "",
        "**Published: CDL-UNet Table 5 (FLARE 2024 public validation, 13 organs)**",
        "",
        *_markdown(
            pub,
            ["organ", "only easy course DSC", "only easy course NSD", "final DSC", "final NSD"],
            ["easy.dsc", "easy.nsd", "final.dsc", "final.nsd"],
        ),
        "",
        "**The comparable quantity: average gain of the easy-then-hard course over the easy course alone**",
        "",
        "| | DSC gain [pp] | NSD gain [pp] |" + (" DSC gain per fold [pp] |" if n_repeats > 1 else ""),
        "|---|--:|--:|" + ("--:|" if n_repeats > 1 else ""),
    ]
    pub_avg = pub.loc["average"]
    lines.append(f"| published (final - only easy) | {pub_avg['final.dsc'] - pub_avg['easy.dsc']:+.2f} | "
                 f"{pub_avg['final.nsd'] - pub_avg['easy.nsd']:+.2f} |" + (" |" if n_repeats > 1 else ""))  # fmt: skip
    for label, after, before in OUR_GAINS:
        d, n = gain(table, after, before)
        if not math.isfinite(d):
            continue
        line = f"| {label} | {d:+.2f} | {n:+.2f} |"
        if n_repeats > 1:
            line += " " + ", ".join(f"{gain(t, after, before)[0]:+.2f}" for t in per_repeat) + " |"
        lines.append(line)
    atomic_write_text(out / "table5.md", "\n".join(lines) + "\n")

    difficulty = pd.read_csv(difficulty_csv)
    levels = (meta.get("pgps_synth", {}).get("label_noise") or {}).get("case_levels")
    atomic_write_text(out / "difficulty.md", "\n".join(difficulty_summary(difficulty, levels)) + "\n")
    return [out / "table5.csv", out / "table5.md", out / "difficulty.md"]
