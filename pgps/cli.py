"""The ``pgps`` command line. ``pgps schedule`` prints a curriculum's stage table.

Errors go to stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pgps import __version__, pacing, synth
from pgps.extras import MissingExtra
from pgps.io import atomic_write_text
from pgps.plans import planned_configuration
from pgps.schedule import MODES, RPSS_POOLS, make_schedule
from pgps.sizes import fmt_size


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse already exits 2; keep one format
        self.print_usage(sys.stderr)
        self.exit(2, f"pgps: error: {message}\n")


def _integer(minimum: int):
    """An argparse type: an integer of at least ``minimum`` (argparse names the argument in its error)."""
    kind = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {kind} integer, got {text!r}")
        return value

    parse.__name__ = f"{kind} integer"
    return parse


POSITIVE, NON_NEGATIVE = _integer(1), _integer(0)


def _read_plans(path: str) -> dict:
    """A plans JSON file, with errors that name it."""
    with open(path) as f:
        try:
            plans = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise ValueError(f"{path} is not an nnU-Net v2 plans file: it has no 'configurations'")
    return plans


def _refuse_silent_changes(path: str, before: dict, after: dict, overwrite: bool) -> None:
    """Raise unless writing ``after`` to ``path`` (holding ``before``) keeps every configuration it held,
    or ``overwrite`` allows replacing and dropping them: a run trained on a configuration cannot resume once
    its architecture changed."""
    old, new = before.get("configurations", {}), after.get("configurations", {})
    dropped = [name for name in old if name not in new]
    changed = [name for name in old if name in new and new[name] != old[name]]
    if (dropped or changed) and not overwrite:
        what = "; ".join(
            part for part in (f"would replace configuration(s) {', '.join(changed)}" if changed else "",
                              f"would drop configuration(s) {', '.join(dropped)}" if dropped else "") if part
        )  # fmt: skip
        raise ValueError(
            f"{path}: {what}, which runs may have been trained on (their --c would fail); pass --overwrite to do it"
        )


def _write_plans(path: str, before: dict, after: dict, overwrite: bool) -> bool:
    """Write ``after`` to ``path`` (holding ``before``) atomically, refusing silent changes (see
    :func:`_refuse_silent_changes`); an identical file is left alone. Returns whether it was unchanged."""
    _refuse_silent_changes(path, before, after, overwrite)
    unchanged = after == before
    if not unchanged:
        atomic_write_text(path, json.dumps(after, indent=4))
    return unchanged


def _add_overwrite_configuration(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing configuration NAME that differs (without it, only an identical one is kept)",
    )  # fmt: skip


def _plans_name(args: argparse.Namespace, out: str) -> str | None:
    """``--plans-name``, or with ``--out`` the output file's name without ``.json`` (nnU-Net names result folders
    by it); None keeps the plans' own."""
    return args.plans_name or (Path(out).name.removesuffix(".json") if args.out else None)


def _schedule_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schedule",
        help="print the stage table of a curriculum",
        description="Print the stages (patch size, batch size, tensor voxels, epochs) and the relative "
        "FLOPs of a curriculum, from an nnU-Net plans file or from explicit sizes.",
    )
    src = p.add_argument_group("planned sizes (either a plans file or explicit sizes)")
    src.add_argument("--plans", metavar="FILE", help="nnU-Net v2 plans JSON (e.g. nnUNetPlans.json)")
    src.add_argument("--configuration", default="3d_fullres", help="plans configuration (default: %(default)s)")
    src.add_argument("--patch-size", nargs="+", type=int, metavar="N", help="planned patch size P_max (3 axes)")
    src.add_argument("--steps", nargs="+", type=int, metavar="N", help="per-axis step = 2**(stride-2 downsamplings)")
    src.add_argument("--batch-size", type=POSITIVE, metavar="B", help="planned batch size b_base")
    p.add_argument("--mode", default="performance", choices=list(MODES), help="curriculum mode (default: %(default)s)")
    p.add_argument("--epochs", type=POSITIVE, default=pacing.EPOCHS, help="training epochs (default: %(default)s)")
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--iterations-per-epoch", type=POSITIVE, help=f"iterations per epoch (default: {pacing.ITERATIONS_PER_EPOCH})"
    )
    length.add_argument(
        "--training-length", type=float, help="fraction of the default iterations per epoch, e.g. 0.1 for 10%%"
    )
    p.add_argument("--batch-size-cap", type=POSITIVE, help="upper limit on every stage's batch size")
    p.add_argument(
        "--no-single-voxel-bottleneck",
        action="store_true",
        help="start one stage later, for architectures that cannot train a 1x1x1 bottleneck",
    )
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of RPSS's per-iteration stage draws")
    p.add_argument(
        "--rpss-pool",
        default="miccai",
        choices=list(RPSS_POOLS),
        help="stages RPSS draws from: miccai (the MICCAI 2024 paper's, default) or journal",
    )
    p.add_argument("--json", action="store_true", help="print JSON (mode, patch_size_max, ..., relative_voxels)")
    p.set_defaults(func=_run_schedule)


