"""The machine a benchmark ran on, for the numbers it prints (imported by the benchmark scripts)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def passive_openmp() -> None:
    """Go on with OpenMP's passive wait (``OMP_WAIT_POLICY=passive``) unless the variable is set: libgomp reads it
    once, when torch loads it, so the script starts again with it set (``os.execv``, same interpreter and
    arguments). With libgomp's default spin-wait a 2-thread step is several times slower whenever anything else
    shares the cores (``benchmarks/omp_wait.py``); the benchmarks time what ``make`` and the workflow run."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "passive"
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
