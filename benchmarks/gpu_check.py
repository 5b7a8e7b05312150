"""GPU acceptance run: the PGPS trainers through every stage of a realistic plan, one table.

    make gpu-check                                         # = python benchmarks/gpu_check.py, on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --tiny     # the same code path, small, on the CPU (the test suite)

It synthesises a dataset (``pgps.data.synth``, written as NIfTI with nibabel), plans and preprocesses it
with nnU-Net's own API, sets an MSD-Brain-like plan (``P_max`` 128^3, ``b_base`` 2, nnU-Net's
default 6-level U-Net, step 32; UNETR and SwinUNETR configurations of the same ``P_max`` from
``pgps backbone-plans``' function), and trains each trainer for a few iterations of every stage of
its curriculum, through nnU-Net's own hooks (loader, augmentation, ``train_step``, one validation
step per stage). Per trainer and stage it prints the iteration time (median over the measured
iterations; the first ``--warmup`` iterations of a stage, which build its loader, are left out),
the share of that time spent waiting for data, and the peak GPU memory; then the runtime of
PGPS-Efficiency and PGPS-Performance relative to CPS, extrapolated to the article's schedule
(1000 epochs of 250 iterations: each stage's measured time times its iterations there), beside
their planned FLOPs. It exits non-zero if any trainer fails.

Compilation follows the trainers' policy (``pgps.nnunet.compiling``): with the check's few
iterations per stage no stage can repay a compilation, so the trainers run eager; one extra run
compiles CPS at ``P_max`` through nnU-Net's own ``run_training`` and its final sliding-window
validation (the graph budget's whole path) and prints the compile time, the compiled iteration time
and the graphs compiled. Another trains PGPS-Performance as one rank of a DDP group (NCCL on CUDA,
gloo on the CPU), nnU-Net's multi-GPU path with world size 1. cuDNN's autotuner is on, as
``nnUNetv2_train`` sets it.

The check ends within ``--budget-s`` (default 420 s): the runs go in priority order (CPS,
PGPS-Efficiency, PGPS-Performance; the compiled run; the DDP run; the memory probe, UNETR,
SwinUNETR), a run starts only if the time left covers the longest run so far, a run stops between
stages when the budget is spent, and the output names every run skipped or cut short.

On a machine without nnunetv2 (a bare GPU machine): bring the wheels of ``benchmarks/gpu_wheels.txt``
(docs/pages/how-to/nnunet.md: "GPU acceptance run") and run from the source tree with ``PYTHONPATH``. Packages that the
training path imports but never calls here are supplied as stand-ins from ``benchmarks/standins``
when missing (SimpleITK: nnU-Net reads this dataset with nibabel); the output says so.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATASET_ID = 987
DATASET = f"Dataset{DATASET_ID}_PGPSGPUCheck"
STANDINS = ("SimpleITK",)
"""Packages a stand-in may replace: imported by nnU-Net's training path, never called by this check."""

TRAINERS = (
    "nnUNetTrainer_PGPS_CPS",
    "nnUNetTrainer_PGPS_Efficiency",
    "nnUNetTrainer_PGPS_Performance",
    "nnUNetTrainer_PGPS_Performance_MemoryProbe",
    "nnUNetTrainer_PGPS_UNETR_Performance",
    "nnUNetTrainer_PGPS_SwinUNETR_Performance",
)
ARTICLE_EPOCHS, ARTICLE_ITERATIONS = 1000, 250
DEFAULT_BUDGET_S = 420.0
FIRST = ("nnUNetTrainer_PGPS_CPS", "nnUNetTrainer_PGPS_Efficiency", "nnUNetTrainer_PGPS_Performance")
"""The trainers that run before the compiled and the DDP run (the rest of ``--trainers`` after them)."""
COMPILED, DDP = "nnUNetTrainer_PGPS_CPS", "nnUNetTrainer_PGPS_Performance"


class OutOfTime(Exception):
    """The budget ran out before a run's next stage."""