def _run_schedule(args: argparse.Namespace) -> int:
    explicit = [args.patch_size, args.steps, args.batch_size]
    if args.plans:
        if any(v is not None for v in explicit):
            raise ValueError("give either --plans or --patch-size/--steps/--batch-size, not both")
        try:
            planned = planned_configuration(_read_plans(args.plans), args.configuration)
        except ValueError as exc:
            raise ValueError(exc if str(exc).startswith(args.plans) else f"{args.plans}: {exc}") from exc
        patch_size, steps, batch_size = planned.patch_size, planned.steps, planned.batch_size
    else:
        missing = [n for n, v in zip(("--patch-size", "--steps", "--batch-size"), explicit, strict=True) if v is None]
        if missing:
            raise ValueError(f"missing {', '.join(missing)} (or give --plans FILE)")
        patch_size, steps, batch_size = explicit
    if args.training_length is not None:
        ipe = pacing.iterations_per_epoch(args.training_length)
    elif args.iterations_per_epoch is not None:
        ipe = args.iterations_per_epoch
    else:
        ipe = pacing.ITERATIONS_PER_EPOCH
    schedule = make_schedule(
        args.mode,
        patch_size,
        steps,
        batch_size,
        epochs=args.epochs,
        iterations_per_epoch=ipe,
        single_voxel_bottleneck=not args.no_single_voxel_bottleneck,
        batch_size_cap=args.batch_size_cap,
        seed=args.seed,
        rpss_pool=args.rpss_pool,
    )
    if args.json:
        json.dump(schedule.summary(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(schedule.table())
    return 0


def _synth_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic 3D segmentation dataset in nnU-Net v2's raw format",
        description="Write a seeded synthetic dataset (imagesTr, labelsTr, dataset.json) to OUT/DatasetXXX_NAME from "
        "a preset, with any knob overridden. Presets: "
        + "; ".join(f"{k}: {v}" for k, v in synth.PRESET_DESCRIPTIONS.items()),
    )
    p.add_argument("--preset", default="organs", choices=list(synth.PRESETS), help="preset (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="nnU-Net raw folder to write into (e.g. $nnUNet_raw)")
    p.add_argument("--dataset-id", required=True, type=int, metavar="ID", help="nnU-Net dataset id, 1..999")
    p.add_argument("--name", help="dataset name (default: Synth + the preset's name, e.g. SynthLesions)")
    knobs = p.add_argument_group("knobs (default: the preset's)")
    knobs.add_argument("--cases", type=POSITIVE, metavar="N", help="number of training cases")
    knobs.add_argument("--shape", nargs="+", type=int, metavar="N", help="volume shape (3 axes, array order)")
    knobs.add_argument("--shape-jitter", nargs="+", type=int, metavar="N", help="per-case shape jitter, 1 or 3 axes")
    knobs.add_argument("--spacing", nargs="+", type=float, metavar="MM", help="voxel spacing (3 axes)")
    knobs.add_argument("--seed", type=NON_NEGATIVE, help="seed; case i is drawn from default_rng([seed, i])")
    knobs.add_argument("--classes", type=int, metavar="K", help="number of foreground classes")
    knobs.add_argument("--radius", nargs=2, type=float, metavar=("MIN", "MAX"), help="semi-axis range, every class")
    knobs.add_argument("--objects", nargs=2, type=int, metavar=("MIN", "MAX"), help="objects per class and case")
    knobs.add_argument("--contrast", type=float, help="class mean intensity step over the background")
    knobs.add_argument("--noise", type=float, metavar="SD", help="Gaussian noise sd")
    knobs.add_argument("--shapes", choices=synth.SHAPES, help="object shapes")
    knobs.add_argument(
        "--orientation", action=argparse.BooleanOptionalAction, help="classes defined by the band along axis 2"
    )
    noisy = p.add_argument_group(
        "noisy label sets (CDL-UNet-like pseudo-labels; see pgps.synth.LabelNoise)",
        "labelsTr stays the clean ground truth; K corrupted copies go to labelSets/set_1..set_K, each case at a "
        "known level (recorded in dataset.json under pgps_synth.label_noise)",
    )
    noisy.add_argument("--label-sets", type=int, metavar="K", help="write K noisy label sets per training case")
    noisy.add_argument(
        "--label-levels", nargs=2, type=float, metavar=("LOW", "HIGH"),
        help="range of the per-case corruption levels in [0, 1] (default: 0 1)",
    )  # fmt: skip
    noisy.add_argument(
        "--label-factors", nargs="+", type=float, metavar="F",
        help="per-set factor on the case's level, K values (default: linspace(1, 0.5, K))",
    )  # fmt: skip
    p.add_argument(
        "--test-cases", type=int, default=0, metavar="N", help="also write N test cases (imagesTs, labelsTs)"
    )
    knobs.add_argument(
        "--foreground-share", type=float, metavar="F",
        help="scale every object (after the other knobs) until the measured foreground share over the cases is F "
        f"(a fraction, e.g. 0.001), to {synth.SHARE_TOLERANCE * 100:g}%% of F",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty dataset folder")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bar on stderr (default: on a terminal)"
    )
    p.add_argument("--json", action="store_true", help="print JSON (path, config, statistics)")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    base = synth.PRESETS[args.preset]
    jitter = args.shape_jitter[0] if args.shape_jitter and len(args.shape_jitter) == 1 else args.shape_jitter
    overrides = {
        "num_cases": args.cases,
        "shape": args.shape,
        "shape_jitter": jitter,
        "spacing": args.spacing,
        "seed": args.seed,
        "num_classes": args.classes,
        "radii": (tuple(args.radius),) if args.radius else None,
        "objects_per_class": args.objects,
        "contrast": args.contrast,
        "noise_sd": args.noise,
        "shapes": args.shapes,
        "orientation": args.orientation,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("num_classes", base.num_classes) != base.num_classes:
        overrides["class_names"] = None
    config = synth.preset(args.preset, **overrides)
    if args.foreground_share is not None:
        config = synth.with_foreground_share(config, args.foreground_share)
    name = args.name or f"Synth{args.preset.capitalize()}"
    noise = None
    if args.label_sets is not None or args.label_levels or args.label_factors:
        noise = synth.LabelNoise(
            count=args.label_sets if args.label_sets is not None else len(args.label_factors or ()) or 3,
            levels=tuple(args.label_levels or (0.0, 1.0)),
            factors=tuple(args.label_factors) if args.label_factors else None,
        )
    path = synth.generate_dataset(
        config, args.out, args.dataset_id, name, overwrite=args.overwrite, progress=args.progress,
        label_noise=noise, test_cases=args.test_cases,
    )  # fmt: skip
    with open(path / "dataset.json") as f:
        stats = json.load(f)["pgps_synth"]["statistics"]
    if args.json:
        json.dump({"path": str(path), "config": config.to_dict(), "statistics": stats}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    lo = [s - j for s, j in zip(config.shape, config.shape_jitter, strict=True)]
    hi = [s + j for s, j in zip(config.shape, config.shape_jitter, strict=True)]
    shape = fmt_size(config.shape) + (f" (cases {fmt_size(lo)} to {fmt_size(hi)})" if any(config.shape_jitter) else "")
    spacing = "x".join(f"{v:g}" for v in config.spacing)
    print(path)
    print(
        f"preset {args.preset}: {config.num_cases} cases, shape {shape}, spacing {spacing}, "
        f"seed {config.seed}, {config.num_classes} foreground class{'es' if config.num_classes != 1 else ''}"
        + (f" by band along axis {config.orientation_axis}" if config.orientation else "")
    )
    print(
        f"foreground share {stats['foreground_share']:.3%} per case; "
        f"share of foreground classes present per case {stats['present_classes']:.0%}"
    )
    width = max(len(n) for n in config.labels)
    print(f"label  {'name'.ljust(width)}  voxel share  cases with it")
    for label_name, c in config.labels.items():
        cases = "" if c == 0 else f"{round(stats['case_share'][c - 1] * config.num_cases)}/{config.num_cases}"
        print(f"{c:>5}  {label_name.ljust(width)}  {stats['voxel_share'][c]:>11.3%}  {cases:>13}")
    if noise:
        factors = ", ".join(f"{f:g}" for f in noise.factors)
        print(
            f"{noise.count} noisy label sets per case in labelSets/set_1..set_{noise.count}: case levels "
            f"{noise.levels[0]:g}..{noise.levels[1]:g}, set factors {factors}"
        )
    if args.test_cases:
        print(f"{args.test_cases} test cases in imagesTs/labelsTs")
    return 0


def _trainers_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trainers",
        help="list the nnU-Net trainer variants and where nnUNet_extTrainer must point",
        description="List the PGPS nnU-Net trainers. Stock nnunetv2 finds them once you set "
        'export nnUNet_extTrainer="$(pgps trainers --ext-path)". Every trainer also exists with a loss suffix '
        "(_DiceFocal, _DiceTopK10, _DicePerim) and/or a learning-rate suffix (_LRlinear, _LRsqrt), in that order, "
        "e.g. nnUNetTrainer_PGPS_Performance_DiceFocal_LRsqrt (pgps.nnunet.losses, pgps.lr).",
    )
    p.add_argument("--ext-path", action="store_true", help="print only the folder for nnUNet_extTrainer")
    p.set_defaults(func=_run_trainers)


def _run_trainers(args: argparse.Namespace) -> int:
    from pgps.nnunet import ext_trainer_path

    if args.ext_path:
        print(ext_trainer_path())
        return 0
    from pgps.nnunet.variants import TRAINERS  # imports torch and nnU-Net

    print(f"# export nnUNet_extTrainer={ext_trainer_path()}")
    print("\n".join(TRAINERS))
    return 0


def _light_plans_parser(sub: argparse._SubParsersAction) -> None:
    from pgps.nnunet import light  # no torch or nnU-Net import: only the benchmarked defaults

    p = sub.add_parser(
        "light-plans",
        help="add a CPU-friendly configuration (fewer channels, channels-last) to an nnU-Net plans file",
        description="Add configuration NAME to an nnU-Net v2 plans file, inheriting SOURCE (and so its preprocessed "
        "data) with a lighter PlainConvUNet; then train it with nnUNetv2_train DATASET NAME FOLD -tr .... The defaults "
        "are the fastest expressive choice of benchmarks/cpu_network.py on a 2-core CPU (see pgps.nnunet.light). The "
        "file is replaced atomically.",
    )
    p.add_argument("--plans", required=True, metavar="FILE", help="nnU-Net v2 plans JSON to edit (nnUNetPlans.json)")
    p.add_argument("--source", default="3d_fullres", help="configuration to inherit from (default: %(default)s)")
    p.add_argument("--name", default="3d_light", help="name of the added configuration (default: %(default)s)")
    p.add_argument(
        "--preset", choices=list(light.PRESETS),
        help="a published light network (its features, convolutions, strides, kernels, patch and batch size; "
        "options given explicitly still win), with a parameter and FLOP report against the published numbers",
    )  # fmt: skip
    p.add_argument("--patch-size", nargs="+", type=int, metavar="N", help="patch size (default: the source's)")
    p.add_argument("--batch-size", type=POSITIVE, metavar="B", help="batch size (default: the source's)")
    p.add_argument(
        "--features", nargs="+", type=int, metavar="F",
        help="features per resolution stage; their count sets the stages "
        f"(default: {' '.join(map(str, light.DEFAULT_FEATURES))})",
    )  # fmt: skip
    p.add_argument(
        "--convs", type=POSITIVE, metavar="N",
        help=f"convolutions per stage, encoder and decoder (default: {light.DEFAULT_CONVS})",
    )  # fmt: skip
    p.add_argument(
        "--memory-format", choices=light.MEMORY_FORMATS, default=light.DEFAULT_MEMORY_FORMAT,
        help="memory format the PGPS trainers put the network in (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--report", action=argparse.BooleanOptionalAction, default=None,
        help="print parameters and forward FLOPs of the network (imports torch; default: on with --preset)",
    )  # fmt: skip
    _add_overwrite_configuration(p)
    p.set_defaults(func=_run_light_plans)


def _run_light_plans(args: argparse.Namespace) -> int:
    from pgps.nnunet.light import DEFAULT_CONVS, DEFAULT_FEATURES, PRESETS, add_light_configuration

    before = _read_plans(args.plans)
    preset = PRESETS[args.preset] if args.preset else None
    features = args.features or (preset.features if preset else DEFAULT_FEATURES)
    convs = args.convs or (preset.convs if preset else DEFAULT_CONVS)
    try:
        plans = add_light_configuration(
            before,
            args.source,
            args.name,
            patch_size=args.patch_size or (preset.patch_size if preset else None),
            batch_size=args.batch_size or (preset.batch_size if preset else None),
            features_per_stage=features,
            n_conv_per_stage=convs,
            memory_format=args.memory_format,
            strides=preset.strides if preset and not args.features else None,
            kernel_sizes=preset.kernel_sizes if preset and not args.features else None,
        )
    except ValueError as exc:
        raise ValueError(f"{args.plans}: {exc}") from exc
    unchanged = _write_plans(args.plans, before, plans, args.overwrite)
    planned = planned_configuration(plans, args.name)
    print(
        f"{args.plans}: configuration {args.name}{' (unchanged)' if unchanged else ''} inherits {args.source}: "
        f"patch {fmt_size(planned.patch_size)}, "
        f"batch {planned.batch_size}, PGPS step {fmt_size(planned.steps)}, features "
        f"{','.join(map(str, features))}, {convs} conv(s) per stage, {args.memory_format}"
        + (f" (preset {args.preset})" if preset else "")
    )
    if args.report or (args.report is None and preset):
        from pgps.nnunet.light import light_report

        dataset_json = Path(args.plans).parent / "dataset.json"
        print(light_report(plans, args.name, dataset_json if dataset_json.is_file() else None, preset))
    return 0


def _plans_variant_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plans-variant",
        help="add a configuration with the same network and another patch and/or batch size to a plans file",
        description="Add configuration NAME to an nnU-Net v2 plans file: SOURCE's network, normalization and "
        "preprocessed data (it inherits from SOURCE; no re-preprocessing) with another patch size and/or batch size, "
        "e.g. the AMOS22 large-batch study's 64x288x288 at batch 2. The patch must be a multiple of the network's "
        "total stride on every axis. Train with nnUNetv2_train DATASET NAME FOLD [-p PLANS_NAME] -tr .... The output "
        "file is replaced atomically; a configuration NAME that differs is replaced only with --overwrite.",
    )
    p.add_argument("--plans", required=True, metavar="FILE", help="nnU-Net v2 plans JSON to read (nnUNetPlans.json)")
    p.add_argument("--source", default="3d_fullres", help="configuration whose network is kept (default: %(default)s)")
    p.add_argument("--name", help="name of the added configuration (default: SOURCE_pZxYxX_bB)")
    p.add_argument("--patch-size", nargs="+", type=int, metavar="N", help="patch size per axis (default: SOURCE's)")
    p.add_argument("--batch-size", type=POSITIVE, metavar="B", help="batch size (default: SOURCE's)")
    p.add_argument("--out", metavar="FILE", help="plans file to write (default: edit --plans in place)")
    p.add_argument(
        "--plans-name", help="plans_name of the written plans; nnU-Net names result folders by it (default: with "
        "--out, its file name without .json; else unchanged)",
    )  # fmt: skip
    _add_overwrite_configuration(p)
    p.set_defaults(func=_run_plans_variant)


def _run_plans_variant(args: argparse.Namespace) -> int:
    from pgps.plans import add_plans_variant, resolve_configuration, variant_name

    plans = _read_plans(args.plans)
    out = args.out or args.plans
    try:
        after = add_plans_variant(plans, args.source, args.name, patch_size=args.patch_size, batch_size=args.batch_size)
        source = resolve_configuration(plans["configurations"], args.source)
    except ValueError as exc:
        raise ValueError(f"{args.plans}: {exc}") from exc
    name = args.name or variant_name(
        args.source, args.patch_size or source["patch_size"], args.batch_size or source["batch_size"]
    )
    plans_name = _plans_name(args, out)
    if plans_name:
        after["plans_name"] = plans_name
    unchanged = _write_plans(out, _read_plans(out) if os.path.exists(out) else {}, after, args.overwrite)
    planned = planned_configuration(after, name)
    print(
        f"{out}: configuration {name}{' (unchanged)' if unchanged else ''} inherits {args.source}: patch "
        f"{fmt_size(planned.patch_size)}, batch {planned.batch_size}, PGPS step {fmt_size(planned.steps)}\n"
        f"  train: nnUNetv2_train DATASET {name} FOLD -p {after.get('plans_name', 'nnUNetPlans')} -tr TRAINER"
    )
    return 0


def _ensemble_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ensemble",
        help="average the probabilities of trained models (nnU-Net's ensembling) with post-processing before or after",
        description="Ensemble prediction folders written by nnUNetv2_predict --save_probabilities (one per model; a "
        "model predicted with -f 0 1 2 3 4 is the mean of its folds) with nnU-Net's ensemble_folders, and apply "
        "nnU-Net's post-processing (postprocessing.pkl from pgps determine-postprocessing or "
        "nnUNetv2_determine_postprocessing) before ensembling, to each member (--order before, the AMOS22 large-batch "
        "study's order; one file per member), or after, to the ensemble (--order after, nnU-Net's; one file). OUT "
        "gets the segmentations and the averaged probabilities (.npz). See pgps.nnunet.ensemble.",
    )
    p.add_argument("--members", nargs="+", required=True, metavar="DIR", help="prediction folders, one per model")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the ensemble into")
    p.add_argument("--order", choices=["before", "after", "none"], default="after",
                   help="when post-processing applies (default: %(default)s)")  # fmt: skip
    p.add_argument("--postprocessing", nargs="*", default=[], metavar="PKL", help="postprocessing.pkl file(s)")
    p.add_argument("--processes", type=POSITIVE, default=2, help="worker processes (default: %(default)s)")
    p.set_defaults(func=_run_ensemble)


def _run_ensemble(args: argparse.Namespace) -> int:
    from pgps.nnunet.ensemble import ensemble

    out = ensemble(args.members, args.out, args.order, args.postprocessing, args.processes)
    print(f"{out}: ensemble of {len(args.members)} models, post-processing {args.order}")
    return 0


def _determine_postprocessing_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "determine-postprocessing",
        help="nnU-Net's post-processing decision on the cross-validation predictions of one model or an ensemble",
        description="Gather the validation predictions of FOLDS of one trained model folder (nnU-Net's "
        "accumulate_cv_results), or ensemble those of several (nnU-Net's ensemble_crossvalidations; folds trained "
        "with --npz), into OUT, and run nnU-Net's determine_postprocessing there against the training labels: "
        "OUT/postprocessing.pkl is what pgps ensemble --postprocessing takes. Needs nnUNet_raw/nnUNet_preprocessed.",
    )
    p.add_argument("--models", nargs="+", required=True, metavar="DIR",
                   help="trained model folder(s): <trainer>__<plans>__<configuration> with fold_N/")  # fmt: skip
    p.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds (default: 0 1 2 3 4)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the gathered predictions and the decision")
    p.add_argument("--processes", type=POSITIVE, default=2, help="worker processes (default: %(default)s)")
    p.set_defaults(func=_run_determine_postprocessing)


