"""Time to build the DAG of the article's full experiment grid (target: at most 15 s).

Runs ``snakemake -n`` on workflow/configs/article.yaml (or --configfile) in a fresh working
directory, several times alternating with the embedded default (config.yaml) as a reference, and
prints the median wall times, their ratio, and the number of jobs::

    .venv/bin/python benchmarks/dag_time.py [--repeats 3] [--configfile workflow/configs/article.yaml]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 15.0


def dry_run(configfile: Path) -> tuple[float, dict[str, int]]:
    """Seconds for one `snakemake -n` (interpreter start and parsing included) and its job counts."""
    with tempfile.TemporaryDirectory(prefix="pgps-dag-") as work:
        command = [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            ROOT / "Snakefile",
            "-d",
            work,
            "-n",
            "--configfile",
            configfile,
        ]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"snakemake -n failed for {configfile}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    table = proc.stdout[proc.stdout.index("Job stats:") :].split("\n\n")[0]
    return seconds, {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", type=Path, default=ROOT / "workflow" / "configs" / "article.yaml")
    parser.add_argument("--reference", type=Path, default=ROOT / "config.yaml", help="a small config timed alongside")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    grid, reference, jobs = [], [], {}
    for _ in range(args.repeats):  # alternate, so that machine noise hits both alike
        seconds, jobs = dry_run(args.configfile.resolve())
        grid.append(seconds)
        reference.append(dry_run(args.reference.resolve())[0])
    g, r = statistics.median(grid), statistics.median(reference)
    print(f"article grid ({args.configfile.name}): {jobs.get('total', 0)} jobs, {jobs.get('train', 0)} training runs")
    verdict = "met" if g <= TARGET_S else "MISSED"
    print(f"DAG build, median of {args.repeats}: {g:.2f} s  (target <= {TARGET_S:.0f} s: {verdict})")
    print(f"reference ({args.reference.name}): {r:.2f} s; grid / reference = {g / r:.2f}")
    return 0 if g <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
