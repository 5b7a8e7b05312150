"""What ``pgps collect``, ``pgps characteristics`` and ``pgps report`` do (parsers in :mod:`pgps.cli`)."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pandas as pd

from pgps.io import atomic_write_text


def collect(args: argparse.Namespace) -> int:
    """Read every fold folder of the run manifest into the results folder."""
    from pgps.report.results import collect as collect_runs
    from pgps.report.results import read_characteristics, read_manifest, write_results

    manifest = read_manifest(args.runs)
    characteristics = read_characteristics(args.characteristics) if args.characteristics else None
    results, epochs, schedules, cases = collect_runs(manifest, progress=None if args.quiet else sys.stderr)
    paths = write_results(args.out, results, epochs, schedules, characteristics, cases)
    paths += write_surface(args.out, manifest)
    status = results["status"].value_counts().to_dict()
    print(
        f"{len(results)} runs ({', '.join(f'{n} {s}' for s, n in sorted(status.items())) or 'none'}), "
        f"{len(epochs)} epoch rows -> {', '.join(str(p) for p in paths)}"
    )
    return 0


def write_surface(out: str | Path, manifest: pd.DataFrame) -> list[Path]:
    """``surface.csv``: every run's per-case, per-class Dice/NSD (when any run has ``pgps surface``'s table)."""
    from pgps.report.results import FACTORS
    from pgps.report.surface import RESULTS_SURFACE_FILE, collect_surface

    table = collect_surface(manifest, FACTORS)
    path = Path(out) / RESULTS_SURFACE_FILE
    if not len(table):
        path.unlink(missing_ok=True)  # an earlier collection's: not these results'
        return []
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    atomic_write_text(path, buf.getvalue())
    return [path]


def _dataset_args(values: list[str]) -> list[tuple[str, Path]]:
    pairs: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--dataset takes NAME=PREPROCESSED_DIR, got {value!r}")
        if name in pairs:
            raise ValueError(f"--dataset {name} is given twice ({pairs[name]} and {folder}); give each dataset once")
        pairs[name] = Path(folder)
    return list(pairs.items())


def characteristics(args: argparse.Namespace) -> int:
    """Task characteristics of each dataset into one CSV."""
    from pgps.report.characteristics import COLUMNS, progress_printer, task_characteristics

    rows = []
    for name, folder in _dataset_args(args.dataset):
        progress = None if args.quiet else progress_printer(name)
        rows.append(task_characteristics(folder, args.plans, args.configuration, dataset=name, progress=progress))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.10g", lineterminator="\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, buf.getvalue())
    print(table.to_string(index=False))
    return 0


def report(args: argparse.Namespace) -> int:
    """Render every table and figure (or list the fixed outputs)."""
    from pgps.report.outputs import OUTPUTS

    if args.list_outputs:
        print("\n".join(OUTPUTS))
        return 0
    if not args.results or not args.out:
        raise ValueError("give --results DIR and --out DIR (or --list-outputs)")
    from pgps.report.published import check_published_dir
    from pgps.report.render import render_report

    if args.published:
        check_published_dir(args.published)
    render_report(args.results, args.out, args.published, log=print)
    return 0


def study_report(args: argparse.Namespace) -> int:
    """Render the synthetic study and print the claims' verdicts."""
    from pgps.experiments.study import study_outputs

    if args.list_outputs:
        print("\n".join(study_outputs()))
        return 0
    from pgps.report.study import render_study

    written = render_study(args.results, args.study, args.out, log=print)
    print(f"{len(written)} files -> {args.out}")
    return 0