def _run_determine_postprocessing(args: argparse.Namespace) -> int:
    from pgps.nnunet.ensemble import determine_postprocessing

    pkl = determine_postprocessing(args.models, args.out, args.folds, args.processes)
    print(f"{pkl}: post-processing of {' + '.join(os.path.basename(m.rstrip('/')) for m in args.models)}")
    return 0


def _train_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-evaluate",
        help="train several nnU-Net runs in one process, each evaluated on its held-out cases without worker pools",
        description="Train DATASET's fold FOLD of CONFIGURATION with each trainer in turn, in this process, as "
        "nnUNetv2_train does (nnU-Net's paths, nnUNet_extTrainer and the PGPS_* overrides come from the "
        "environment), then predict the fold's held-out cases with nnU-Net's predictor and score them with "
        "nnU-Net's metrics into validation/summary.json, one case at a time (see pgps.nnunet.evaluation). "
        "Saves the process start, imports and validation pools of one nnUNetv2_train per run.",
    )
    p.add_argument("dataset", help="nnU-Net dataset id or name")
    p.add_argument("configuration", help="configuration to train (e.g. 3d_light)")
    p.add_argument("fold", type=int, help="fold of nnU-Net's split (splits_final.json)")
    p.add_argument("-tr", "--trainers", nargs="+", required=True, metavar="TRAINER", help="trainer classes, in order")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"], help="(default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default: %(default)s)")
    p.add_argument(
        "--mirroring", action=argparse.BooleanOptionalAction, default=False,
        help="mirroring test-time augmentation when predicting the held-out cases (nnU-Net's validation: on; "
        "default: off, 8x fewer forward passes in 3D)",
    )  # fmt: skip
    p.add_argument(
        "--pairs", action=argparse.BooleanOptionalAction, default=True,
        help="on the CPU, run each single-tile forward pass as a pair of tiles (torch's batch-1 3D convolution "
        "kernel is 3-6x slower on small maps; default: on)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="retrain runs whose fold folder is already finished")
    p.add_argument(
        "--evaluate-only", action="store_true",
        help="score finished runs again from checkpoint_final.pth (as nnUNetv2_train --val), no training",
    )  # fmt: skip
    p.set_defaults(func=_run_train_evaluate)


def _run_train_evaluate(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    if not os.environ.get("nnUNet_results"):
        raise ValueError("set nnUNet_raw, nnUNet_preprocessed and nnUNet_results (as for nnUNetv2_train)")
    from pgps.nnunet.evaluation import train_and_evaluate

    train_and_evaluate(
        args.dataset, args.configuration, args.fold, args.trainers, plans=args.plans, device=args.device,
        threads=args.threads,
        mirroring=args.mirroring, pairs=args.pairs, overwrite=args.overwrite, evaluate_only=args.evaluate_only,
        log=lambda message: print(f"pgps train-evaluate: {message}", flush=True),
    )  # fmt: skip
    return 0


def _gpu_slot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gpu-slot",
        help="run a command on one free GPU of this machine (local-gpu profile)",
        description="Take a lock on one of N GPU slots, run COMMAND with CUDA_VISIBLE_DEVICES set to that GPU, "
        "release the slot when it ends; waits while all N are busy. Example: pgps gpu-slot --slots 4 -- "
        "nnUNetv2_train 4 3d_fullres 0 -tr nnUNetTrainer_PGPS_Performance",
    )
    p.add_argument("--slots", type=POSITIVE, required=True, help="number of GPUs shared by the jobs (>= 1)")
    p.add_argument("--lock-dir", default=None, help="folder of the lock files (default: $PGPS_GPU_LOCK_DIR or /tmp)")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command to run")
    p.set_defaults(func=_run_gpu_slot)


def _run_gpu_slot(args: argparse.Namespace) -> int:
    from pgps.gpu_slot import run_on_free_gpu

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    return run_on_free_gpu(command, args.slots, Path(args.lock_dir) if args.lock_dir else None)


def _convert_parser(sub: argparse._SubParsersAction) -> None:
    from pgps.nnunet.convert import FORMATS  # standard library and numpy only

    p = sub.add_parser(
        "convert",
        help="convert a published dataset (archive or folder) to nnU-Net v2's raw format",
        description="Convert SOURCE (the publisher's archive or its extracted folder) to RAW/DatasetXXX_NAME and "
        "print that folder. nnU-Net's own converters are used where they exist (MSD, KiTS23, AMOS22 task 2, "
        "ToothFairy2). The dataset is written to a hidden folder and renamed into place at the end.",
        epilog="expected layouts:\n"
        + "\n".join(f"  {f.name}: {f.layout}.\n    Get it: {f.obtain}" for f in FORMATS.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--format", required=True, choices=list(FORMATS), help="source format")
    p.add_argument("--source", required=True, metavar="PATH", help="archive (.tar, .tar.gz, .zip) or folder")
    p.add_argument("--raw", required=True, metavar="DIR", help="nnU-Net raw folder to write into (e.g. $nnUNet_raw)")
    p.add_argument("--dataset-id", required=True, type=int, metavar="ID", help="nnU-Net dataset id, 1..999")
    p.add_argument("--name", required=True, help="dataset name (folder DatasetXXX_NAME)")
    p.add_argument("--workers", type=POSITIVE, default=1, help="processes converting cases in parallel (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty dataset folder")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bar (default: on a terminal; else lines)"
    )
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from pgps.nnunet.convert import convert_dataset

    path = convert_dataset(
        args.format,
        args.source,
        args.raw,
        args.dataset_id,
        args.name,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=args.progress,
    )
    print(path)
    return 0


def _download_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="download a public dataset archive (resumable, md5-checked)",
        description="Download URL to OUT (a file, or an existing folder to put the URL's file name in) and print "
        "the file. Bytes go to OUT.part, which a later run resumes (HTTP Range); OUT appears only when complete and "
        "its md5 matches. An existing OUT is kept.",
    )
    p.add_argument("url", help="http(s):// or file:// URL")
    p.add_argument("out", help="output file (or folder)")
    p.add_argument("--md5", metavar="HEX", help="expected MD5 (32 hex digits)")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bar (default: on a terminal; else lines)"
    )
    p.set_defaults(func=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from pgps.nnunet.convert import download

    print(download(args.url, args.out, md5=args.md5, progress=args.progress))
    return 0


def _backbone_plans_parser(sub: argparse._SubParsersAction) -> None:
    from pgps.nnunet.backbone_plans import BACKBONES  # no torch or nnU-Net import

    p = sub.add_parser(
        "backbone-plans",
        help="add UNETR/SwinUNETR configurations (P_max a multiple of their step) to an nnU-Net plans file",
        description="Add one configuration per BACKBONE to an nnU-Net v2 plans file, inheriting SOURCE (and so its "
        "preprocessed data, no re-preprocessing) with the backbone's architecture and a P_max that is a multiple of "
        "its step: per axis the largest multiple not above SOURCE's patch size, at least one step. Steps: "
        + "; ".join(f"{b.name} {b.step} ({b.step_reason})" for b in BACKBONES.values())
        + ". Train with nnUNetv2_train DATASET NAME FOLD [-p PLANS_NAME] -tr nnUNetTrainer_PGPS_UNETR_Performance "
        "(or _SwinUNETR_, _CPS, _Efficiency). The output file is replaced atomically.",
    )
    p.add_argument("--plans", required=True, metavar="FILE", help="nnU-Net v2 plans JSON to read (nnUNetPlans.json)")
    p.add_argument("--backbone", required=True, nargs="+", choices=list(BACKBONES), help="backbone(s) to add")
    p.add_argument("--name", nargs="+", help="configuration name per backbone (default: 3d_<backbone>)")
    p.add_argument("--source", default="3d_fullres", help="configuration to inherit from (default: %(default)s)")
    p.add_argument("--out", metavar="FILE", help="plans file to write (default: edit --plans in place)")
    p.add_argument(
        "--plans-name", help="plans_name of the written plans; nnU-Net names result folders by it (default: with "
        "--out, its file name without .json; else unchanged)",
    )  # fmt: skip
    p.add_argument("--patch-size", nargs="+", type=int, metavar="N", help="P_max, 3 axes (default: the rule above)")
    p.add_argument("--batch-size", type=POSITIVE, metavar="B", help="batch size b_base (default: the source's)")
    p.add_argument(
        "--arch", action="append", default=[], metavar="[BACKBONE:]KEY=VALUE",
        help="architecture argument, VALUE as JSON (e.g. hidden_size=384, swinunetr:depths=[1,1,1,1]); without a "
        "prefix it applies to every backbone given; repeatable; defaults are MONAI's",
    )  # fmt: skip
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace configurations that differ, or drop those an existing output file holds beyond --plans",
    )  # fmt: skip
    p.set_defaults(func=_run_backbone_plans)


