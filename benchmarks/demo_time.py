"""Wall time of the demo (`make demo`'s workflow) and each step's share, from Snakemake's benchmarks.

Runs the workflow on a configuration (default: config.yaml) in a fresh working directory, so
that every step runs, then reads the `benchmark:` files Snakemake wrote for the demo rules::

    .venv/bin/python benchmarks/demo_time.py [--configfile config.yaml] [--cores 2]

Creating .venv (the first `make demo` on a clean clone) is not included; measure it with `time make venv`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default=str(ROOT / "config.yaml"))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", help="work in this folder instead of a temporary one")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="pgps-demo-time-"))
    command = [Path(sys.executable).parent / "snakemake", "-s", ROOT / "Snakefile", "-d", work]
    command += ["--cores", str(args.cores), "--configfile", Path(args.configfile).resolve()]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    total = time.perf_counter() - start
    rows = []
    for tsv in sorted((work / "results" / "benchmarks" / "demo").glob("*.tsv")):
        seconds = float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
        rows.append({"step": tsv.stem, "seconds": seconds, "share [%]": 100 * seconds / total})
    table = pd.DataFrame(rows).sort_values("seconds", ascending=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    rest = total - table["seconds"].sum()
    print(f"other (Snakemake, schedule figures): {rest:.1f} s ({100 * rest / total:.1f} %)")
    print(f"demo wall time: {total:.1f} s ({total / 60:.1f} min) in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
