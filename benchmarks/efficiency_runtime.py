"""PGPS-Efficiency's wall time relative to CPS on the same data and machine, next to its relative FLOPs.

Writes a synthetic dataset (``pgps synth``, default preset ``lesions``), plans and preprocesses it
with nnU-Net (3d_fullres), adds the CPU configuration ``3d_light`` (``pgps light-plans``; the
planned network with ``--network planned``), then trains ``nnUNetTrainer_PGPS_CPS`` and
``nnUNetTrainer_PGPS_Efficiency`` on fold 0 for a short run (every stage gets the same epochs),
alternating the two ``--repeats`` times. Only the training loop runs (``run_training``, no final
sliding-window validation), in-process data loading, ``PGPS_SEED=0``. Reported from the trainers'
own ``pgps_summary.json``: training time (sum of epoch times, validation excluded; SPEC section 2),
and iterated voxels (the FLOP proxy); the runtime ratio is the median Efficiency time over the
median CPS time. Per stage of PGPS-Efficiency it prints the median time per iteration and the cost per voxel
relative to its last stage (where a fixed per-iteration cost shows: the first stages' few voxels).

    .venv/bin/python benchmarks/efficiency_runtime.py                    # ~5 min on 2 cores
    .venv/bin/python benchmarks/efficiency_runtime.py --epochs 20 --iterations 10 --repeats 3 --json eff.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model, passive_openmp  # benchmarks/machine.py, next to this script

import pgps

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATASET_ID = 990
TRAINERS = {"cps": "nnUNetTrainer_PGPS_CPS", "efficiency": "nnUNetTrainer_PGPS_Efficiency"}

RUN_TRAINING = """
import sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
device = torch.device(sys.argv[3])
trainer = get_trainer_from_args(sys.argv[1], sys.argv[2], 0, sys.argv[4], device=device)
trainer.run_training()
"""


def environment(work: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(work / "raw"),
        nnUNet_preprocessed=str(work / "preprocessed"),
        nnUNet_results=str(work / "results"),
        nnUNet_extTrainer=str(ROOT / "pgps" / "nnunet" / "ext"),
        nnUNet_def_n_proc=str(os.cpu_count() or 1),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def prepare(work: Path, preset: str, network: str) -> tuple[str, str]:
    """Raw dataset -> nnU-Net plans and preprocessed data (-> light configuration); ``(dataset, configuration)``."""
    env = environment(work)
    plans = next((work / "preprocessed").glob(f"Dataset{DATASET_ID}_*/nnUNetPlans.json"), None)
    if plans is None:
        run([sys.executable, "-m", "pgps", "synth", "--preset", preset, "--out", str(work / "raw"),
             "--dataset-id", str(DATASET_ID), "--overwrite"], env)  # fmt: skip
        processes = str(os.cpu_count() or 1)
        run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres",
             "-np", processes, "-npfp", processes], env)  # fmt: skip
        plans = next((work / "preprocessed").glob(f"Dataset{DATASET_ID}_*/nnUNetPlans.json"))
    configuration = "3d_fullres"
    if network == "light":
        configuration = "3d_light"
        if configuration not in json.loads(plans.read_text())["configurations"]:
            run([sys.executable, "-m", "pgps", "light-plans", "--plans", str(plans), "--name", configuration], env)
    return plans.parent.name, configuration


def run(command: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def train(work: Path, dataset: str, configuration: str, trainer: str, repeat: int, args) -> dict:
    """One short run in a fresh results folder; the trainer's summary plus the process wall time."""
    results = work / f"results_{trainer}_{repeat}"
    env = environment(work, nnUNet_results=str(results), PGPS_EPOCHS=str(args.epochs),
                      PGPS_ITERATIONS_PER_EPOCH=str(args.iterations), PGPS_VAL_ITERATIONS="1",
                      PGPS_SEED="0", nnUNet_n_proc_DA=str(args.workers))  # fmt: skip
    start = time.perf_counter()
    run([sys.executable, "-c", RUN_TRAINING, dataset, configuration, args.device, trainer], env)
    wall = time.perf_counter() - start
    fold = results / dataset / f"{trainer}__nnUNetPlans__{configuration}" / "fold_0"
    summary = json.loads((fold / "pgps_summary.json").read_text())
    with open(fold / "pgps_telemetry.csv", newline="") as f:
        epochs = [{k: row[k] for k in ("stage", "patch_size", "batch_size", "iterations", "epoch_time_s")}
                  for row in csv.DictReader(f)]  # fmt: skip
    return {**summary, "process_wall_s": wall, "epochs": epochs}