def _run_backbone_plans(args: argparse.Namespace) -> int:
    from pgps.nnunet.backbone_plans import BACKBONES, add_backbone_configuration, describe

    names = args.name or [f"3d_{b}" for b in args.backbone]
    if len(names) != len(args.backbone):
        raise ValueError(f"--name gives {len(names)} names for {len(args.backbone)} backbones")
    arch: dict[str, dict] = {b: {} for b in args.backbone}
    for item in args.arch:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--arch {item!r} is not [BACKBONE:]KEY=VALUE")
        prefix, colon, key = key.rpartition(":")
        if colon and prefix not in arch:
            raise ValueError(f"--arch {item!r}: {prefix!r} is not one of the backbones given ({', '.join(arch)})")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string such as norm_name=batch
        for backbone in [prefix] if colon else arch:
            arch[backbone][key] = value
    plans = _read_plans(args.plans)
    for backbone, name in zip(args.backbone, names, strict=True):
        try:
            plans = add_backbone_configuration(
                plans, backbone, args.source, name, patch_size=args.patch_size, batch_size=args.batch_size,
                arch_kwargs=arch[backbone],
            )  # fmt: skip
        except ValueError as exc:
            raise ValueError(f"{args.plans}: {exc}") from exc
    out = args.out or args.plans
    plans_name = _plans_name(args, out)
    if plans_name:
        plans["plans_name"] = plans_name
    if os.path.exists(out):
        _refuse_silent_changes(out, _read_plans(out), plans, args.overwrite)
    atomic_write_text(out, json.dumps(plans, indent=4))
    for backbone, name in zip(args.backbone, names, strict=True):
        print(f"{out}: {describe(plans, name)}")
        print(
            f"  train: nnUNetv2_train DATASET {name} FOLD -p {plans.get('plans_name', 'nnUNetPlans')} "
            f"-tr nnUNetTrainer_PGPS_{BACKBONES[backbone].title}_Performance"
        )
    return 0


