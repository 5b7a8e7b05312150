"""Full vs adaptive sliding-window inference (CDL-UNet, pgps predict): windows, seconds, Dice and NSD per case.

Makes demo-like data with a long first axis, as CT volumes are along z: ``pgps synth --preset organs`` with
volumes of SHAPE voxels (default 224x96x96, the organs preset's objects), plans and preprocesses them with
nnU-Net, adds the light CPU configuration with a 64^3 patch (nnU-Net plans the whole volume as its patch),
trains a light model briefly (CPS, no mirroring), then predicts
the test cases twice in one process, side by side: nnU-Net's full sliding window (``Adaptation.off()``,
identical to nnUNetPredictor) and CDL-UNet's adaptive inference with the defaults of
``pgps.nnunet.inference.predict`` (or the thresholds given here). Prints per case the windows evaluated/planned,
the seconds of the sliding window, Dice and NSD against the clean labels, then the totals and ratios::

    .venv/bin/python benchmarks/adaptive_inference.py [--work DIR] [--epochs 30] [--window-threshold 50]

``--work`` keeps (and on a rerun reuses) the data and the trained model. Timings are wall-clock seconds on
this machine (see the printed CPU and thread count); run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import cpu_model, passive_openmp  # benchmarks/machine.py, next to this script

BIN = Path(sys.executable).parent
DATASET_ID, NAME = 720, "AdaptiveBench"
TRAINER = "nnUNetTrainer_PGPS_CPS_NoMirroring"


def env(work: Path, **extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
        nnUNet_results=str(work / "results"), nnUNet_def_n_proc="2",
        nnUNet_extTrainer=str(Path(__file__).resolve().parents[1] / "pgps" / "nnunet" / "ext"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )  # fmt: skip
    e.update(extra)
    return e


def run(command: list, work: Path, **extra: str) -> None:
    print("$", " ".join(map(str, command)), flush=True)
    subprocess.run([str(c) for c in command], env=env(work, **extra), check=True, stdout=subprocess.DEVNULL)


def prepare(work: Path, args: argparse.Namespace) -> Path:
    """Data, plans and a trained light model (reused when present); returns the model folder."""
    raw = work / "raw" / f"Dataset{DATASET_ID}_{NAME}"
    if not (raw / "dataset.json").is_file():
        run([BIN / "pgps", "synth", "--preset", "organs", "--cases", args.cases, "--test-cases", args.test_cases,
             "--shape", *args.shape, "--shape-jitter", "0", "--out", work / "raw", "--dataset-id", DATASET_ID,
             "--name", NAME, "--seed", args.seed, "--no-progress"], work)  # fmt: skip
    plans = work / "preprocessed" / raw.name / "nnUNetPlans.json"
    if not plans.is_file():
        processes = ["-np", "2", "-npfp", "2"]  # nnU-Net's fingerprint default (8 processes) only costs time here
        run([BIN / "nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres", *processes], work)
    # nnU-Net plans the whole volume as its patch here; the light configuration slides a smaller one
    run([BIN / "pgps", "light-plans", "--plans", plans, "--patch-size", *args.patch, "--no-report"], work)
    model = work / "results" / raw.name / f"{TRAINER}__nnUNetPlans__3d_light"
    if not (model / "fold_0" / "checkpoint_final.pth").is_file():
        run([BIN / "nnUNetv2_train", DATASET_ID, "3d_light", "0", "-tr", TRAINER, "-device", "cpu"], work,
            nnUNet_n_proc_DA="0", PGPS_EPOCHS=str(args.epochs), PGPS_ITERATIONS_PER_EPOCH=str(args.iterations),
            PGPS_VAL_ITERATIONS="1",
            PGPS_SEED=str(args.seed), OMP_NUM_THREADS=str(args.threads))  # fmt: skip
    return model


def main() -> int:
    passive_openmp()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="keep data and model in this folder (default: a temporary one)")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--shape", nargs=3, type=int, default=[224, 96, 96], metavar="N")
    parser.add_argument("--patch", nargs=3, type=int, default=[64, 64, 64], metavar="N", help="light patch size")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window-threshold", type=int, default=None, help="default: pgps.nnunet.inference.predict's")
    parser.add_argument("--min-foreground", type=int, default=None, help="default: pgps.nnunet.inference.predict's")
    parser.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm (default: 2)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="pgps-adaptive-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = prepare(work, args)
    os.environ.update(env(work))  # nnU-Net reads its paths at import

    import torch

    from pgps.nnunet.inference.predict import Adaptation, make_predictor, predict_folder
    from pgps.nnunet.inference.surface import folder_pairs, surface_rows

    torch.set_num_threads(args.threads)
    raw = work / "raw" / f"Dataset{DATASET_ID}_{NAME}"
    knobs = {k: v for k, v in (("window_threshold", args.window_threshold), ("min_foreground", args.min_foreground))
             if v is not None}  # fmt: skip
    variants = {"full": Adaptation.off(), "adaptive": Adaptation(**knobs)}
    results = {}
    for name, adaptation in variants.items():
        predictor = make_predictor(model, (0,), adaptation=adaptation, mirroring=False)
        out = work / f"predictions_{name}"
        report = predict_folder(predictor, raw / "imagesTs", out)
        rows = surface_rows(folder_pairs(out, raw / "labelsTs", predictor.dataset_json), predictor.dataset_json,
                            args.tolerance, progress=False)  # fmt: skip
        results[name] = (report, rows)
    print(f"\nCPU: {cpu_model()}, {args.threads} threads; model {model.name}, {args.epochs} epochs x "
          f"{args.iterations} iterations; adaptation {variants['adaptive']}")  # fmt: skip
    header = f"{'case':10} {'variant':9} {'shape':12} {'step':>4} {'windows':>9} {'seconds':>8} {'Dice':>6} {'NSD':>6}"
    print(header)
    totals = {}
    for name, (report, rows) in results.items():
        seconds = windows = 0
        dice, nsd = [], []
        for row in report:
            case_rows = [r for r in rows if r["case"] == row["case"]]
            d = float(np.nanmean([r["dice"] for r in case_rows]))
            n = float(np.nanmean([r["nsd"] for r in case_rows]))
            dice.append(d)
            nsd.append(n)
            seconds += row["seconds"]
            windows += row["windows_evaluated"]
            evaluated = f"{row['windows_evaluated']:>4}/{row['windows_planned']:<4}"
            print(f"{row['case']:10} {name:9} {row['shape']:12} {row['step']:>4g} {evaluated} {row['seconds']:>8.2f} "
                  f"{d:>6.3f} {n:>6.3f}")  # fmt: skip
        totals[name] = (windows, seconds, float(np.mean(dice)), float(np.mean(nsd)))
    (fw, fs, fd, fn), (aw, as_, ad, an) = totals["full"], totals["adaptive"]
    print(f"\ntotal full:     {fw} windows, {fs:.2f} s, mean Dice {fd:.4f}, mean NSD {fn:.4f} at {args.tolerance:g} mm")
    print(f"total adaptive: {aw} windows, {as_:.2f} s, mean Dice {ad:.4f}, mean NSD {an:.4f}")
    print(f"adaptive / full: windows {aw / fw:.3f}, seconds {as_ / fs:.3f}; Dice {ad - fd:+.4f}, NSD {an - fn:+.4f}")
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
