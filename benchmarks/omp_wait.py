"""Does ``OMP_WAIT_POLICY=passive`` keep a 2-thread CPU training step fast when another process shares the cores?

torch's CPU kernels run in libgomp (GNU OpenMP) threads. By default libgomp spin-waits between
parallel regions, so a thread that finished its share burns its core while the others catch up;
with one more busy process on the cores, a spinning thread takes the core a working one needs, and
a 2-thread step can run several times slower. With ``OMP_WAIT_POLICY=passive`` waiting threads
sleep instead. libgomp reads the variable once, when it loads (at ``import torch``), so every
configuration is measured in its own child process started with the environment already set.

One run measures, interleaved round after round, the training step of ``benchmarks/cpu_network.py``
(forward, nnU-Net's deep-supervised Dice+CE loss, backward, SGD step of nnU-Net's ``PlainConvUNet``)
of the demo's light network (:data:`pgps.nnunet.light.DEFAULT_FEATURES`, ``DEFAULT_CONVS`` and
``DEFAULT_MEMORY_FORMAT``; its instance norms as group norms, as a PGPS trainer trains it) at one
stage of the PGPS-Performance schedule for ``P_max`` 64^3,
``b_base`` 2, step 16 (default: its last stage, 64^3 x 2, the CPS step), in four configurations:
libgomp's default wait policy or ``passive``, with no competitor or with one competing process.

- Each child: ``OMP_NUM_THREADS`` and ``torch.set_num_threads`` = ``--threads``, ``OMP_WAIT_POLICY``
  removed ("default") or ``passive``, ``GOMP_SPINCOUNT`` removed (so "default" is libgomp's
  default); ``--warmup`` untimed steps, then ``--steps`` timed ones, and the process CPU time of
  the timed steps (CPU/wall near the thread count while waiting: the threads spin).
- The competitor (``--competitor``): ``numpy``, one process squaring a 256x256
  float64 matrix in a loop on one BLAS thread, as a data-augmentation worker computes; or
  ``spin``, a pure-Python ``while True: pass``; or ``torch`` (default), another torch process convolving in
  a loop with the child's threads and wait policy (two trainings, or two test workers, on the cores).
  It starts (and reports ready) before the child
  and is killed after it. The parent pins itself, and so its children, to its first
  ``--threads`` CPUs, so the competitor shares the step's cores on a larger machine too.

The table gives the median seconds per step over all rounds (min in parentheses), each
configuration relative to ``passive`` with no competitor, the children's CPU/wall ratio during the
timed steps, and default / passive with the competitor. Run it on otherwise idle cores (it prints
the load average): anything else running is a further competitor in every row.

    .venv/bin/python benchmarks/omp_wait.py                        # ~2 min on 2 idle cores
    .venv/bin/python benchmarks/omp_wait.py --stage 0 --repeats 5 --competitor spin --json omp.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pgps
from pgps.nnunet.light import DEFAULT_CONVS, DEFAULT_FEATURES, DEFAULT_MEMORY_FORMAT

POLICIES = ("default", "passive")
COMPETITORS = {
    "numpy": (
        "import numpy as np\n"
        "a = np.random.default_rng(0).random((256, 256))\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    a @ a\n"
    ),
    "spin": "print('ready', flush=True)\nwhile True:\n    pass\n",
    "torch": (
        "import torch\n"
        "x, w = torch.randn(2, 16, 32, 32, 32), torch.randn(16, 16, 3, 3, 3)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    torch.nn.functional.conv3d(x, w, padding=1)\n"
    ),
}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def schedule_stages() -> list:
    """The PGPS-Performance stages of the demo (``P_max`` 64^3, step 16, ``b_base`` 2); the last is CPS."""
    return list(pgps.make_schedule("performance", (64, 64, 64), (16, 16, 16), 2).stages)


def openmp_libraries() -> list[str]:
    """File names of the OpenMP runtimes loaded in this process (Linux; empty elsewhere)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    names = {Path(line.split()[-1]).name for line in maps.splitlines() if "omp" in line.rsplit("/", 1)[-1]}
    return sorted(names)