def _difficulty_parser(sub: argparse._SubParsersAction) -> None:
    from pgps import difficulty

    p = sub.add_parser(
        "difficulty",
        help="score label agreement per case (CDL-UNet's RS and DS) into difficulty.csv",
        description="Read two or more nnU-Net raw label folders holding the same cases (e.g. two pseudo-label sets "
        "and a reference), compute per case the Reliability Score of every set (CDL-UNet Eq. 1: its mean Dice with "
        "the others), the most reliable set L_real, the Difficulty Score (Eq. 2: mean Dice of L_real with the "
        "provided sets) and its group (easy / hard / erroneous), and write difficulty.csv; optionally write each "
        "case's L_real as a new nnU-Net raw dataset. Outputs are written only when every case has been scored.",
    )
    p.add_argument("--labels", nargs="+", required=True, metavar="DIR", help="label folders (labelsTr layout)")
    p.add_argument(
        "--predict-with", metavar="MODEL_DIR",
        help="add a label set predicted by this trained nnU-Net model folder (needs --images)",
    )  # fmt: skip
    p.add_argument("--folds", nargs="+", default=None, help="folds of --predict-with (default: all found)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint of --predict-with")
    p.add_argument("--device", default="cpu", help="device for --predict-with (default: %(default)s)")
    p.add_argument("--images", metavar="DIR", help="the cases' images (imagesTr) for --predict-with and the dataset")
    p.add_argument(
        "--provided", type=int, default=2, metavar="N",
        help="the first N label sets are the provided ones that Eq. 2 averages over (default: %(default)s, the "
        "paper's two pseudo-label sets; later sets are references)",
    )  # fmt: skip
    p.add_argument(
        "--easy", type=float, default=difficulty.EASY_THRESHOLD, help="DS above it: easy (default %(default)s)"
    )
    p.add_argument(
        "--erroneous", type=float, default=difficulty.ERRONEOUS_THRESHOLD,
        help="DS at or below it: erroneous (default %(default)s); between the two: hard",
    )  # fmt: skip
    p.add_argument(
        "--dataset-json", metavar="FILE",
        help="dataset.json whose labels are valid (others become background) and that the enhanced dataset copies "
        "(default: the first found next to --images or a label folder, or one folder up)",
    )  # fmt: skip
    p.add_argument(
        "--dice-classes", nargs="+", type=int, metavar="C",
        help="classes Dice averages (default: those present in either map)",
    )  # fmt: skip
    p.add_argument(
        "--absent", choices=("skip", "one"), default="skip",
        help="a listed class absent from both maps: left out (default) or 1.0 (the authors' script)",
    )  # fmt: skip
    p.add_argument("--out", required=True, metavar="CSV", help="difficulty.csv to write")
    enhanced = p.add_argument_group("enhanced labels as a new nnU-Net raw dataset (optional)")
    enhanced.add_argument("--enhanced-raw", metavar="DIR", help="nnU-Net raw folder to write the dataset into")
    enhanced.add_argument("--dataset-id", type=int, metavar="ID", help="its dataset id")
    enhanced.add_argument("--name", help="its dataset name")
    enhanced.add_argument("--drop-erroneous", action="store_true", help="leave the erroneous cases out")
    enhanced.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bar on stderr (default: on a terminal)"
    )
    p.set_defaults(func=_run_difficulty)


