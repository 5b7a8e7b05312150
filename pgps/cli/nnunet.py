"""nnU-Net plans and training commands: the trainer names, plans configurations (light, variants, backbones),
training with in-process evaluation, adaptive prediction, ensembles and post-processing, and one GPU per job."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pgps import names
from pgps.cli.common import (
    POSITIVE,
    add_overwrite_configuration,
    output_plans_name,
    read_plans,
    refuse_silent_changes,
    write_plans,
)
from pgps.io import atomic_write_text
from pgps.plans import planned_configuration
from pgps.sizes import fmt_size


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
    add_overwrite_configuration(p)
    p.set_defaults(func=_run_light_plans)


def _run_light_plans(args: argparse.Namespace) -> int:
    from pgps.nnunet.light import DEFAULT_CONVS, DEFAULT_FEATURES, PRESETS, add_light_configuration

    before = read_plans(args.plans)
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
    unchanged = write_plans(args.plans, before, plans, args.overwrite)
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
    add_overwrite_configuration(p)
    p.set_defaults(func=_run_plans_variant)


def _run_plans_variant(args: argparse.Namespace) -> int:
    from pgps.plans import add_plans_variant, resolve_configuration, variant_name

    plans = read_plans(args.plans)
    out = args.out or args.plans
    try:
        after = add_plans_variant(plans, args.source, args.name, patch_size=args.patch_size, batch_size=args.batch_size)
        source = resolve_configuration(plans["configurations"], args.source)
    except ValueError as exc:
        raise ValueError(f"{args.plans}: {exc}") from exc
    name = args.name or variant_name(
        args.source, args.patch_size or source["patch_size"], args.batch_size or source["batch_size"]
    )
    plans_name = output_plans_name(args, out)
    if plans_name:
        after["plans_name"] = plans_name
    unchanged = write_plans(out, read_plans(out) if os.path.exists(out) else {}, after, args.overwrite)
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
        "gets the segmentations and the averaged probabilities (.npz). See pgps.nnunet.inference.ensemble.",
    )
    p.add_argument("--members", nargs="+", required=True, metavar="DIR", help="prediction folders, one per model")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the ensemble into")
    p.add_argument("--order", choices=["before", "after", "none"], default="after",
                   help="when post-processing applies (default: %(default)s)")  # fmt: skip
    p.add_argument("--postprocessing", nargs="*", default=[], metavar="PKL", help="postprocessing.pkl file(s)")
    p.add_argument("--processes", type=POSITIVE, default=2, help="worker processes (default: %(default)s)")
    p.set_defaults(func=_run_ensemble)


def _run_ensemble(args: argparse.Namespace) -> int:
    from pgps.nnunet.inference.ensemble import ensemble

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
    from pgps.nnunet.inference.ensemble import determine_postprocessing

    pkl = determine_postprocessing(args.models, args.out, args.folds, args.processes)
    print(f"{pkl}: post-processing of {' + '.join(os.path.basename(m.rstrip('/')) for m in args.models)}")
    return 0


def _train_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-evaluate",
        help="train several nnU-Net runs in one process, each evaluated on its held-out cases without worker pools",
        description="Train DATASET's fold FOLD of CONFIGURATION with each trainer in turn, in this process, as "
        "nnUNetv2_train does (nnU-Net's paths and the PGPS_* overrides come from the environment; the pgps "
        "trainers are found without nnUNet_extTrainer), then predict the fold's held-out cases with nnU-Net's "
        "predictor and score them with nnU-Net's metrics into validation/summary.json, one case at a time (see "
        "pgps.nnunet.inference.evaluation). Saves the process start, imports and validation pools of one "
        "nnUNetv2_train per run.",
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
    from pgps.nnunet.inference.evaluation import train_and_evaluate

    train_and_evaluate(
        args.dataset, args.configuration, args.fold, args.trainers, plans=args.plans, device=args.device,
        threads=args.threads,
        mirroring=args.mirroring, pairs=args.pairs, overwrite=args.overwrite, evaluate_only=args.evaluate_only,
    )  # fmt: skip
    return 0


def _gpu_slot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gpu-slot",
        help="run a command on one free GPU of this machine (local-gpu profile)",
        description="Take a lock on one of N GPU slots, run COMMAND with CUDA_VISIBLE_DEVICES set to that GPU, "
        "release the slot when the command and every process it left in its process group have ended; waits while "
        "all N are busy. Example: pgps gpu-slot --slots 4 -- "
        "nnUNetv2_train 4 3d_fullres 0 -tr nnUNetTrainer_PGPS_Performance",
    )
    p.add_argument("--slots", type=POSITIVE, required=True, help="number of GPUs shared by the jobs (>= 1)")
    p.add_argument("--lock-dir", default=None,
                   help="a lock folder shared by all users' jobs on this machine (created with mode 0777, lock files "
                   "0666); default: $PGPS_GPU_LOCK_DIR, else a folder of this user's under /tmp")  # fmt: skip
    p.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="how long processes the command leaves behind may run on before they are SIGKILLed and the "
                   "GPU is freed (default: 10)")  # fmt: skip
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command to run")
    p.set_defaults(func=_run_gpu_slot)


def _run_gpu_slot(args: argparse.Namespace) -> int:
    from pgps.experiments.gpu_slot import GRACE_S, run_on_free_gpu

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    grace = GRACE_S if args.grace is None else args.grace
    return run_on_free_gpu(command, args.slots, Path(args.lock_dir) if args.lock_dir else None, grace)


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
    from pgps.nnunet.backbone_plans import add_backbone_configurations, describe, parse_arch_options

    arch = parse_arch_options(args.arch, args.backbone)
    try:
        plans, configurations = add_backbone_configurations(
            read_plans(args.plans), args.backbone, args.source, args.name, patch_size=args.patch_size,
            batch_size=args.batch_size, arch_kwargs=arch,
        )  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"{args.plans}: {exc}") from exc
    out = args.out or args.plans
    plans_name = output_plans_name(args, out)
    if plans_name:
        plans["plans_name"] = plans_name
    if os.path.exists(out):
        refuse_silent_changes(out, read_plans(out), plans, args.overwrite)
    atomic_write_text(out, json.dumps(plans, indent=4))
    for backbone, name in zip(args.backbone, configurations, strict=True):
        print(f"{out}: {describe(plans, name)}")
        print(
            f"  train: nnUNetv2_train DATASET {name} FOLD -p {plans.get('plans_name', 'nnUNetPlans')} "
            f"-tr {names.trainer_name('performance', backbone)}"
        )
    return 0


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="nnU-Net inference with CDL-UNet's adaptive sliding window and a per-case report",
        description="Predict every case of an nnU-Net raw image folder with a trained model folder, through "
        "nnUNetPredictor with CDL-UNet's adaptations (pgps.nnunet.inference.predict): a coarser step when the "
        "fine step "
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
    a = p.add_argument_group("adaptations (defaults: see pgps.nnunet.inference.predict)")
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
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from pgps.nnunet.inference.predict import Adaptation, make_predictor, predict_folder
    from pgps.progress import bar_wanted

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
        not args.no_mirroring, args.device, bar_wanted(args.progress),
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


def register(sub) -> None:
    """Add this group's commands to ``sub`` (:class:`~pgps.cli.common.CommandGroups`)."""
    _trainers_parser(sub)
    _light_plans_parser(sub)
    _plans_variant_parser(sub)
    _backbone_plans_parser(sub)
    _train_evaluate_parser(sub)
    _predict_parser(sub)
    _ensemble_parser(sub)
    _determine_postprocessing_parser(sub)
    _gpu_slot_parser(sub)
