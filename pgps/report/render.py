"""``pgps report``: every table and figure of the article from a results folder, beside the published values.

Reads only the collected results folder (``results.csv``, ``epochs.csv``, ``schedules.json``,
``characteristics.csv``; see :mod:`pgps.report.results`) and the published-value files, never a
checkpoint, and writes the fixed list :data:`pgps.report.OUTPUTS` under the output folder:

- ``tables/<name>.csv|md|tex`` for each table of :data:`~pgps.report.outputs.TABLES` and the key
  numbers of each figure;
- ``compare/<name>.csv|md``: ours, published, difference, cell by cell;
- ``figures/<name>.png|pdf`` for each figure of :data:`~pgps.report.outputs.FIGURES`;
- ``report.md``: what the results hold and how full each table is.

Missing runs show as gaps; a table or figure without any run is still written, saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pgps.io import atomic_write_text
from pgps.report import figures, miccai, outputs, tables
from pgps.report.published import (
    PUBLISHED_DIR,
    compare,
    comparison_csv,
    comparison_markdown,
    load_published,
)
from pgps.report.results import load_results
from pgps.report.style import save_figure
from pgps.report.table import Table, to_csv, to_latex, to_markdown


def _published_cells(published: pd.DataFrame) -> dict[tuple[str, str], float]:
    return {(r, c): float(v) for r, c, v in zip(published["row"], published["column"], published["value"], strict=True)}


def figure3_published(directory: str | Path | None = None) -> pd.DataFrame:
    """Figure 3's published values: Table 1's Dice columns, at 100% training length."""
    t1 = load_published("table1", directory)
    dice = t1[t1["column"].str.startswith("dice.") & (t1["row"] != "norm_avg")].copy()
    dice["column"] = dice["column"].str.removeprefix("dice.") + "|100"
    return dice.reset_index(drop=True)


def _write_table(out: Path, table: Table, published: pd.DataFrame) -> list[Path]:
    files = {
        out / "tables" / f"{table.name}.csv": to_csv(table),
        out / "tables" / f"{table.name}.md": to_markdown(table),
        out / "tables" / f"{table.name}.tex": to_latex(table),
    }
    comparison = compare(table, published)
    files[out / "compare" / f"{table.name}.csv"] = comparison_csv(comparison)
    files[out / "compare" / f"{table.name}.md"] = comparison_markdown(table, comparison)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return list(files)


def render_report(
    results_dir: str | Path,
    out_dir: str | Path,
    published_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Render everything into ``out_dir``; returns the files written (all of :data:`pgps.report.OUTPUTS`)."""
    started = time.perf_counter()
    say = log or (lambda _: None)
    data = load_results(results_dir)
    results, epochs, schedules = data["results"], data["epochs"], data["schedules"]
    out = Path(out_dir)
    pub_dir = Path(published_dir) if published_dir else PUBLISHED_DIR
    written: list[Path] = []
    summary: list[tuple[str, Table]] = []

    for name in outputs.TABLES:
        builder = tables.TABLES[name]
        table = builder(results, data["characteristics"]) if name == "stats_spearman" else builder(results)
        written += _write_table(out, table, load_published(name, pub_dir))
        summary.append((name, table))
        say(f"{name}: {table.filled()} of {len(table.cells)} cells")

    published = {name: load_published(name, pub_dir) for name in outputs.FIGURES}
    published["figure3"] = figure3_published(pub_dir)
    fig5 = {
        (r, c): (float(v), float(s))
        for r, c, v, s in zip(*(published["figure5"][k] for k in ("row", "column", "value", "spread")), strict=True)
    }
    rendered = {
        "figure2": lambda: figures.figure2(results, epochs, schedules),
        "figure3": lambda: figures.figure3(results, _figure3_points(published["figure3"])),
        "figure4": lambda: figures.figure4(results, epochs, _published_cells(published["figure4"])),
        "figure5": lambda: figures.figure5(results, fig5),
        "figureA6": lambda: figures.figureA6(results, epochs, _published_cells(published["figureA6"])),
    }
    for name in outputs.MICCAI_TABLES:  # the MICCAI 2024 paper's tables
        table = miccai.TABLES[name](results, data["cases"])
        written += _write_table(out, table, load_published(name, pub_dir))
        summary.append((name, table))
        say(f"{name}: {table.filled()} of {len(table.cells)} cells")
    for name in outputs.MICCAI_FIGURES:
        published[name] = load_published(name, pub_dir)
        rendered[name] = lambda name=name: miccai.FIGURES[name](results, _published_cells(published[name]))
    for name in outputs.FIGURES + outputs.MICCAI_FIGURES:
        fig, table = rendered[name]()
        paths = [out / "figures" / f"{name}.{ext}" for ext in outputs.FIGURE_FORMATS]
        save_figure(fig, *paths)
        written += paths + _write_table(out, table, published[name])
        summary.append((name, table))
        say(f"{name}: figure and {table.filled()} of {len(table.cells)} numbers")

    index = out / outputs.INDEX
    atomic_write_text(index, _index(results, summary))
    written.append(index)
    say(f"wrote {len(written)} files to {out} in {time.perf_counter() - started:.1f} s")
    return written


def _figure3_points(published: pd.DataFrame) -> dict[tuple[str, str], float]:
    return {
        (r, c.split("|")[0]): float(v)
        for r, c, v in zip(published["row"], published["column"], published["value"], strict=True)
    }


def _index(results: pd.DataFrame, summary: list[tuple[str, Table]]) -> str:
    """report.md: what the results hold, how full each output is, and the figures' captions. Nothing that changes
    when the same results are rendered again (no time, no date), so a re-render leaves a checkout clean."""
    status = results["status"].value_counts().to_dict() if "status" in results else {}
    lines = [
        "# pgps report",
        "",
        f"{len(results)} runs in the manifest: "
        + (", ".join(f"{n} {s}" for s, n in sorted(status.items())) or "none")
        + f"; {results['dataset'].nunique() if len(results) else 0} datasets.",
        "",
        "| output | filled cells | files |",
        "|---|--:|---|",
    ]
    for name, table in summary:
        files = [f"[table](tables/{name}.md)", f"[vs published](compare/{name}.md)"]
        if name in outputs.FIGURES + outputs.MICCAI_FIGURES:
            files.insert(0, f"[figure](figures/{name}.png)")
        filled = f"{table.filled()} / {len(table.cells)}"
        lines.append(f"| {table.title} | {filled} | {', '.join(files)} |")
    lines += ["", "Gaps (–) are runs that are missing or unfinished; nothing is filled in.", "", "## Figures", ""]
    for name in outputs.FIGURES + outputs.MICCAI_FIGURES:
        number, _, caption = outputs.CAPTIONS[name].partition(": ")
        lines.append(f"- **{number}** ([png](figures/{name}.png), [pdf](figures/{name}.pdf)): {caption}")
    if len(results) and "status" in results:
        missing = results[results["status"] != "complete"]
        if len(missing):
            lines += ["", f"## Runs without a result ({len(missing)})", ""]
            for r in missing.head(200).to_dict("records"):
                factors = ", ".join(
                    f"{k}={r[k]}"
                    for k in ("dataset", "backbone", "mode", "sampler", "mirroring", "length", "fold", "seed")
                )
                lines.append(f"- {factors}: {r['status']}")
            if len(missing) > 200:
                lines.append(f"- ... and {len(missing) - 200} more (results.csv, column status)")
    return "\n".join(lines) + "\n"