def _run_difficulty(args: argparse.Namespace) -> int:
    import tempfile
    from collections import Counter

    from pgps.nnunet import labelsets

    folders = [Path(d) for d in args.labels]
    names = labelsets.set_names(folders)
    enhanced = [args.enhanced_raw, args.dataset_id, args.name]
    if any(v is not None for v in enhanced) and not all(v is not None for v in enhanced):
        raise ValueError("--enhanced-raw, --dataset-id and --name go together")
    if (args.predict_with or args.enhanced_raw) and not args.images:
        raise ValueError("--predict-with and --enhanced-raw need --images (the cases' image folder)")
    if not 1 <= args.provided <= len(folders):
        raise ValueError(f"--provided must be 1..{len(folders)} (the number of --labels), got {args.provided}")
    if args.dataset_json and not Path(args.dataset_json).is_file():
        raise ValueError(f"{args.dataset_json} does not exist")
    dataset_json = args.dataset_json or labelsets.find_dataset_json(folders, args.images)
    if args.enhanced_raw and dataset_json is None:
        raise ValueError("the enhanced dataset needs the source's dataset.json (give --dataset-json)")
    valid = labelsets.valid_labels(dataset_json)
    source_json = json.loads(Path(dataset_json).read_text()) if dataset_json else {}
    ending = source_json.get("file_ending")
    Path(args.out).resolve().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pgps-difficulty-", dir=Path(args.out).resolve().parent) as tmp:
        if args.predict_with:
            from pgps.nnunet.predict import Adaptation, make_predictor, predict_folder

            labelsets.matched_cases(folders, ending)  # fail on mismatched folders before predicting
            predictor = make_predictor(
                args.predict_with, tuple(args.folds) if args.folds else None, args.checkpoint, Adaptation.off(),
                device=args.device, progress=bool(args.progress),
            )  # fmt: skip
            ending = ending or predictor.dataset_json["file_ending"]
            predict_folder(predictor, args.images, tmp)
            folders.append(Path(tmp))
            names.append("prediction")
        scores, cleaned, real = labelsets.score_folders(
            folders, provided=range(args.provided), easy=args.easy, erroneous=args.erroneous, labels=valid,
            dice_classes=args.dice_classes, absent=args.absent, file_ending=ending, progress=args.progress,
            keep=args.enhanced_raw is not None,
        )  # fmt: skip
        dataset = None
        if args.enhanced_raw:
            dataset = labelsets.write_enhanced_dataset(
                args.images, folders[0], scores, real, args.enhanced_raw, args.dataset_id, args.name, source_json,
                names, drop_erroneous=args.drop_erroneous, overwrite=args.overwrite, file_ending=ending,
            )  # fmt: skip
        labelsets.write_difficulty_csv(args.out, scores, names, cleaned)
    groups = Counter(s.group for s in scores)
    reals = Counter(names[s.real] for s in scores)
    print(
        f"{args.out}: {len(scores)} cases, mean DS {sum(s.ds for s in scores) / len(scores):.4f}; "
        + ", ".join(f"{groups.get(g, 0)} {g}" for g in ("easy", "hard", "erroneous"))
        + f" (easy: DS > {args.easy:g}, erroneous: DS <= {args.erroneous:g})"
    )
    print("L_real: " + ", ".join(f"{n} {reals.get(n, 0)}" for n in names))
    if cleaned and sum(cleaned.values()):
        print(f"cleaned {sum(cleaned.values())} voxels with values outside dataset.json's labels")
    if dataset is not None:
        print(f"enhanced labels: {dataset}")
    return 0


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="nnU-Net inference with CDL-UNet's adaptive sliding window and a per-case report",
        description="Predict every case of an nnU-Net raw image folder with a trained model folder, through "
        "nnUNetPredictor with CDL-UNet's adaptations (pgps.nnunet.predict): a coarser step when the fine step "
        "needs many windows, centre-first skipping of empty slabs, small-component removal. --no-adaptive gives "
        "nnUNetPredictor's output exactly. Writes the segmentations and OUT/pgps_predict_report.csv (windows "
        "planned, evaluated, skipped and seconds per case).",
    )
    p.add_argument("-i", "--images", required=True, metavar="DIR", help="images (CASE_0000.nii.gz ...)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("-m", "--model", required=True, metavar="DIR", help="trained model folder (TRAINER__PLANS__CONF)")
    p.add_argument("-f", "--folds", nargs="+", default=None, help="folds (default: all found)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: %(default)s)")
    p.add_argument(
        "--step-size", type=float, default=0.5, help="nnU-Net's (fine) tile step size (default: %(default)s)"
    )
    p.add_argument("--no-mirroring", action="store_true", help="no test-time mirroring")
    p.add_argument("--no-adaptive", action="store_true", help="nnUNetPredictor exactly: no adaptation at all")
    a = p.add_argument_group("adaptations (defaults: see pgps.nnunet.predict)")
    a.add_argument("--window-threshold", type=int, default=50, help="coarse step from this many windows (0: never)")
    a.add_argument("--coarse-step", type=float, default=1.0, help="the coarse tile step size (default: %(default)s)")
    a.add_argument("--no-centre-first", action="store_true", help="evaluate every window (no skipping)")
    a.add_argument("--slab-axis", type=int, default=0, help="axis of the slabs (default: %(default)s, z)")
    a.add_argument(
        "--min-foreground", type=int, default=1000,
        help="foreground voxels below which a slab's centre window skips the slab (default: %(default)s)",
    )  # fmt: skip
    a.add_argument(
        "--min-component-fraction", type=float, default=0.1,
        help="drop components below this share of the class's largest (0: off; default: %(default)s)",
    )  # fmt: skip
    a.add_argument("--min-component-voxels", type=int, default=0, help="drop components below this size")
    p.add_argument(
        "--processes", type=int, default=0,
        help="preprocessing/export worker processes; 0: none, nnU-Net's sequential path (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bars (default: off)")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from pgps.nnunet.predict import Adaptation, make_predictor, predict_folder

    if args.no_adaptive:
        adaptation = Adaptation.off()
    else:
        adaptation = Adaptation(
            window_threshold=args.window_threshold or None,
            coarse_step=args.coarse_step,
            centre_first=not args.no_centre_first,
            slab_axis=args.slab_axis,
            min_foreground=args.min_foreground,
            min_component_fraction=args.min_component_fraction or None,
            min_component_voxels=args.min_component_voxels,
        )
    predictor = make_predictor(
        args.model, tuple(args.folds) if args.folds else None, args.checkpoint, adaptation, args.step_size,
        not args.no_mirroring, args.device, bool(args.progress),
    )  # fmt: skip
    report = predict_folder(predictor, args.images, args.out, processes=args.processes)
    for row in report:
        print(
            f"{row['case']}: shape {row['shape']}, step {row['step']:g}, windows {row['windows_evaluated']}/"
            f"{row['windows_planned']} evaluated ({row['windows_skipped']} skipped; fine step: {row['windows_fine']}), "
            f"{row['seconds']:.2f} s, {row['components_removed']} small components removed"
        )
    total = sum(r["seconds"] for r in report)
    print(f"{len(report)} cases, {total:.2f} s of sliding window; report: {args.out}/pgps_predict_report.csv")
    return 0


def _surface_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "surface",
        help="Dice and Normalized Surface Dice per case and class (for pgps collect, or two folders)",
        description="Compute Dice and NSD at a tolerance in mm for every case and foreground class "
        "(pgps.metrics, pgps.surface), "
        "either for the final validation of trained nnU-Net fold folders (written to FOLD/validation/"
        "pgps_surface.csv, which pgps collect reads) or for a folder of predictions against a folder of references "
        "(--out). Files are read with nnU-Net's reader for the dataset.",
    )
    p.add_argument("--fold-dir", nargs="+", metavar="DIR", help="trained fold folder(s) with validation/summary.json")
    p.add_argument("--pred", metavar="DIR", help="predicted segmentations (e.g. pgps predict's output)")
    p.add_argument("--ref", metavar="DIR", help="reference segmentations with the same file names")
    p.add_argument("--dataset-json", metavar="FILE", help="dataset.json for --pred/--ref (default: --pred's)")
    p.add_argument("--out", metavar="CSV", help="table to write for --pred/--ref")
    p.add_argument(
        "--tolerance", type=float, default=None, metavar="MM",
        help="NSD tolerance in mm (default: 2, the CDL-UNet authors' FLARE evaluation)",
    )  # fmt: skip
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar (default: on a terminal)")
    p.set_defaults(func=_run_surface)