def per_stage(runs: list[dict]) -> list[dict]:
    """Median seconds per iteration of each stage over every run's epochs of it, and the cost per voxel relative
    to the last stage (``P_max``): 1 where time follows the voxels, above 1 where a fixed per-iteration cost shows."""
    times: dict[int, list[float]] = {}
    shape: dict[int, tuple[str, int]] = {}
    for run in runs:
        for epoch in run["epochs"]:
            index = int(epoch["stage"])
            times.setdefault(index, []).append(float(epoch["epoch_time_s"]) / int(epoch["iterations"]))
            shape[index] = (epoch["patch_size"], int(epoch["batch_size"]))
    rows = []
    for index in sorted(times):
        patch, batch = shape[index]
        voxels = batch * math.prod(int(v) for v in patch.split("x"))
        rows.append({"stage": index, "patch_size": patch, "batch_size": batch, "voxels": voxels,
                     "seconds_per_iteration": statistics.median(times[index])})  # fmt: skip
    last = rows[-1]
    for row in rows:
        row["cost_per_voxel"] = (row["seconds_per_iteration"] / row["voxels"]) / (
            last["seconds_per_iteration"] / last["voxels"]
        )
    return rows


def main() -> int:
    passive_openmp()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lesions", help="pgps synth preset")
    parser.add_argument("--network", choices=["light", "planned"], default="light")
    parser.add_argument("--epochs", type=int, default=10, help="at least the number of stages (10 here)")
    parser.add_argument("--iterations", type=int, default=20, help="iterations per epoch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="nnUNet_n_proc_DA (0: load in the training process)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--work", help="keep the data and runs here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="pgps-efficiency-runtime-"))
    work.mkdir(parents=True, exist_ok=True)
    dataset, configuration = prepare(work, args.preset, args.network)
    print(f"data: {work} ({dataset}, {configuration}); {args.epochs} epochs x {args.iterations} iterations, "
          f"device {args.device}", flush=True)  # fmt: skip
    runs: dict[str, list[dict]] = {name: [] for name in TRAINERS}
    for repeat in range(args.repeats):
        for name, trainer in TRAINERS.items():  # alternate, so that drifting load hits both alike
            runs[name].append(train(work, dataset, configuration, trainer, repeat, args))
            r = runs[name][-1]
            print(f"  {name:<10} repeat {repeat}: training {r['train_time_s']:.1f} s "
                  f"(process {r['process_wall_s']:.1f} s)", flush=True)  # fmt: skip
    time_cps = statistics.median(r["train_time_s"] for r in runs["cps"])
    time_eff = statistics.median(r["train_time_s"] for r in runs["efficiency"])
    voxels_cps = runs["cps"][0]["iterated_voxels"]
    voxels_eff = runs["efficiency"][0]["iterated_voxels"]
    schedule = pgps.Schedule.from_dict(runs["efficiency"][0]["schedule"])
    runtime, flops = time_eff / time_cps, voxels_eff / voxels_cps
    print(f"\nschedule ({schedule.num_stages} stages):\n{schedule.table()}")
    print(f"\nPGPS-Efficiency vs CPS, {args.epochs} epochs x {args.iterations} iterations, {configuration}:")
    print(f"  training time  {time_eff:.1f} s vs {time_cps:.1f} s -> relative runtime {100 * runtime:.1f}%")
    print(f"  iterated voxels {voxels_eff:,} vs {voxels_cps:,} -> relative FLOPs {100 * flops:.1f}%")
    print(f"  runtime - FLOPs = {100 * (runtime - flops):+.1f} points; runtime / FLOPs = {runtime / flops:.2f}")
    mean_stage = runs["efficiency"][0].get("p_max_mean_epoch_time_s")
    if mean_stage:  # the article's virtual relative runtime (its P_max epochs stand for CPS epochs)
        virtual = time_eff / (mean_stage * args.epochs)
        print(f"  virtual relative runtime (article, Section 3.2.2): {100 * virtual:.1f}%")
    stages = per_stage(runs["efficiency"])
    print("\nPGPS-Efficiency per stage (median over its epochs; cost per voxel relative to the last stage):")
    for row in stages:
        ms, cost = 1000 * row["seconds_per_iteration"], row["cost_per_voxel"]
        print(f"  stage {row['stage']}: {row['patch_size']:>9} x {row['batch_size']}  {ms:7.1f} ms per iteration  "
              f"{cost:5.2f}x per voxel")  # fmt: skip
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "device": args.device}
    print(f"machine: {machine}")
    if args.json:
        out = {"machine": machine, "configuration": configuration, "epochs": args.epochs,
               "iterations": args.iterations, "relative_runtime": runtime, "relative_flops": flops,
               "efficiency_stages": stages, "runs": runs}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
