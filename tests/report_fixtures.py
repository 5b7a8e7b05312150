"""Synthetic fold folders for the report tests: what nnU-Net and the pgps trainers write, without training.

Every run gets ``validation/summary.json`` (nnU-Net's shape), ``pgps_summary.json`` (the keys of
``PGPSMixin.summary()``) and ``pgps_telemetry.csv`` (the trainer's columns), built from the core
schedule. Dice values are seeded random numbers, not results; some runs are left unfinished or
missing on purpose, so every table has gaps.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

import pgps
from pgps.report.results import MANIFEST_COLUMNS
from pgps.sizes import fmt_size, numel

TELEMETRY_COLUMNS = (
    "epoch", "stage", "patch_size", "crop_size", "batch_size", "iterations", "iterated_voxels", "epoch_time_s",
    "compile_time_s", "compilations", "fg_voxel_share", "class_presence_share", "fg_fallbacks", "train_loss",
    "val_loss", "pseudo_dice", "lr", "energy_kwh", "co2_kg",
)  # fmt: skip
"""The columns ``pgps.nnunet.telemetry`` writes (copied: importing the trainer needs torch)."""

EPOCHS = 12
PLANNED = {"patch_size": (64, 64, 64), "steps": (16, 16, 16), "batch_size": 2}


def write_run(fold_dir: Path, run: dict, rng: np.random.Generator, finished: bool = True) -> None:
    """The files of one trained (or, with ``finished=False``, still training) run."""
    mode = run["mode"]
    ipe = max(1, round(250 * run["length"] / 100 / 25))  # short synthetic epochs
    schedule = pgps.make_schedule(
        mode, PLANNED["patch_size"], PLANNED["steps"], PLANNED["batch_size"], epochs=EPOCHS, iterations_per_epoch=ipe
    )
    rows = []
    base = {"cps": 0.80, "efficiency": 0.79, "performance": 0.82}.get(mode, 0.78)
    for epoch in range(EPOCHS if finished else EPOCHS // 2):
        index = schedule.stage_index(epoch) if mode != "rpss" else 0
        stage = schedule.stages[index]
        share = numel(stage.patch_size) / numel(PLANNED["patch_size"])
        rows.append(
            {
                "epoch": epoch,
                "stage": index,
                "patch_size": fmt_size(stage.patch_size),
                "crop_size": fmt_size(stage.crop_size),
                "batch_size": stage.batch_size,
                "iterations": ipe,
                "iterated_voxels": ipe * stage.tensor_voxels,
                "epoch_time_s": 1e-6 * ipe * stage.tensor_voxels + 0.5,
                "compile_time_s": 0.0,
                "compilations": 0,
                "fg_voxel_share": 0.02 / (0.2 + share),
                "class_presence_share": min(1.0, 0.3 + 0.7 * share + 0.002 * stage.batch_size),
                "fg_fallbacks": 0,
                "train_loss": -epoch / EPOCHS,
                "val_loss": -epoch / EPOCHS,
                "pseudo_dice": base * (1 - np.exp(-(epoch + 1) / 4)),
                "lr": 0.01 * (1 - epoch / EPOCHS) ** 0.9,
                # CodeCarbon's per epoch (pgps.nnunet.carbon): proportional to the iterated voxels here
                "energy_kwh": 1e-9 * ipe * stage.tensor_voxels,
                "co2_kg": 4e-10 * ipe * stage.tensor_voxels,
            }
        )
    fold_dir.mkdir(parents=True, exist_ok=True)
    with open(fold_dir / "pgps_telemetry.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TELEMETRY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    last = schedule.num_stages - 1
    p_max = [r["epoch_time_s"] for r in rows if r["stage"] == last]
    summary = {
        "trainer": run["trainer"],
        "mode": mode,
        "schedule": schedule.to_dict(),
        "epochs_done": len(rows),
        "train_time_s": sum(r["epoch_time_s"] for r in rows),
        "p_max_epochs_done": len(p_max),
        "p_max_mean_epoch_time_s": float(np.mean(p_max)) if p_max else None,
        "iterated_voxels": sum(r["iterated_voxels"] for r in rows),
        "planned_iterated_voxels": pgps.iterated_voxels(schedule),
        "planned_relative_voxels": pgps.relative_voxels(schedule),
        "cps_voxels_per_epoch": ipe * PLANNED["batch_size"] * numel(PLANNED["patch_size"]),
        "fg_fallbacks": 0,
        "energy_kwh": sum(r["energy_kwh"] for r in rows),
        "co2_kg": sum(r["co2_kg"] for r in rows),
    }
    (fold_dir / "pgps_summary.json").write_text(json.dumps(summary))
    if finished:
        dice = float(np.clip(base + 0.01 * run["length"] / 100 + rng.normal(0, 0.01), 0, 1))
        (fold_dir / "validation").mkdir(exist_ok=True)
        per_class = {"1": {"Dice": dice - 0.01}, "2": {"Dice": dice + 0.01}}
        cases = [  # nnU-Net's metric_per_case: every fold validates its own cases
            {
                "metrics": {"1": {"Dice": d - 0.01}, "2": {"Dice": d + 0.01}},
                "prediction_file": f"/x/validation/case_{run['fold']}{k}.nii.gz",
                "reference_file": f"/x/gt_segmentations/case_{run['fold']}{k}.nii.gz",
            }
            for k, d in enumerate(dice + np.array([-0.02, 0.0, 0.02]) + rng.normal(0, 0.005, 3))
        ]
        (fold_dir / "validation" / "summary.json").write_text(
            json.dumps({"foreground_mean": {"Dice": dice}, "mean": per_class, "metric_per_case": cases})
        )


def _runs() -> list[dict]:
    runs = []

    def add(datasets, modes, backbones=("unet",), samplers=("default",), mirroring=(True,), lengths=(100,),
            folds=(0, 1, 2), seeds=(0,)):  # fmt: skip
        for d in datasets:
            for m in modes:
                for b in backbones:
                    for s in samplers:
                        for mi in mirroring:
                            for n in lengths:
                                for f in folds:
                                    for seed in seeds:
                                        runs.append(
                                            {"dataset": d, "backbone": b, "mode": m, "sampler": s,
                                             "mirroring": mi, "length": n, "fold": f, "seed": seed}
                                        )  # fmt: skip

    journal = ("cps", "efficiency", "performance")
    main = ("MSD_Lung", "MSD_Hippocampus", "BTCV", "KiTS23", "AMOS22", "lesions")
    add(main, journal, lengths=(1, 10, 100))
    add(("TotalSegmentatorV2",), journal, mirroring=(False,), lengths=(1, 10, 100))
    add(("BTCV", "TotalSegmentatorV2"), ("cps", "performance"), mirroring=(True, False))
    add(("MSD_Lung", "BTCV"), ("progressive-resolution",))
    add(("BTCV",), journal, backbones=("unetr", "swinunetr"))
    add(("MSD_Lung", "KiTS23"), ("performance",), samplers=("single_crop", "multi_crop"))
    add(("BTCV",), ("cps", "performance"), backbones=("resenc_m", "resenc_l", "resenc_xl"))
    add(("MSD_Lung", "MSD_Hippocampus"), ("miccai", "miccai-plus"))
    add(("MSD_Lung",), ("cps", "miccai", "rpss"), lengths=(10, 25, 50, 100))  # MICCAI 2024 Supp. Table 2
    add(("BTCV", "MSD_Lung"), journal, lengths=(1, 10, 100), folds=(0,), seeds=(0, 1, 2, 3, 4))
    unique = {tuple(r.values()): r for r in runs}
    return list(unique.values())


def synthetic_manifest(root: Path, seed: int = 0) -> Path:
    """Write fold folders for a small version of the article's grid under ``root`` and the manifest
    ``root/runs.csv``. Left out on purpose: AMOS22 fold 2 (all modes) is missing, KiTS23's
    PGPS-Performance fold 1 is still training, MSD_Lung's Progressive Resolution and its RPSS at 25%
    never ran."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, run in enumerate(_runs()):
        trainer = f"nnUNetTrainer_PGPS_{run['mode']}_{run['backbone']}_{run['sampler']}_{run['length']}"
        fold_dir = (
            root
            / "nnunet"
            / f"seed{run['seed']}"
            / run["dataset"]
            / f"{trainer}_{run['mirroring']}"
            / f"fold_{run['fold']}"
        )
        row = {
            **run,
            "trainer": trainer,
            "plans": "nnUNetPlans",
            "configuration": "3d_fullres",
            "fold_dir": str(fold_dir),
        }
        rows.append(row)
        if run["dataset"] == "AMOS22" and run["fold"] == 2:
            continue
        if run["dataset"] == "MSD_Lung" and run["mode"] == "progressive-resolution":
            continue
        if run["dataset"] == "MSD_Lung" and run["mode"] == "rpss" and run["length"] == 25:
            continue
        unfinished = run["dataset"] == "KiTS23" and run["mode"] == "performance" and run["fold"] == 1
        write_run(fold_dir, {**row, "index": i}, rng, finished=not unfinished)
    path = root / "runs.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(MANIFEST_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "mirroring": str(row["mirroring"]).lower()})
    return path