def plan_for(tiny: bool) -> dict:
    """The plan the check trains: MSD-Brain-like, or the test suite's tiny one."""
    if tiny:
        return {
            "cases": 6, "shape": (24, 24, 24), "patch": (16, 16, 16), "batch": 2, "features": (4, 8, 16, 16),
            "convs": 1, "unetr": ((32, 16, 16), {"hidden_size": 48, "feature_size": 8, "mlp_dim": 96, "num_heads": 4}),
            "swinunetr": ((32, 32, 32), {"feature_size": 12, "depths": [1, 1, 1, 1]}),
        }  # fmt: skip
    return {
        "cases": 8, "shape": (144, 160, 144), "patch": (128, 128, 128), "batch": 2,
        "features": (32, 64, 128, 256, 320, 320), "convs": 2, "unetr": ((128, 128, 128), {}),
        "swinunetr": ((128, 128, 128), {}),
    }  # fmt: skip


# -- environment ---------------------------------------------------------------------------------------------
def prepare_environment(work: Path, device: str, workers: int) -> list[str]:
    """nnU-Net's folders and switches (read when nnunetv2 is imported), stand-ins for missing packages."""
    sys.path.insert(0, str(REPO))
    from pgps.nnunet import ext_trainer_path

    for name in ("raw", "preprocessed", "results"):
        (work / name).mkdir(parents=True, exist_ok=True)
        os.environ[f"nnUNet_{name}"] = str(work / name)
    os.environ["nnUNet_extTrainer"] = ext_trainer_path()
    os.environ["nnUNet_n_proc_DA"] = str(workers)
    os.environ.setdefault("nnUNet_def_n_proc", str(max(1, min(8, os.cpu_count() or 1))))
    used = []
    for name in STANDINS:
        try:
            importlib.import_module(name)
        except ImportError:
            used.append(name)
    if used:
        sys.path.append(str(HERE / "standins"))
    return used