def child(args: argparse.Namespace) -> int:
    """Time the step in this process; print one JSON line (seconds per step, CPU seconds, environment)."""
    started = time.perf_counter()
    import torch
    from cpu_network import Step, build_unet  # benchmarks/cpu_network.py, next to this script

    torch.set_num_threads(args.threads)
    stage = schedule_stages()[args.stage]
    torch.manual_seed(0)
    net = build_unet(list(DEFAULT_FEATURES), DEFAULT_CONVS, args.num_classes)
    variant = DEFAULT_MEMORY_FORMAT + ("_group_norm" if DEFAULT_MEMORY_FORMAT == "channels_last_3d" else "")
    step = Step(net, variant, stage.patch_size, stage.batch_size, args.num_classes)
    for _ in range(args.warmup):
        step()
    ready = time.perf_counter()
    cpu = time.process_time()
    seconds = [step() for _ in range(args.steps)]
    result = {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "wall_seconds": time.perf_counter() - ready,
        "setup_seconds": ready - started,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "openmp": openmp_libraries(),
    }
    print(json.dumps(result), flush=True)
    return 0


def child_env(policy: str, threads: int) -> dict[str, str]:
    """The parent's environment with ``policy`` set for libgomp and ``threads`` OpenMP threads."""
    env = dict(os.environ)
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        env.pop(key, None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def start_competitor(kind: str, env: dict[str, str]) -> subprocess.Popen:
    """A busy process, returned once it runs its loop."""
    proc = subprocess.Popen([sys.executable, "-c", COMPETITORS[kind]], env=env, stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        proc.wait()
        raise SystemExit(f"omp_wait.py: the {kind} competitor exited before it started (status {proc.returncode})")
    return proc


def run_child(policy: str, competitor: str | None, args: argparse.Namespace) -> dict:
    """One configuration in a fresh interpreter, the competitor (if any) running around it."""
    command = [sys.executable, os.path.abspath(__file__), "--child"]
    for key in ("stage", "threads", "steps", "warmup", "num_classes"):
        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = child_env(policy, args.threads)
    busy = None
    if competitor:  # torch: another OpenMP process with the same policy and threads; the others one-thread
        busy = start_competitor(competitor, env if competitor == "torch" else {**os.environ, **ONE_THREAD})
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.child_timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(
            f"omp_wait.py: the {policy} child{' with a competitor' if busy else ''} took over "
            f"{args.child_timeout:.0f} s (--child-timeout); try fewer --steps or a longer --child-timeout"
        ) from None
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"omp_wait.py: the {policy} child failed (exit status {done.returncode}), output above")
    result = json.loads(lines[-1])
    if result["OMP_WAIT_POLICY"] != (None if policy == "default" else policy):
        raise SystemExit(f"omp_wait.py: the {policy} child saw OMP_WAIT_POLICY={result['OMP_WAIT_POLICY']!r}")
    return result


def config_name(policy: str, competitor: str | None) -> str:
    """A configuration's row label."""
    return f"{'1 ' + competitor + ' competitor' if competitor else 'no competitor'}, {policy}"


def torch_version() -> str:
    """torch's installed version without importing it (the parent loads no OpenMP runtime)."""
    try:
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--stage", type=int, default=None,
        help="PGPS-Performance stage index (0..9; default: the last, 9 = 64^3 x 2 = CPS)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=2, help="torch and OpenMP threads (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="rounds over the 4 configurations (default: %(default)s)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per child (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first, per child (default: %(default)s)")
    p.add_argument(
        "--competitor", choices=list(COMPETITORS), default="torch",
        help="the competing busy process (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--num-classes", type=int, default=5, help="output channels (demo 'organs': 5)")
    p.add_argument(
        "--child-timeout", type=float, default=300.0,
        help="give up if one child takes longer, seconds (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="also write every timing to FILE")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    num_stages = len(schedule_stages())
    if args.stage is None:
        args.stage = num_stages - 1
    if not 0 <= args.stage < num_stages:
        p.error(f"--stage: index {args.stage} outside 0..{num_stages - 1}")
    for option in ("threads", "repeats", "steps", "num_classes"):
        if getattr(args, option) < 1:
            p.error(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if args.warmup < 0:
        p.error(f"--warmup must be at least 0, got {args.warmup}")
    if args.child_timeout <= 0:
        p.error(f"--child-timeout must be positive, got {args.child_timeout}")
    if args.child:
        return child(args)

    load = os.getloadavg()[0]
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(allowed) >= args.threads:
        os.sched_setaffinity(0, allowed[: args.threads])
        pinned = f"pinned to CPUs {','.join(map(str, allowed[: args.threads]))}"
    else:
        pinned = f"not pinned ({len(allowed) or 'unknown'} CPUs allowed for {args.threads} threads)"
    stage = schedule_stages()[args.stage]
    label = f"stage {args.stage}: {'x'.join(map(str, stage.patch_size))} x {stage.batch_size}"
    print(
        f"torch {torch_version()}, {args.threads} threads, {os.cpu_count()} CPUs ({pinned}), load average {load:.2f}\n"
        f"network {','.join(map(str, DEFAULT_FEATURES))}, {DEFAULT_CONVS} conv per stage, {DEFAULT_MEMORY_FORMAT}; "
        f"{label}; competitor: {args.competitor}; {args.repeats} round{'s' * (args.repeats != 1)} x {args.steps} steps "
        f"(+{args.warmup} warm-up) per configuration",
        flush=True,
    )
    if load >= 0.5:
        print(f"note: load average {load:.2f} at start: other processes run, the 'no competitor' rows are not idle")

    configs = [(policy, competitor) for competitor in (None, args.competitor) for policy in POLICIES]
    runs: dict[tuple[str, str | None], list[dict]] = {config: [] for config in configs}
    started = time.perf_counter()
    for r in range(args.repeats):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]  # rotate: no configuration always first
        cells = []
        for policy, competitor in order:
            result = run_child(policy, competitor, args)
            runs[policy, competitor].append(result)
            cells.append(f"{config_name(policy, competitor)} {statistics.median(result['seconds']):.3f}")
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(cells), flush=True)

    seconds = {config: [t for run in runs[config] for t in run["seconds"]] for config in configs}
    median = {config: statistics.median(t) for config, t in seconds.items()}
    reference = median["passive", None]
    print(
        f"\nseconds per training step, median over {args.repeats} x {args.steps} steps (min); "
        f"benchmark {time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.2f}"
    )
    print(f"{'configuration':<28} {'s/step (min)':>16} {'/ passive, none':>15} {'CPU/wall':>9}")
    for config in configs:
        cpu = sum(run["cpu_seconds"] for run in runs[config]) / sum(run["wall_seconds"] for run in runs[config])
        cell = f"{median[config]:.3f} ({min(seconds[config]):.3f})"
        print(f"{config_name(*config):<28} {cell:>16} {median[config] / reference:>15.2f} {cpu:>9.2f}")
    ratio = median["default", args.competitor] / median["passive", args.competitor]
    print(f"\nwith one {args.competitor} competitor, default / passive: {ratio:.2f}x")
    first = runs[configs[0]][0]
    print(f"OpenMP runtime in the children: {', '.join(first['openmp']) or 'none found'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"torch": first["torch"], "threads": args.threads, "cpus": os.cpu_count(), "load_average": load,
                 "stage": args.stage, "patch_size": list(stage.patch_size), "batch_size": stage.batch_size,
                 "competitor": args.competitor,
                 "runs": [{"policy": policy, "competitor": competitor, "children": runs[policy, competitor]}
                          for policy, competitor in configs]},
                f, indent=1,
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
