"""Report commands: collect runs, task characteristics, and render the article's, the synthetic study's, CDL's and
the AMOS22 study's tables and figures."""

from __future__ import annotations

import argparse


def _cdl_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cdl-report",
        help="the data-curriculum experiment's paired tests, a CDL-UNet Table 5 and its paragraph",
        description="From the manifest of workflow/rules/cdl.smk (per seed: dataset.json, difficulty.csv, a pgps "
        "surface table and the fold folder of every model), write cases.csv (Dice and NSD per test case, seed and "
        "model), comparisons.csv (easy then hard vs the compute control and vs uniform: t-test over the seeds' mean "
        "differences, Holm over the two, Hodges-Lehmann over the cases), table5.csv/.md beside the published "
        "Table 5, difficulty.md (the discriminator per seed; the easy model both continuations loaded, checked by "
        "SHA-256) and results.md (the paragraph the CDL guide quotes); pgps.report.cdl.",
    )
    p.add_argument("--manifest", required=True, metavar="JSON", help="results/cdl/manifest.json of the workflow")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--published", metavar="DIR", help="published-value files (default: the ones shipped)")
    p.add_argument("--notes", default="", help="a line about the run (size, epochs) under the table's title")
    p.set_defaults(func=_run_cdl_report)


def _run_cdl_report(args: argparse.Namespace) -> int:
    from pgps.report.cdl import render_cdl

    for path in render_cdl(args.manifest, args.out, args.published, args.notes):
        print(path)
    return 0


def _collect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="collect the runs of a manifest into one results folder (tables and figures render from it)",
        description="Read each run's fold folder (nnU-Net's validation/summary.json, pgps_summary.json, "
        "pgps_telemetry.csv) listed in a run manifest and write OUT/results.csv (one row per run), OUT/epochs.csv "
        "(per-epoch telemetry), OUT/schedules.json and, if given, OUT/characteristics.csv. A run that has not "
        "written a file yet gets missing values, never invented ones.",
    )
    p.add_argument(
        "--runs", required=True, metavar="CSV",
        help="run manifest: dataset, backbone, mode, sampler, mirroring, length, fold, seed, trainer, plans, "
        "configuration, fold_dir",
    )  # fmt: skip
    p.add_argument("--characteristics", metavar="CSV", help="task characteristics (pgps characteristics) to copy")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder to write")
    p.set_defaults(func=_run_collect)


def _run_collect(args: argparse.Namespace) -> int:
    from pgps.report.results import collect_folder

    results, epochs, paths = collect_folder(args.runs, args.out, args.characteristics, args.progress)
    status = results["status"].value_counts().to_dict()
    print(
        f"{len(results)} runs ({', '.join(f'{n} {s}' for s, n in sorted(status.items())) or 'none'}), "
        f"{len(epochs)} epoch rows -> {', '.join(str(p) for p in paths)}"
    )
    return 0


