"""OpenMP's passive wait (#29): ``make`` exports ``OMP_WAIT_POLICY=passive`` unless the user set a policy, the
workflow's rules and the tests do the same for every process they start, and a benchmark run by hand restarts itself
with it before torch loads libgomp (``benchmarks/machine.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = """
import os, sys
sys.path.insert(0, {bench!r})
from machine import passive_openmp
print("before", os.environ.get("OMP_WAIT_POLICY"), flush=True)
passive_openmp()
import torch  # after the restart: libgomp reads the policy now
print("after", os.environ["OMP_WAIT_POLICY"], sys.argv[1:], torch.get_num_threads())
"""


@pytest.mark.parametrize("policy", [None, "active"])
def test_a_benchmark_restarts_itself_with_the_passive_wait_unless_a_policy_is_set(tmp_path, policy):
    script = tmp_path / "bench.py"
    script.write_text(SCRIPT.format(bench=str(REPO / "benchmarks")))
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    proc = subprocess.run([sys.executable, "-X", "utf8", str(script), "--repeats", "2"], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    lines = proc.stdout.splitlines()
    if policy is None:  # the first process printed its line, then was replaced by a second with the policy set
        assert lines[:2] == ["before None", "before passive"]
    else:
        assert lines[:1] == ["before active"] and lines[1].startswith("after active")
    assert lines[-1].startswith(f"after {policy or 'passive'} ['--repeats', '2']")
    assert len(lines) == (2 if policy else 3)


@pytest.mark.parametrize(("environment", "expected"), [({}, "passive"), ({"OMP_WAIT_POLICY": "active"}, "active")])
def test_make_exports_the_passive_wait_unless_one_is_chosen(environment, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | environment
    proc = subprocess.run(["make", "-n", "-p", "lint"], cwd=REPO, env=env, capture_output=True, text=True)
    assert f"OMP_WAIT_POLICY = {expected}" in proc.stdout.splitlines()
    shown = subprocess.run(["make", "-s", "-f", "-", "show"], cwd=REPO, env=env, capture_output=True, text=True,
                           input="include Makefile\nshow:\n\t@echo $$OMP_WAIT_POLICY\n")  # fmt: skip
    assert shown.stdout.strip().splitlines()[-1] == expected  # in the environment of every recipe
