"""Wall and CPU time of the synthetic study (`snakemake --cores 2 study`), with the machine's load around it.

With ``--run`` it runs the study's workflow in the repository (its outputs are the committed
``paper_figures/study/``), timing it and reading the load averages before and after; the CPU time is
that of every process the workflow started (user + system, from ``getrusage(RUSAGE_CHILDREN)``). Then,
or without ``--run``, it sums the ``benchmark:`` files Snakemake wrote per study job (wall ``s`` and
``cpu_time``) by rule::

    .venv/bin/python benchmarks/study_time.py --run [--configfile config.yaml] [--cores 2]
    .venv/bin/python benchmarks/study_time.py            # the last run's benchmark files only

On a machine shared with other jobs the wall time grows with their load while the CPU time barely
does; CPU time / cores is what the wall time would be on that many idle cores with the jobs spread
perfectly (a lower bound).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def job_times(folder: Path) -> pd.DataFrame:
    """One row per study rule: jobs, summed wall seconds and CPU seconds of its benchmark files."""
    rows = []
    for tsv in sorted(folder.glob("*.tsv")):
        b = pd.read_csv(tsv, sep="\t").iloc[0]
        rows.append({"rule": tsv.stem.split("_")[0], "s": float(b["s"]), "cpu_time": float(b["cpu_time"])})
    if not rows:
        raise SystemExit(f"no benchmark files in {folder}: run the study first (--run)")
    df = pd.DataFrame(rows)
    table = df.groupby("rule").agg(jobs=("s", "size"), wall_s=("s", "sum"), cpu_s=("cpu_time", "sum"))
    table.loc["all jobs"] = [len(df), df["s"].sum(), df["cpu_time"].sum()]
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the study now (in the repository) and time it")
    parser.add_argument("--configfile", default=str(ROOT / "config.yaml"))
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    if args.run:
        command = [Path(sys.executable).parent / "snakemake", "study", "-s", ROOT / "Snakefile", "-d", ROOT]
        command += ["--cores", str(args.cores), "--configfile", Path(args.configfile).resolve()]
        load_before, start = os.getloadavg(), time.perf_counter()
        subprocess.run(command, check=True)
        wall, load_after = time.perf_counter() - start, os.getloadavg()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime
        print(f"command: {' '.join(map(str, command))}")
        print(f"load averages (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}")
        print(f"load averages (1, 5, 15 min) after:  {', '.join(f'{v:.2f}' for v in load_after)}")
        print(f"wall time: {wall:.0f} s ({wall / 60:.1f} min)")
        print(f"CPU time of the workflow's processes: {cpu:.0f} s ({cpu / 60:.1f} min); / {args.cores} cores = "
              f"{cpu / args.cores / 60:.1f} min")  # fmt: skip
    table = job_times(ROOT / "results" / "benchmarks" / "study")
    print(table.to_string(float_format=lambda v: f"{v:.0f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
