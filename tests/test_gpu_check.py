"""``benchmarks/gpu_check.py`` in its CPU mode, as a bare GPU machine would run it: only the packages of
``benchmarks/gpu_base_packages.txt`` and ``benchmarks/gpu_wheels.txt`` importable (every other installed package
hidden, and ``distutils``, which Python 3.12 lacks), SimpleITK supplied by the stand-in. So the script cannot rot,
and the README's wheel list is complete."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pgps
from pgps.nnunet.compiling import SPARE_GRAPHS

pytestmark = pytest.mark.nnunet
REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"

HIDE = """
import importlib.abc, importlib.machinery, importlib.metadata as md, re, runpy, sys
allowed, standins = set(sys.argv[1].split(",")), sys.argv[2]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
hidden = {m for m, dists in md.packages_distributions().items() if not any(norm(d) in allowed for d in dists)}
hidden -= set(sys.stdlib_module_names)  # backports some packages install (argparse) shadow nothing
hidden.add("distutils")  # as on Python >= 3.12 (setuptools' shim included): the check must not import it

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in hidden:
            return None
        spec = None
        if standins in sys.path:  # the check puts its stand-ins on the path when a package is missing
            spec = importlib.machinery.PathFinder.find_spec(name, [standins] if "." not in name else path)
        if spec is None or not (spec.origin or "").startswith(standins):
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU machine)", name=name)
        return spec

sys.meta_path.insert(0, Hide())
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("nnUNet_", "PGPS_"))}


def load_benchmark(name: str):
    """A script of ``benchmarks/`` as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def requirement_names(path: Path) -> set[str]:
    return set(load_benchmark("gpu_check_requirements").names(path))


def test_gpu_check_cpu_mode_on_a_bare_machine(tmp_path):
    allowed = requirement_names(BENCH / "gpu_base_packages.txt") | requirement_names(BENCH / "gpu_wheels.txt")
    allowed |= {"pgps", "pip", "setuptools"}  # pgps runs from the source tree there (PYTHONPATH)
    out = tmp_path / "gpu_check.json"
    args = [str(BENCH / "gpu_check.py"), "--device", "cpu", "--tiny", "--workdir", str(tmp_path / "work"),
            "--json", str(out), "--budget-s", "3600"]  # fmt: skip
    # one process per nnU-Net pool (its default here is the 2 CPUs: two workers that each import torch) and no
    # progress.png (matplotlib, 0.6 s of CPU an epoch), as the other nnU-Net tests run
    env = {**clean_environment(), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "nnUNet_def_n_proc": "1",
           "PGPS_PROGRESS_EVERY": "0"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", HIDE, ",".join(sorted(allowed)), str(BENCH / "standins"), *args],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "stand-in modules (imported, never called here): SimpleITK" in proc.stdout
    results = json.loads(out.read_text())
    suffix = {"train": "", "compiled": " (compiled)", "ddp": " (DDP)"}
    found = {r["trainer"] + suffix[r["kind"]]: r for r in results}
    assert set(found) == {*(f"nnUNetTrainer_PGPS_{t}" for t in ("CPS", "Efficiency", "Performance",
                          "Performance_MemoryProbe", "UNETR_Performance", "SwinUNETR_Performance")),
                          "nnUNetTrainer_PGPS_CPS (compiled)", "nnUNetTrainer_PGPS_Performance (DDP)"}  # fmt: skip
    # every stage of each U-Net curriculum ran, with the stage's measured patch and batch size
    for mode in ("cps", "efficiency", "performance"):
        schedule = pgps.make_schedule(mode, (16, 16, 16), (8, 8, 8), 2)
        rows = found[f"nnUNetTrainer_PGPS_{mode.capitalize() if mode != 'cps' else 'CPS'}"]["rows"]
        assert [(r["patch_size"], r["batch_size"]) for r in rows] == [
            ("x".join(map(str, s.patch_size)), s.batch_size) for s in schedule.stages
        ]
        assert all(r["iteration_s"] > 0 and 0 <= r["data_wait_share"] <= 1 for r in rows)
    # CPS compiled through nnU-Net's run_training and final validation: its one stage and the three validation
    # graphs (tests/test_compile.py), within the budget with its spare graphs
    compiled = found["nnUNetTrainer_PGPS_CPS (compiled)"]
    assert compiled["rows"][0]["compile_s"] > 0 and compiled["final_validation_s"] > 0
    assert compiled["graphs"] == 1 + 3 and compiled["graph_budget"] == compiled["graphs"] + SPARE_GRAPHS
    # PGPS-Performance as the one rank of a DDP group: every stage, trained by the DDP-wrapped network
    ddp = found["nnUNetTrainer_PGPS_Performance (DDP)"]["rows"]
    plain = found["nnUNetTrainer_PGPS_Performance"]["rows"]
    assert all(r["ddp"] for r in ddp) and not any(r["ddp"] for r in plain)
    assert [(r["patch_size"], r["batch_size"]) for r in ddp] == [(r["patch_size"], r["batch_size"]) for r in plain]
    assert "PGPS-Efficiency runtime relative to CPS" in proc.stdout and "PGPS-Performance runtime" in proc.stdout
    assert re.search(r"gpu_check: 8 runs, 0 failed", proc.stdout) and "left out" not in proc.stdout


def test_gpu_check_ends_within_its_budget_and_names_what_it_left_out():
    """A spent budget: every run is left out, by name, in priority order (the three strategies, the compiled and
    the DDP run, then the rest)."""
    import argparse
    import time

    check = load_benchmark("gpu_check")
    args = argparse.Namespace(trainers=list(check.TRAINERS), device="cpu", iterations=1, warmup=0,
                              started=time.perf_counter())  # fmt: skip
    results, failed, left_out = check.run_all(args, deadline=time.perf_counter())
    assert results == failed == []
    names = [entry.split(" (not started")[0].removeprefix("nnUNetTrainer_PGPS_") for entry in left_out]
    assert names == ["CPS", "Efficiency", "Performance", "CPS (compiled, final validation)",
                     "Performance (DDP, 1 rank)", "Performance_MemoryProbe", "UNETR_Performance",
                     "SwinUNETR_Performance"]  # fmt: skip


def test_gpu_check_refuses_a_missing_gpu():
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr


def test_the_py312_environment_takes_from_the_image_what_the_wheels_require():
    """``make gpu-check-py312`` installs beside the wheels the image's packages they require, with every wheel's
    version bounds, and nothing outside the image (SimpleITK stays a stand-in)."""
    module = load_benchmark("gpu_check_requirements")
    requires = {
        "nnunetv2": ["torch>=2.1.2", "SimpleITK>=2.2.1", "scikit-image>=0.19.3", "timm", "tqdm"],
        "dynamic-network-architectures": ["timm<1.0.23", "numpy"],
        "nibabel": ["packaging>=20", 'importlib-resources>=5.12; python_version < "3.9"', 'scipy; extra == "all"'],
    }
    base = {"torch", "scikit-image", "timm", "tqdm", "numpy", "packaging", "importlib-resources", "scipy"}
    found = module.missing_base_requirements(list(requires), base, {"torch", "numpy", "tqdm"}, requires.get)
    assert found == ["packaging>=20", "scikit-image>=0.19.3", "timm<1.0.23"]
    assert module.names(BENCH / "gpu_wheels.txt")[:2] == ["nnunetv2", "acvl-utils"]