def _run_surface(args: argparse.Namespace) -> int:
    from pgps.nnunet import surface

    tolerance = surface.DEFAULT_TOLERANCE_MM if args.tolerance is None else args.tolerance
    if bool(args.fold_dir) == bool(args.pred or args.ref):
        raise ValueError("give either --fold-dir DIR... or --pred DIR --ref DIR --out CSV")
    if args.fold_dir:
        for fold in args.fold_dir:
            print(surface.write_fold_surface(fold, tolerance, args.progress))
        return 0
    if not (args.pred and args.ref and args.out):
        raise ValueError("--pred, --ref and --out go together")
    meta = Path(args.dataset_json or Path(args.pred) / "dataset.json")
    if not meta.is_file():
        raise ValueError(f"{meta} does not exist (give --dataset-json)")
    dataset_json = json.loads(meta.read_text())
    rows = surface.surface_rows(surface.folder_pairs(args.pred, args.ref, dataset_json), dataset_json, tolerance,
                                args.progress)  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, surface.surface_csv(rows))
    import math

    def mean(key: str) -> float:
        values = [r[key] for r in rows if not math.isnan(r[key])]
        return sum(values) / len(values) if values else math.nan

    print(f"{args.out}: {len({r['case'] for r in rows})} cases, mean Dice {mean('dice'):.4f}, mean NSD "
          f"{mean('nsd'):.4f} at {tolerance:g} mm")  # fmt: skip
    return 0


