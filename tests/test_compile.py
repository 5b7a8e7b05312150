"""torch.compile with a curriculum (pgps.nnunet.compiling): one compilation per stage, none where a stage is too
short to repay it, and never a silent fallback to eager execution. Counted on the CPU with dynamo's eager backend
(dynamo traces and guards as on a GPU; only the code generation differs)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

import pgps
from tests import nnunet_env as nn

pytestmark = pytest.mark.nnunet
COMPILE = {"PGPS_COMPILE_BACKEND": "eager", "PGPS_COMPILE_MIN_ITERATIONS": "0"}


def telemetry(results, trainer: str) -> list[dict]:
    with open(nn.fold_folder(results, trainer) / "pgps_telemetry.csv") as f:
        return list(csv.DictReader(f))


def check(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_paced_stages_compile_once_each_and_compile_time_is_kept_apart(tiny_nnunet):
    trainer = "nnUNetTrainer_PGPS_Performance"
    results = tiny_nnunet / "results_compile"
    proc = nn.train_only(tiny_nnunet, trainer, results=results, PGPS_EPOCHS="8", **COMPILE)
    check(proc)
    rows = telemetry(results, trainer)
    schedule = pgps.make_schedule("performance", nn.PATCH, (8, 8, 8), 2, epochs=8, iterations_per_epoch=2)
    per_stage = [0] * schedule.num_stages
    for row in rows:
        per_stage[int(row["stage"])] += int(row["compilations"])
    assert per_stage == [1] * schedule.num_stages  # the first epoch of a stage compiles its shape, the second none
    assert [int(r["compilations"]) for r in rows] == [1, 0] * schedule.num_stages
    assert all(float(r["compile_time_s"]) > 0 for r in rows[::2]) and all(float(r["epoch_time_s"]) > 0 for r in rows)
    assert "torch.compile, static shapes, one compilation per stage" in proc.stdout


def test_rpss_compiles_each_drawn_stage_once(tiny_nnunet):
    trainer = "nnUNetTrainer_PGPS_RPSS"
    results = tiny_nnunet / "results_compile_rpss"
    check(nn.train_only(tiny_nnunet, trainer, results=results, PGPS_EPOCHS="2", PGPS_ITERATIONS_PER_EPOCH="6",
                        **COMPILE))  # fmt: skip
    rows = telemetry(results, trainer)
    schedule = pgps.make_schedule("rpss", nn.PATCH, (8, 8, 8), 2, epochs=2, iterations_per_epoch=6)
    drawn = {int(i) for epoch in range(2) for i in schedule.rpss_draws(epoch)}
    assert len(drawn) > 1
    assert sum(int(r["compilations"]) for r in rows) == len(drawn)


def test_stages_too_short_to_repay_compilation_run_eager(tiny_nnunet):
    trainer = "nnUNetTrainer_PGPS_Efficiency"
    results = tiny_nnunet / "results_compile_short"
    proc = nn.train_only(tiny_nnunet, trainer, results=results, **{**COMPILE, "PGPS_COMPILE_MIN_ITERATIONS": "3"})
    check(proc)
    assert [int(r["compilations"]) for r in telemetry(results, trainer)] == [0, 0, 0, 0]
    assert "stages run eager (fewer than 3 iterations): [0, 1, 2, 3]" in proc.stdout


LIMIT = """
import torch
from pgps.nnunet.compiling import compile_network
network = compile_network(torch.nn.Conv3d(1, 2, 3), graphs=2)
torch._dynamo.config.recompile_limit = 2  # as if the schedule had needed two graphs only
for size in (4, 5, 6):
    network(torch.zeros(1, 1, size, size, size))
"""


def test_exceeding_the_compile_limit_is_an_error_not_a_silent_fallback():
    env = {**nn.env(Path("/nonexistent")), "PGPS_COMPILE_BACKEND": "eager"}
    proc = subprocess.run([sys.executable, "-c", LIMIT], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "recompile_limit" in proc.stderr and "FailOnRecompileLimitHit" in proc.stderr
