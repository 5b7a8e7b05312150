"""The demo's training iteration (data loading and step), today's against before #29's changes, side by side.

Trains the demo's configuration (``pgps synth`` preset ``lesions``, planned by nnU-Net, ``3d_light``:
``channels_last_3d``) with ``nnUNetTrainer_PGPS_CPS`` (each iteration a 64^3 x 2 step, the demo's
``P_max``) in fresh processes, one per variant and repeat, interleaved round by round:

- ``before``: the trainer as before #29: instance norms, each batch loaded between two steps;
- ``group norms``: instance norms computed as group norms (:func:`pgps.nnunet.norm.use_group_norm`);
- ``group norms + prefetch``: also the next batch made while the step computes (today's default);
- ``+ bf16``: prefetch and ``PGPS_CPU_AUTOCAST=bf16`` (opt-in; only where the CPU has bfloat16 instructions;
  the trainer keeps the instance norms under it, where torch's CPU group norm is the slower one).

Every variant loads in the training process (``nnUNet_n_proc_DA=0``, as the demo) with 2 torch threads and
``OMP_WAIT_POLICY=passive``. Reported per variant: the median seconds per training iteration (an epoch's
training time from the trainer's telemetry, validation excluded, over its iterations; the first epoch, which
builds the loader and warms up, left out), and its ratio to ``before``.

    .venv/bin/python benchmarks/demo_step.py                       # ~4 min on 2 idle cores
    .venv/bin/python benchmarks/demo_step.py --repeats 3 --epochs 6 --json step.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from efficiency_runtime import environment, prepare  # benchmarks/efficiency_runtime.py, next to this script
from machine import cpu_model, passive_openmp  # benchmarks/machine.py, next to this script

TRAINER = "nnUNetTrainer_PGPS_CPS"
VARIANTS = {  # name: (group norms, prefetch, bf16)
    "before": (False, False, False),
    "group norms": (True, False, False),
    "group norms + prefetch": (True, True, False),
    "+ bf16": (True, True, True),
}
CHILD = """
import json, sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
trainer = get_trainer_from_args(sys.argv[1], sys.argv[2], 0, sys.argv[3], device=torch.device("cpu"))
trainer.group_norm_on_channels_last, trainer.prefetch_batches = sys.argv[4] == "1", sys.argv[5] == "1"
trainer.run_training()
print(json.dumps([row["epoch_time_s"] for row in trainer.telemetry_rows]))
"""


def run_variant(work: Path, dataset: str, configuration: str, name: str, repeat: int, args) -> list[float]:
    """Seconds per iteration of each epoch after the first, in one fresh training."""
    group_norms, prefetch, bf16 = VARIANTS[name]
    extra = {"PGPS_CPU_AUTOCAST": "bf16"} if bf16 else {}
    env = environment(work, nnUNet_results=str(work / f"results_{repeat}_{name.replace(' ', '_')}"),
                      PGPS_EPOCHS=str(args.epochs), PGPS_ITERATIONS_PER_EPOCH=str(args.iterations),
                      PGPS_VAL_ITERATIONS="1", PGPS_SEED="0", nnUNet_n_proc_DA="0", OMP_NUM_THREADS="2",
                      PGPS_PROGRESS_EVERY="0", PGPS_CARBON="off", **extra)  # fmt: skip
    command = [sys.executable, "-c", CHILD, dataset, configuration, TRAINER, str(int(group_norms)), str(int(prefetch))]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"demo_step.py: the {name!r} training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    epochs = json.loads(proc.stdout.strip().splitlines()[-1])
    return [seconds / args.iterations for seconds in epochs[1:]]


def main() -> int:
    passive_openmp()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per training, the first left out (>= 2)")
    parser.add_argument("--iterations", type=int, default=10, help="iterations per epoch")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the variants")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                        help="default: all, + bf16 only where the CPU has bfloat16 instructions")  # fmt: skip
    parser.add_argument("--work", help="keep the data and runs here (default: a temporary folder)")
    parser.add_argument("--json", help="also write every timing here")
    args = parser.parse_args()
    if args.epochs < 2 or args.iterations < 1 or args.repeats < 1:
        parser.error("--epochs must be at least 2 (the first is left out); --iterations and --repeats at least 1")
    variants = args.variants or [v for v in VARIANTS if not VARIANTS[v][2] or _cpu_has_bf16()]
    if "before" not in variants:
        variants.insert(0, "before")
    work = Path(args.work or tempfile.mkdtemp(prefix="pgps-demo-step-"))
    work.mkdir(parents=True, exist_ok=True)
    dataset, configuration = prepare(work, "lesions", "light")
    print(f"{TRAINER} on {dataset} ({configuration}); {args.epochs} epochs x {args.iterations} iterations per run, "
          f"{args.repeats} rounds; load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    started = time.perf_counter()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]  # no variant always first
        for name in order:
            seconds[name] += run_variant(work, dataset, configuration, name, repeat, args)
            print(
                f"  round {repeat + 1}: {name:<24} {statistics.median(seconds[name]):.3f} s per iteration", flush=True
            )
    before = statistics.median(seconds["before"])
    print(f"\nseconds per training iteration (median over {args.repeats} x {args.epochs - 1} epochs), "
          f"benchmark {time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'variant':<26}{'s/iteration':>12}{'/ before':>10}")
    for name in variants:
        median = statistics.median(seconds[name])
        print(f"{name:<26}{median:>12.3f}{median / before:>10.2f}")
    if args.json:
        out = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count()}, "trainer": TRAINER, "epochs": args.epochs,
               "iterations": args.iterations, "seconds_per_iteration": seconds}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _cpu_has_bf16() -> bool:
    from pgps.nnunet.cpu_autocast import cpu_has_bf16

    return cpu_has_bf16()


if __name__ == "__main__":
    sys.exit(main())