def _characteristics_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "characteristics",
        help="task characteristics of nnU-Net preprocessed datasets (classes, size, coverage, imbalance)",
        description="Compute per dataset the article's four task characteristics (Section 3.3) from its nnU-Net "
        "preprocessed folder: number of foreground classes, training set size, patch-to-volume coverage "
        "(numel(P_max) / numel(median shape)) and the voxel share of the least frequent foreground class "
        "(see pgps.report.characteristics).",
    )
    p.add_argument(
        "--dataset", nargs="+", required=True, metavar="NAME=DIR",
        help="dataset name and its nnU-Net preprocessed folder (with dataset.json and the plans)",
    )  # fmt: skip
    p.add_argument("--plans", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    p.add_argument("--configuration", default="3d_fullres", help="configuration (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="CSV", help="CSV to write")
    p.set_defaults(func=_run_characteristics)


def _run_characteristics(args: argparse.Namespace) -> int:
    from pgps.extras import EXTRAS, require

    # the report stack, and blosc2 from pgps[nnunet] to read nnU-Net's preprocessed files: named at once
    require("pgps characteristics", {"report": EXTRAS["report"], "nnunet": ("blosc2",)})
    from pgps.report.results import write_characteristics

    datasets: dict[str, str] = {}
    for value in args.dataset:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--dataset takes NAME=PREPROCESSED_DIR, got {value!r}")
        if name in datasets:
            raise ValueError(f"--dataset {name} is given twice ({datasets[name]} and {folder}); give each dataset once")
        datasets[name] = folder
    table = write_characteristics(list(datasets.items()), args.out, args.plans, args.configuration, args.progress)
    print(table.to_string(index=False))
    return 0


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="render every table and figure of the article from a results folder, beside the published values",
        description="Render Tables 1, 2, 3, A.4, B.5, D.7, D.8, D.9, the statistics, and Figures 2, 3, 4, 5, A.6 "
        "(CSV/Markdown/LaTeX, PNG/PDF) from a `pgps collect` folder, with ours-vs-published views in OUT/compare. "
        "Every output file is always written; missing runs show as gaps. --list-outputs prints the fixed list.",
    )
    p.add_argument("--results", metavar="DIR", help="results folder written by pgps collect")
    p.add_argument("--out", metavar="DIR", help="folder to render into")
    p.add_argument("--published", metavar="DIR", help="published-value files (default: the ones shipped with pgps)")
    p.add_argument("--list-outputs", action="store_true", help="print the output paths (relative to --out) and exit")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
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


def _amos22_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "amos22-report",
        help="render the AMOS22 large-batch study's Tables 1-4 from held-out scores, beside the published values",
        description="Read a held-out manifest (written by the workflow: one row per scored prediction, its pgps "
        "surface table under 'scores') and write OUT/tables/amos22_table{1..4}.csv|md|tex and "
        "OUT/compare/amos22_table{1..4}.csv|md (ours vs the paper's DSC and NSD). Missing score files are gaps. "
        "See pgps.report.amos22.",
    )
    p.add_argument(
        "--manifest", required=True, metavar="CSV", help="held-out manifest (pgps.experiments.heldout columns)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to render into")
    p.add_argument("--published", metavar="DIR", help="published-value files (default: the ones shipped with pgps)")
    p.add_argument("--task", nargs="*", default=[], metavar="DATASET=TASK",
                   help="which dataset key is task1/task2 (default: the key's own 'task1'/'task2')")  # fmt: skip
    p.set_defaults(func=_run_amos22_report)


def _run_amos22_report(args: argparse.Namespace) -> int:
    from pgps.report.amos22 import render_amos22

    tasks = dict(item.split("=", 1) for item in args.task if "=" in item)
    if len(tasks) != len(args.task):
        raise ValueError(f"--task takes DATASET=task1|task2, got {args.task}")
    written = render_amos22(args.manifest, args.out, args.published, tasks, log=lambda line: print(line))
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def _study_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study-report",
        help="render the synthetic study (figures, tables, statistics, claim verdicts) from its collected runs",
        description="Render the synthetic study of the workflow's `study` section from a `pgps collect` folder: "
        "Dice over training length per imbalance level (Figure 3 style), relative FLOPs and runtime, paired Wilcoxon "
        "tests over (level, seed) pairs, Spearman correlations of the gain with the class imbalance, and "
        "results.md, a paragraph per claim with its verdict (holds / fails / undecided) by the rules of "
        "pgps.report.study.",
    )
    p.add_argument("--results", required=True, metavar="DIR", help="results folder written by pgps collect")
    p.add_argument(
        "--study", required=True, metavar="JSON",
        help="the study's configuration (the workflow's study section as JSON; holds the decision thresholds)",
    )  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="folder to render into (e.g. paper_figures/study)")
    p.add_argument("--list-outputs", action="store_true", help="print the output paths (relative to --out) and exit")
    p.set_defaults(func=_run_study_report)


def _run_study_report(args: argparse.Namespace) -> int:
    from pgps.experiments.study import study_outputs

    if args.list_outputs:
        print("\n".join(study_outputs()))
        return 0
    from pgps.report.study import render_study

    written = render_study(args.results, args.study, args.out, log=print)
    print(f"{len(written)} files -> {args.out}")
    return 0


def register(sub) -> None:
    """Add this group's commands to ``sub`` (:class:`~pgps.cli.common.CommandGroups`)."""
    _collect_parser(sub)
    _characteristics_parser(sub)
    _report_parser(sub)
    _study_report_parser(sub)
    _cdl_report_parser(sub)
    _amos22_report_parser(sub)