# -- data and plans ------------------------------------------------------------------------------------------
def synthesise(plan: dict) -> None:
    """Raw nnU-Net dataset of ``pgps.data.synth`` cases (organs preset, resized), written with nibabel."""
    import nibabel as nib
    import numpy as np

    from pgps.data.synth import case_identifiers, dataset_json, make_case, preset

    organs = preset("organs")
    scale = min(plan["shape"]) / min(organs.shape)  # organs keep their share of the volume
    radii = tuple((lo * scale, hi * scale) for lo, hi in organs.radii)
    config = preset("organs", num_cases=plan["cases"], shape=plan["shape"], shape_jitter=(2, 2, 2), radii=radii)
    folder = Path(os.environ["nnUNet_raw"]) / DATASET
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for index, identifier in enumerate(case_identifiers(config.num_cases)):
        image, label = make_case(config, index)
        affine = np.diag([*config.spacing[::-1], 1.0])  # nibabel's x, y, z: the reverse of our array axes
        nib.save(nib.Nifti1Image(image.T.astype(np.float32), affine), folder / "imagesTr" / f"{identifier}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label.T.astype(np.uint8), affine), folder / "labelsTr" / f"{identifier}.nii.gz")
    description = dataset_json(config, DATASET)
    description["overwrite_image_reader_writer"] = "NibabelIO"
    (folder / "dataset.json").write_text(json.dumps(description, indent=1))


def plan_and_preprocess(plan: dict, processes: int) -> None:
    """nnU-Net's fingerprint and planner, the check's plan set into 3d_fullres, nnU-Net's preprocessing, and the
    backbone configurations (``nnUNetTransformerPlans``) that read the same preprocessed data."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    from pgps.nnunet.backbone_plans import add_backbone_configuration

    extract_fingerprints([DATASET_ID], num_processes=processes, show_progress_bar=False, verbose=False)
    workers = os.environ["nnUNet_n_proc_DA"]
    os.environ["nnUNet_n_proc_DA"] = str(max(1, int(workers)))  # the planner sets torch's threads from it
    plan_experiments([DATASET_ID])
    os.environ["nnUNet_n_proc_DA"] = workers
    plans_file = Path(os.environ["nnUNet_preprocessed"]) / DATASET / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    conf = plans["configurations"]["3d_fullres"]
    conf.update(patch_size=list(plan["patch"]), batch_size=plan["batch"])
    levels = len(plan["features"])
    conf["architecture"]["arch_kwargs"].update(
        n_stages=levels, features_per_stage=list(plan["features"]), kernel_sizes=[[3, 3, 3]] * levels,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (levels - 1), n_conv_per_stage=[plan["convs"]] * levels,
        n_conv_per_stage_decoder=[plan["convs"]] * (levels - 1),
    )  # fmt: skip
    plans_file.write_text(json.dumps(plans, indent=1))
    preprocess(plans, processes)
    for backbone in ("unetr", "swinunetr"):
        patch, arch = plan[backbone]
        plans = add_backbone_configuration(plans, backbone, patch_size=patch, arch_kwargs=arch)
    plans["plans_name"] = "nnUNetTransformerPlans"
    (plans_file.parent / "nnUNetTransformerPlans.json").write_text(json.dumps(plans, indent=1))


def preprocess(plans: dict, processes: int) -> None:
    """nnU-Net's ``preprocess`` for ``3d_fullres``, without its last step's ``distutils`` import (gone from Python
    3.12; only setuptools' shim supplies it): the preprocessor, then the ground truth copied for validation."""
    import shutil

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    configuration = PlansManager(plans).get_configuration("3d_fullres")
    preprocessor = configuration.preprocessor_class(verbose=False)
    preprocessor.show_progress_bar = False
    preprocessor.run(DATASET_ID, "3d_fullres", plans["plans_name"], num_processes=processes)
    raw = Path(os.environ["nnUNet_raw"]) / DATASET
    description = json.loads((raw / "dataset.json").read_text())
    truth = Path(os.environ["nnUNet_preprocessed"]) / DATASET / "gt_segmentations"
    truth.mkdir(exist_ok=True)
    for case, files in get_filenames_of_train_images_and_targets(str(raw), description).items():
        shutil.copyfile(files["label"], truth / (case + description["file_ending"]))


def configuration_of(trainer: str) -> tuple[str, str]:
    for backbone in ("UNETR", "SwinUNETR"):
        if f"_{backbone}_" in trainer:
            return f"3d_{backbone.lower()}", "nnUNetTransformerPlans"
    return "3d_fullres", "nnUNetPlans"


# -- training ------------------------------------------------------------------------------------------------
def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def at_article_length(schedule):
    """``schedule``'s stages (batch sizes included) paced over the article's 1000 epochs of 250 iterations."""
    import dataclasses

    import pgps

    epochs = pgps.epochs_per_stage(schedule.num_stages, ARTICLE_EPOCHS)
    stages = tuple(dataclasses.replace(s, epochs=e) for s, e in zip(schedule.stages, epochs, strict=True))
    return dataclasses.replace(schedule, stages=stages, iterations_per_epoch=ARTICLE_ITERATIONS)


def run_trainer(
    name: str, device_name: str, iterations: int, warmup: int, deadline: float = math.inf, prepare=None
) -> dict:
    """Every stage of ``name``'s curriculum: one epoch of ``warmup + iterations`` steps and one validation step;
    the stages that would start past ``deadline`` are left out. ``prepare`` sees the trainer before it starts."""
    import numpy as np
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    import pgps

    configuration, plans = configuration_of(name)
    device = torch.device(device_name)
    trainer = get_trainer_from_args(str(DATASET_ID), configuration, 0, name, plans, device=device)
    if prepare is not None:
        prepare(trainer)
    trainer.num_epochs = pgps_stages(trainer)  # one epoch per stage
    trainer.num_iterations_per_epoch = warmup + iterations
    trainer.num_val_iterations_per_epoch = 1
    trainer.on_train_start()  # initialize: schedule (the memory probe runs here), network, compile policy, loaders
    rows = []
    for epoch in range(trainer.num_epochs):
        if time.perf_counter() > deadline:
            break
        trainer.current_epoch = epoch
        trainer.on_epoch_start()
        trainer.on_train_epoch_start()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        outputs, step_times, waits = [], [], []
        for i in range(trainer.num_iterations_per_epoch):
            start = time.perf_counter()
            batch = next(trainer.dataloader_train)
            loaded = time.perf_counter()
            outputs.append(trainer.train_step(batch))
            synchronize(device)
            done = time.perf_counter()
            if i >= warmup:
                step_times.append(done - start)
                waits.append(loaded - start)
        trainer.on_train_epoch_end(outputs)
        ddp = bool(trainer.is_ddp and isinstance(trainer.network, torch.nn.parallel.DistributedDataParallel))
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        with torch.no_grad(), np.errstate(invalid="ignore"):
            trainer.on_validation_epoch_start()
            trainer.on_validation_epoch_end([trainer.validation_step(next(trainer.dataloader_val))])
        telemetry = trainer.telemetry.epoch_row()
        trainer.on_epoch_end()
        rows.append({
            "stage": trainer.schedule.stage_index(epoch), "patch_size": telemetry["patch_size"],
            "batch_size": telemetry["batch_size"], "iteration_s": statistics.median(step_times),
            "data_wait_share": sum(waits) / sum(step_times), "peak_gib": peak,
            "compile_s": telemetry["compile_time_s"], "loss": float(np.mean([o["loss"] for o in outputs])),
            "ddp": ddp,
        })  # fmt: skip
    trainer.on_train_end()
    article = at_article_length(trainer.schedule)
    for row, n in zip(rows, pgps.iterations_per_stage(article), strict=False):
        row["article_iterations"] = n
    return {
        "trainer": name, "mode": trainer.schedule.mode, "rows": rows, "complete": len(rows) == trainer.num_epochs,
        "article_seconds": sum(r["iteration_s"] * r["article_iterations"] for r in rows),
        "relative_voxels": pgps.relative_voxels(article), "losses_finite": all(np.isfinite(r["loss"]) for r in rows),
    }  # fmt: skip


def run_compiled(name: str, device_name: str, iterations: int) -> dict:
    """``name`` compiled at every stage through nnU-Net's ``run_training`` (one epoch per stage) and its final
    sliding-window validation: the graph budget's whole path (``pgps.nnunet.compiling``)."""
    import numpy as np
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    from pgps.nnunet.compiling import CompileCounters

    configuration, plans = configuration_of(name)
    device = torch.device(device_name)
    os.environ["PGPS_COMPILE_MIN_ITERATIONS"] = "0"
    try:
        trainer = get_trainer_from_args(str(DATASET_ID), configuration, 0, name, plans, device=device)
        trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = iterations, 1
        trainer.num_epochs = pgps_stages(trainer)
        before = CompileCounters.now()
        trainer.run_training()
        trained = time.perf_counter()
        trainer.perform_actual_validation(False)
        validated = time.perf_counter() - trained
    finally:
        os.environ.pop("PGPS_COMPILE_MIN_ITERATIONS")
    graphs = (CompileCounters.now() - before).compilations
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    rows = [{
        "stage": r["stage"], "patch_size": r["patch_size"], "batch_size": r["batch_size"],
        "iteration_s": r["epoch_time_s"] / r["iterations"], "data_wait_share": float("nan"), "peak_gib": peak,
        "compile_s": r["compile_time_s"], "loss": r["train_loss"],
    } for r in trainer.telemetry_rows]  # fmt: skip
    return {
        "trainer": name, "mode": trainer.schedule.mode, "rows": rows, "complete": True, "graphs": graphs,
        "graph_budget": trainer._graph_budget, "final_validation_s": validated,
        "losses_finite": all(np.isfinite(r["loss"]) for r in rows),
    }  # fmt: skip


def pgps_stages(trainer) -> int:
    import pgps

    return pgps.make_schedule(
        trainer.curriculum_mode, trainer.configuration_manager.patch_size, trainer.curriculum_steps(),
        trainer.configuration_manager.batch_size, single_voxel_bottleneck=trainer.single_voxel_bottleneck,
    ).num_stages  # fmt: skip


def run_ddp(name: str, device_name: str, iterations: int, warmup: int, deadline: float) -> dict:
    """:func:`run_trainer` as the one rank of a DDP group (NCCL on CUDA; gloo on the CPU, where the trainer nnU-Net
    puts on ``cuda:<rank>`` is moved to the CPU and its DDP wrapper takes no ``device_ids``): nnU-Net's multi-GPU
    path, the PGPS loader's rank rows and the gathers of every epoch."""
    import socket

    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    wrapper, prepare = nnunet_trainer.DDP, None
    if device_name == "cuda":
        torch.cuda.set_device(0)
    else:
        nnunet_trainer.DDP = lambda module, device_ids=None: DistributedDataParallel(module)

        def prepare(trainer) -> None:
            trainer.device, trainer.grad_scaler = torch.device("cpu"), None

    dist.init_process_group("nccl" if device_name == "cuda" else "gloo", rank=0, world_size=1)
    try:
        result = run_trainer(name, device_name, iterations, warmup, deadline=deadline, prepare=prepare)
        if not result["rows"] or not all(r["ddp"] for r in result["rows"]):
            raise RuntimeError("the trainer did not train as a DDP rank")
        return result
    finally:
        dist.destroy_process_group()
        nnunet_trainer.DDP = wrapper


# -- report --------------------------------------------------------------------------------------------------
KINDS = {"train": "", "compiled": " (compiled, final validation)", "ddp": " (DDP, 1 rank)"}


def label(trainer: str, kind: str = "train") -> str:
    return trainer + KINDS[kind]


def table(results: list[dict]) -> str:
    header = ("trainer", "stage", "patch", "batch", "iteration ms", "data wait", "peak GiB", "compile s")
    lines = []
    for result in results:
        short = label(result["trainer"], result.get("kind", "train")).removeprefix("nnUNetTrainer_PGPS_")
        for row in result["rows"]:
            lines.append((
                short, str(row["stage"]), row["patch_size"], str(row["batch_size"]), f"{1000 * row['iteration_s']:.1f}",
                f"{100 * row['data_wait_share']:.0f}%",
                "n/a" if row["peak_gib"] != row["peak_gib"] else f"{row['peak_gib']:.2f}", f"{row['compile_s']:.1f}",
            ))  # fmt: skip
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in [header, *lines])


def relative_to_cps(results: list[dict]) -> list[str]:
    """Runtime of each trainer relative to CPS at the article's schedule length, beside its planned FLOPs."""
    by_mode = {r["mode"]: r for r in results if r.get("kind", "train") == "train" and r["complete"]
               and "_UNETR_" not in r["trainer"] and "_SwinUNETR_" not in r["trainer"]
               and "MemoryProbe" not in r["trainer"]}  # fmt: skip
    cps = by_mode.get("cps")
    if cps is None:
        return []
    lines = []
    for mode in ("efficiency", "performance"):
        if mode in by_mode:
            r = by_mode[mode]
            ratio = r["article_seconds"] / cps["article_seconds"]
            lines.append(
                f"PGPS-{mode.capitalize()} runtime relative to CPS (measured per stage, paced over "
                f"{ARTICLE_EPOCHS} x {ARTICLE_ITERATIONS} iterations): {ratio:.3f}  "
                f"(planned FLOPs: {r['relative_voxels']:.3f})"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny dataset and plan (the test suite's CPU mode)")
    parser.add_argument("--iterations", type=int, default=None, help="measured iterations per stage (3; --tiny 1)")
    parser.add_argument("--warmup", type=int, default=None, help="iterations per stage left out of the timing (1; 0)")
    parser.add_argument("--workers", type=int, default=None, help="augmentation workers (default: 8 on CUDA, 0)")
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), help="trainer names")
    parser.add_argument("--workdir", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement to this file")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="seconds the check may take (default: %(default)s); runs past it are skipped")  # fmt: skip
    args = parser.parse_args(argv)
    args.iterations = args.iterations if args.iterations is not None else (1 if args.tiny else 3)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.tiny else 1)
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be at least 1 and --warmup at least 0")
    if not args.budget_s >= 0:
        parser.error("--budget-s must be a non-negative number of seconds")
    started = args.started = time.perf_counter()
    deadline = started + args.budget_s
    workers = args.workers
    if workers is None:
        workers = min(8, max(0, (os.cpu_count() or 2) - 2)) if args.device == "cuda" else 0
    with tempfile.TemporaryDirectory(prefix="pgps-gpu-check-") as tmp:
        work = args.workdir or Path(tmp)
        standins = prepare_environment(work, args.device, workers)
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            print("gpu_check: no CUDA device (use --device cpu --tiny for the CPU mode)", file=sys.stderr)
            return 2
        if args.device == "cpu":
            os.environ.setdefault("PGPS_COMPILE_BACKEND", "eager")  # the compile row on the CPU: dynamo without codegen
        else:  # as nnUNetv2_train sets them
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
        device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
        note = f"; stand-in modules (imported, never called here): {', '.join(standins)}" if standins else ""
        print(f"gpu_check on {device}, torch {torch.__version__}, {workers} augmentation workers{note}")
        plan = plan_for(args.tiny)
        synthesise(plan)
        plan_and_preprocess(plan, processes=int(os.environ["nnUNet_def_n_proc"]))
        print(f"dataset and plans ready after {time.perf_counter() - started:.0f} s", flush=True)
        results, failed, skipped = run_all(args, deadline)
        print(table(results))
        for line in relative_to_cps(results):
            print(line)
        for r in results:
            if r.get("kind") == "compiled":
                print(f"{label(r['trainer'], 'compiled')}: {r['graphs']} graphs compiled (budget "
                      f"{r['graph_budget']}), final validation {r['final_validation_s']:.1f} s")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    if skipped:
        print(f"gpu_check: the budget of {args.budget_s:.0f} s left out: {'; '.join(skipped)}")
    print(f"gpu_check: {len(results)} runs, {len(failed)} failed, {time.perf_counter() - started:.0f} s in all")
    if failed:
        print(f"gpu_check: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def planned_runs(trainers: list[str]) -> list[tuple[str, str]]:
    """(kind, trainer) in priority order: the journal's three strategies, the compiled and the DDP run, the rest."""
    first = [("train", t) for t in trainers if t in FIRST]
    rest = [("train", t) for t in trainers if t not in FIRST]
    return [*first, ("compiled", COMPILED), ("ddp", DDP), *rest]


def run_all(args, deadline: float) -> tuple[list[dict], list[str], list[str]]:
    """Every planned run that the budget allows: one starts only if the time left covers the longest so far."""
    results, failed, skipped, longest = [], [], [], 0.0
    for kind, name in planned_runs(args.trainers):
        left = deadline - time.perf_counter()
        if left <= 0 or left < longest:
            skipped.append(f"{label(name, kind)} (not started, {max(left, 0):.0f} s left)")
            continue
        began = time.perf_counter()
        try:
            if kind == "compiled":
                result = run_compiled(name, args.device, args.iterations)
            elif kind == "ddp":
                result = run_ddp(name, args.device, args.iterations, args.warmup, deadline)
            else:
                result = run_trainer(name, args.device, args.iterations, args.warmup, deadline=deadline)
        except Exception:
            failed.append(label(name, kind))
            print(f"FAILED: {label(name, kind)}\n{traceback.format_exc()}", file=sys.stderr)
            continue
        longest = max(longest, time.perf_counter() - began)
        result["kind"] = kind
        results.append(result)
        if not result["losses_finite"]:
            failed.append(label(name, kind))
        if not result["complete"]:
            skipped.append(f"{label(name, kind)} (stopped after {len(result['rows'])} stages)")
        print(f"{label(name, kind)} done after {time.perf_counter() - args.started:.0f} s", flush=True)
    return results, failed, skipped


if __name__ == "__main__":
    sys.exit(main())
