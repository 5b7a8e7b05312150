"""Data commands: ``pgps synth`` (synthetic datasets), ``convert`` and ``download`` (public datasets to nnU-Net's raw
format), ``difficulty`` (CDL-UNet's case difficulty from label sets) and ``surface`` (Dice and NSD of prediction
folders)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pgps.cli.common import (
    NON_NEGATIVE,
    POSITIVE,
)
from pgps.data import synth
from pgps.io import atomic_write_text


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
    knobs.add_argument(
        "--difficulty", nargs=2, type=float, metavar=("LOW", "HIGH"),
        help="range of the per-case image difficulty in [0, 1] (uniform per case; default 0 0: none); see "
        "pgps.data.synth.SynthConfig",
    )  # fmt: skip
    knobs.add_argument("--hard-contrast", type=float, metavar="F", help="contrast factor at difficulty 1 (0.5)")
    knobs.add_argument("--hard-blur", type=float, metavar="SD", help="blur sd in voxels at difficulty 1 (1.5)")
    noisy = p.add_argument_group(
        "noisy label sets (CDL-UNet-like pseudo-labels; see pgps.data.synth.LabelNoise)",
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
    noisy.add_argument(
        "--label-iso-spread", type=float, metavar="S",
        help="annotator k outlines the case's blurred objects at its own iso-level, from 0.5 - S to 0.5 + S "
        "(default 0: the true outline); with --difficulty, disagreement that grows with the image's blur",
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
    p.add_argument("--json", action="store_true", help="print JSON (path, config, statistics)")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    jitter = args.shape_jitter[0] if args.shape_jitter and len(args.shape_jitter) == 1 else args.shape_jitter
    config = synth.configure(
        args.preset, args.foreground_share, num_cases=args.cases, shape=args.shape, shape_jitter=jitter,
        spacing=args.spacing, seed=args.seed, num_classes=args.classes,
        radii=(tuple(args.radius),) if args.radius else None, objects_per_class=args.objects,
        contrast=args.contrast, noise_sd=args.noise, shapes=args.shapes, orientation=args.orientation,
        difficulty=tuple(args.difficulty) if args.difficulty else None, hard_contrast=args.hard_contrast,
        hard_blur=args.hard_blur,
    )  # fmt: skip
    noise = synth.label_noise(args.label_sets, args.label_levels, args.label_factors, args.label_iso_spread)
    path = synth.generate_dataset(
        config, args.out, args.dataset_id, args.name or f"Synth{args.preset.capitalize()}", overwrite=args.overwrite,
        progress=args.progress, label_noise=noise, test_cases=args.test_cases,
    )  # fmt: skip
    stats = json.loads((path / "dataset.json").read_text())["pgps_synth"]["statistics"]
    if args.json:
        json.dump({"path": str(path), "config": config.to_dict(), "statistics": stats}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(path)
    print("\n".join(synth.describe(args.preset, config, stats, noise, args.test_cases)))
    return 0


def _convert_parser(sub: argparse._SubParsersAction) -> None:
    from pgps.nnunet.datasets.convert import FORMATS  # standard library and numpy only

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
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from pgps.nnunet.datasets.convert import convert_dataset

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
    p.set_defaults(func=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from pgps.nnunet.datasets.convert import download

    print(download(args.url, args.out, md5=args.md5, progress=args.progress))
    return 0


def _difficulty_parser(sub: argparse._SubParsersAction) -> None:
    from pgps.data import difficulty

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
    p.set_defaults(func=_run_difficulty)


def _run_difficulty(args: argparse.Namespace) -> int:
    from pgps.nnunet.datasets.labelsets import score_difficulty

    run = score_difficulty(
        args.labels, args.out, images=args.images, dataset_json=args.dataset_json, provided=args.provided,
        easy=args.easy, erroneous=args.erroneous, dice_classes=args.dice_classes, absent=args.absent,
        predict_with=args.predict_with, folds=args.folds, checkpoint=args.checkpoint, device=args.device,
        enhanced_raw=args.enhanced_raw, dataset_id=args.dataset_id, name=args.name,
        drop_erroneous=args.drop_erroneous, overwrite=args.overwrite, progress=args.progress,
    )  # fmt: skip
    print("\n".join(run.summary()))
    return 0


def _surface_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "surface",
        help="Dice and Normalized Surface Dice per case and class (for pgps collect, or two folders)",
        description="Compute Dice and NSD at a tolerance in mm for every case and foreground class "
        "(pgps.metrics, pgps.metrics.surface), "
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
    p.set_defaults(func=_run_surface)


def _run_surface(args: argparse.Namespace) -> int:
    from pgps.nnunet.inference import surface

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


def register(sub) -> None:
    """Add this group's commands to ``sub`` (:class:`~pgps.cli.common.CommandGroups`)."""
    _synth_parser(sub)
    _convert_parser(sub)
    _download_parser(sub)
    _difficulty_parser(sub)
    _surface_parser(sub)
