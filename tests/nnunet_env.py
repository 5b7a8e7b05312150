"""A tiny nnU-Net dataset made by the tests themselves: raw -> plan/preprocess -> reduced plans.

nnU-Net reads its paths from the environment at import time, so everything nnU-Net runs in a
subprocess with :func:`env`. The plans are reduced to a 16^3 patch, batch 2, and a 4-stage,
4-to-16-channel U-Net so that an epoch takes a fraction of a second on a CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
DATASET = "Dataset001_Tiny"
REGIONS = "Dataset002_TinyRegions"
"""The same cases as nested regions ("a": labels 1 and 2, "b": label 2) with an ignore label (3) and z-score
normalisation inside the nonzero mask (``use_mask_for_norm``): nnU-Net's region, ignore-label and mask branches."""
NUM_CASES = 6
SHAPE = (24, 24, 24)
PATCH = [16, 16, 16]


def env(root: Path, results: Path | None = None, **extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(results or root / "results"),
        nnUNet_def_n_proc="1",
        nnUNet_extTrainer=str(Path(__file__).resolve().parents[1] / "pgps" / "nnunet" / "ext"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        OMP_NUM_THREADS="1",
    )
    e.update(extra)
    return e


def write_raw(
    root: Path,
    empty_cases: int = 0,
    shape: tuple[int, int, int] = SHAPE,
    radius: tuple[int, int] = (2, 5),
    regions: bool = False,
) -> None:
    """Two spheres (labels 1, 2; radius drawn from ``radius``, centre at least 5 voxels inside) per case in
    noise; the first ``empty_cases`` cases have no foreground. ``regions``: dataset :data:`REGIONS` instead, the
    first 3 slices of background marked with the ignore label."""
    import SimpleITK as sitk

    folder = root / "raw" / (REGIONS if regions else DATASET)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir(parents=True)
    grid = np.indices(shape)
    for i in range(NUM_CASES):
        rng = np.random.default_rng([7, i])
        label = np.zeros(shape, np.uint8)
        if i >= empty_cases:
            for cls in (1, 2):
                centre = rng.integers(5, shape[0] - 5, 3)
                r = rng.integers(*radius)
                label[((grid - centre[:, None, None, None]) ** 2).sum(0) <= r**2] = cls
        image = (label + rng.normal(0, 0.3, shape)).astype(np.float32)
        if regions:
            label[:3][label[:3] == 0] = 3
        sitk.WriteImage(sitk.GetImageFromArray(image), str(folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(folder / "labelsTr" / f"case_{i:03d}.nii.gz"))
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": NUM_CASES,
               "file_ending": ".nii.gz"}  # fmt: skip
    if regions:
        dataset.update(channel_names={"0": "MRI"}, labels={"background": 0, "a": [1, 2], "b": 2, "ignore": 3},
                       regions_class_order=[1, 2])  # fmt: skip
    (folder / "dataset.json").write_text(json.dumps(dataset))


def plan_and_preprocess(root: Path, batch_size: int = 2, patch: list[int] = PATCH, dataset: str = DATASET) -> Path:
    """nnU-Net's planning and preprocessing, the plans then reduced (see the module docstring); :data:`REGIONS`
    normalises inside the nonzero mask (planned before preprocessing, so the data follow it)."""
    number = str(int(dataset[len("Dataset") : len("Dataset") + 3]))
    subprocess.run(
        [BIN / "nnUNetv2_plan_and_preprocess", "-d", number, "-c", "3d_fullres", "-np", "1", "-npfp", "1",
         *(["--no_pp"] if dataset == REGIONS else [])],
        env=env(root), check=True, capture_output=True,
    )  # fmt: skip
    plans_file = root / "preprocessed" / dataset / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    conf = plans["configurations"]["3d_fullres"]
    if dataset == REGIONS:
        conf["use_mask_for_norm"] = [True]
    conf["patch_size"] = patch
    conf["batch_size"] = batch_size
    arch = conf["architecture"]["arch_kwargs"]
    arch.update(n_stages=4, features_per_stage=[4, 8, 16, 16])
    arch.update(n_conv_per_stage=[1] * 4, n_conv_per_stage_decoder=[1] * 3)
    arch.update(kernel_sizes=[[3, 3, 3]] * 4, strides=[[1, 1, 1]] + [[2, 2, 2]] * 3)
    plans_file.write_text(json.dumps(plans, indent=1))
    if dataset == REGIONS:
        subprocess.run([BIN / "nnUNetv2_preprocess", "-d", number, "-c", "3d_fullres", "-np", "1"], env=env(root),
                       check=True, capture_output=True)  # fmt: skip
    return plans_file


SHORT = {"PGPS_EPOCHS": "4", "PGPS_ITERATIONS_PER_EPOCH": "2", "PGPS_VAL_ITERATIONS": "1", "nnUNet_n_proc_DA": "0",
         "PGPS_PROGRESS_EVERY": "0"}  # fmt: skip
"""The short runs of :func:`train` and :func:`train_only`; no progress.png (matplotlib, 0.6 s of CPU an epoch), which
no test reads."""


def train(root: Path, trainer: str, *args: str, results: Path | None = None, **extra: str):
    """``nnUNetv2_train 1 3d_fullres 0 -tr trainer -device cpu`` with short-run overrides."""
    short = {**SHORT, **extra}
    return subprocess.run(
        [BIN / "nnUNetv2_train", "1", "3d_fullres", "0", "-tr", trainer, "-device", "cpu", *args],
        env=env(root, results, **short), capture_output=True, text=True,
    )  # fmt: skip


def fold_folder(results: Path, trainer: str) -> Path:
    return results / DATASET / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"


RUN_TRAINING = """
import json, os, sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
trainer = get_trainer_from_args("1", "3d_fullres", 0, sys.argv[1], device=torch.device("cpu"))
stop_after = int(sys.argv[2]) if len(sys.argv) > 2 and int(sys.argv[2]) >= 0 else None
keys_file = sys.argv[3] if len(sys.argv) > 3 else None
if len(sys.argv) > 4 and sys.argv[4] == "resume":  # continue from the latest (or final) checkpoint, as --c does
    latest = os.path.join(trainer.output_folder, "checkpoint_latest.pth")
    trainer.load_checkpoint(latest if os.path.exists(latest) else os.path.join(trainer.output_folder,
                                                                             "checkpoint_final.pth"))
if keys_file:  # record the case keys of every batch the training loop receives
    step = trainer.train_step
    def train_step(batch):
        with open(keys_file, "a") as f:
            f.write(json.dumps([trainer.current_epoch, [str(k) for k in batch["keys"]]]) + "\\n")
        return step(batch)
    trainer.train_step = train_step
if stop_after is not None:  # simulate a pre-emption right after epoch `stop_after` was checkpointed
    trainer.save_every = stop_after + 1
    end = trainer.on_epoch_end
    def on_epoch_end():
        end()
        if trainer.current_epoch == stop_after + 1:
            raise SystemExit(17)
    trainer.on_epoch_end = on_epoch_end
trainer.run_training()
"""


def train_only(root: Path, trainer: str, *args: str, results: Path | None = None, **extra: str):
    """Run only ``run_training`` (no final sliding-window validation) in a subprocess.

    ``args``: ``[stop_after [keys_file ["resume"]]]`` (see :data:`RUN_TRAINING`; -1: do not stop)."""
    short = {**SHORT, **extra}
    return subprocess.run(
        [sys.executable, "-c", RUN_TRAINING, trainer, *args], env=env(root, results, **short),
        capture_output=True, text=True,
    )  # fmt: skip


TRANSFORMER_PLANS = "nnUNetTransformerPlans"
TRANSFORMER_PATCH = {"unetr": [32, 16, 16], "swinunetr": [64, 32, 32]}  # two stages each: one step, then P_max
TINY_ARCH = {
    "unetr": {"hidden_size": 48, "feature_size": 8, "mlp_dim": 96, "num_heads": 4},
    "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1]},
}


def add_transformer_plans(root: Path) -> Path:
    """``TRANSFORMER_PLANS.json`` next to the reduced plans: tiny ``3d_unetr`` and ``3d_swinunetr`` configurations
    (``pgps backbone-plans``'s function) that read the same preprocessed 3d_fullres data."""
    from pgps.nnunet.backbone_plans import add_backbone_configuration

    folder = root / "preprocessed" / DATASET
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    for backbone, patch in TRANSFORMER_PATCH.items():
        plans = add_backbone_configuration(plans, backbone, patch_size=patch, arch_kwargs=TINY_ARCH[backbone])
    plans["plans_name"] = TRANSFORMER_PLANS
    out = folder / f"{TRANSFORMER_PLANS}.json"
    out.write_text(json.dumps(plans, indent=1))
    return out


def kill_session(session: int) -> None:
    """SIGKILL what is left of a launched command's session (started with ``start_new_session=True``): a job killed
    by SIGKILL may orphan processes, which a cluster's scheduler kills with the job (its cgroup) and a test must
    kill itself."""
    import contextlib
    import signal

    from pgps import processes

    for pid in processes.live_members(session=session) or []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