def _cdl_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cdl-report",
        help="the data-curriculum experiment's table in the style of CDL-UNet Table 5, beside the published one",
        description="Render table5.csv/.md (DSC and NSD per class and arm, the published CDL-UNet Table 5, and the "
        "average gain of easy-then-hard over easy-only ours vs published) and difficulty.md (groups, L_real, "
        "Spearman of DS with the known corruption level) from pgps surface tables (pgps.report.cdl).",
    )
    p.add_argument("--surface", nargs="+", required=True, metavar="ARM=CSV", help="pgps surface table per arm")
    p.add_argument("--dataset-json", required=True, metavar="FILE", help="the dataset's dataset.json (class names)")
    p.add_argument("--difficulty", required=True, metavar="CSV", help="difficulty.csv of the training cases")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--published", metavar="DIR", help="published-value files (default: the ones shipped)")
    p.add_argument("--notes", default="", help="a line about the run (size, epochs) under the table's title")
    p.set_defaults(func=_run_cdl_report)


def _run_cdl_report(args: argparse.Namespace) -> int:
    from pgps.report.cdl import render_cdl

    surfaces: dict[str, list[str]] = {}
    for item in args.surface:
        arm, sep, path = item.partition("=")
        if not sep or not arm or not path:
            raise ValueError(f"--surface takes ARM=CSV, got {item!r}")
        surfaces.setdefault(arm, []).append(path)  # several tables of an arm (folds) are pooled
    for path in render_cdl(surfaces, args.dataset_json, args.difficulty, args.out, args.published, args.notes):
        print(path)
    return 0


def _report_command(name: str):
    """The ``pgps.report.commands`` function ``name``, imported only when it runs (pandas, matplotlib)."""

    def run(args: argparse.Namespace) -> int:
        from pgps.report import commands

        return getattr(commands, name)(args)

    return run


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
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_report_command("collect"))


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
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_report_command("characteristics"))


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
    p.set_defaults(func=_report_command("report"))


def _amos22_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "amos22-report",
        help="render the AMOS22 large-batch study's Tables 1-4 from held-out scores, beside the published values",
        description="Read a held-out manifest (written by the workflow: one row per scored prediction, its pgps "
        "surface table under 'scores') and write OUT/tables/amos22_table{1..4}.csv|md|tex and "
        "OUT/compare/amos22_table{1..4}.csv|md (ours vs the paper's DSC and NSD). Missing score files are gaps. "
        "See pgps.report.amos22.",
    )
    p.add_argument("--manifest", required=True, metavar="CSV", help="held-out manifest (pgps.heldout columns)")
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
    p.set_defaults(func=_report_command("study_report"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgps", description="Progressive Growing of Patch Size (PGPS) tools.")
    parser.add_argument("--version", action="version", version=f"pgps {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _schedule_parser(sub)
    _trainers_parser(sub)
    _synth_parser(sub)
    _light_plans_parser(sub)
    _difficulty_parser(sub)
    _predict_parser(sub)
    _surface_parser(sub)
    _cdl_report_parser(sub)
    _train_evaluate_parser(sub)
    _backbone_plans_parser(sub)
    _plans_variant_parser(sub)
    _ensemble_parser(sub)
    _determine_postprocessing_parser(sub)
    _amos22_report_parser(sub)
    _gpu_slot_parser(sub)
    _convert_parser(sub)
    _download_parser(sub)
    _collect_parser(sub)
    _characteristics_parser(sub)
    _report_parser(sub)
    _study_report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `pgps schedule ... | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except MissingExtra as exc:  # an optional dependency: the message names the extra that installs it
        print(f"pgps {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"pgps {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
