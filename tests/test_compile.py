"""torch.compile with a curriculum (pgps.nnunet.compiling): one compilation per stage, none where a stage is too
short to repay it, a graph budget that holds through nnU-Net's final validation, and never a silent fallback to
eager execution. Counted on the CPU with dynamo's eager backend (dynamo traces and guards as on a GPU; only the
code generation differs), the trainings run by ``nnUNetv2_train`` through the final validation with no spare graph:
the graphs compiled are counted in dynamo's own recompile log."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import pgps
from tests import nnunet_env as nn

pytestmark = pytest.mark.nnunet
COMPILE = {"PGPS_COMPILE_BACKEND": "eager", "PGPS_COMPILE_MIN_ITERATIONS": "0", "PGPS_PROGRESS_EVERY": "0"}
"""dynamo's eager backend, every stage compiled; no progress.png (matplotlib, 0.6 s of CPU an epoch; unread here)."""
COUNTED = {**COMPILE, "PGPS_COMPILE_SPARE_GRAPHS": "0", "TORCH_LOGS": "recompiles"}
VALIDATION_GRAPHS = 1 + 2
"""nnU-Net's validation step (no gradients) and its final validation (inputs without autograd keys, then inference
tensors): the guard failures dynamo's recompile log names in the runs below."""


def telemetry(results, trainer: str) -> list[dict]:
    with open(nn.fold_folder(results, trainer) / "pgps_telemetry.csv") as f:
        return list(csv.DictReader(f))


def check(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def graphs_compiled(proc) -> int:
    """The network's graphs, from dynamo's recompile log: the first compilation, then one per recompilation."""
    assert "Training done" in proc.stdout and (proc.stdout.count("predicting case_") == 2)  # the final validation ran
    return 1 + proc.stderr.count("[__recompiles] Recompiling function forward")


def budget_line(graphs: int, budget: int) -> str:
    return f"PGPS: torch.compile compiled {graphs} graphs in this process (budget {budget})"


def test_paced_stages_compile_once_each_and_compile_time_is_kept_apart(tiny_nnunet):
    trainer = "nnUNetTrainer_PGPS_Performance"
    results = tiny_nnunet / "results_compile"
    proc = nn.train(tiny_nnunet, trainer, results=results, PGPS_EPOCHS="8", **COUNTED)
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
    # no spare graph, and the final validation compiled within the budget: the budget is the run's need, exactly
    graphs = graphs_compiled(proc)
    assert graphs == schedule.num_stages + VALIDATION_GRAPHS
    assert f"graph budget {graphs} ({graphs} planned, 0 spare)" in proc.stdout
    assert budget_line(graphs, graphs) in proc.stdout and "validating eager" not in proc.stdout


def test_rpss_compiles_each_drawn_stage_once(tiny_nnunet):
    trainer = "nnUNetTrainer_PGPS_RPSS"
    results = tiny_nnunet / "results_compile_rpss"
    proc = nn.train(tiny_nnunet, trainer, results=results, PGPS_EPOCHS="2", PGPS_ITERATIONS_PER_EPOCH="6", **COUNTED)
    check(proc)
    rows = telemetry(results, trainer)
    schedule = pgps.make_schedule("rpss", nn.PATCH, (8, 8, 8), 2, epochs=2, iterations_per_epoch=6)
    drawn = {int(i) for epoch in range(2) for i in schedule.rpss_draws(epoch)}
    assert len(drawn) > 1
    assert sum(int(r["compilations"]) for r in rows) == len(drawn)
    budget = schedule.num_stages + VALIDATION_GRAPHS
    assert graphs_compiled(proc) == len(drawn) + VALIDATION_GRAPHS
    assert budget_line(len(drawn) + VALIDATION_GRAPHS, budget) in proc.stdout


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


INJECT = """
import json
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import pgps.nnunet.compiling as compiling

compile_network = compiling.compile_network


def capped(network, graphs):  # dynamo's limit at the training stages and the validation step only
    compiled = compile_network(network, graphs)
    torch._dynamo.config.recompile_limit = int(os.environ["CAP"])
    return compiled


compiling.compile_network = capped
validate = nnUNetTrainer.perform_actual_validation


def recording(self, *args, **kwargs):  # what the fold folder holds whenever nnU-Net's final validation starts
    final = os.path.join(self.output_folder, "checkpoint_final.pth")
    epoch = None
    if os.path.isfile(final):
        epoch = torch.load(final, map_location="cpu", weights_only=False)["current_epoch"]
    with open(os.environ["STARTS"], "a") as f:
        f.write(json.dumps({"checkpoint_final_epoch": epoch}) + "\\n")
    return validate(self, *args, **kwargs)


nnUNetTrainer.perform_actual_validation = recording
"""


def test_a_final_validation_past_the_budget_runs_eager_after_the_final_checkpoint(tiny_nnunet, tmp_path):
    """``checkpoint_final.pth`` (the last epoch's) is on disk whenever nnU-Net's final validation starts, so a
    failure there never loses the trained weights; past the graph budget the validation runs again eager and
    finishes."""
    (tmp_path / "sitecustomize.py").write_text(INJECT)
    trainer, results, starts = "nnUNetTrainer_PGPS_Performance", tmp_path / "results", tmp_path / "starts.jsonl"
    schedule = pgps.make_schedule("performance", nn.PATCH, (8, 8, 8), 2, epochs=4, iterations_per_epoch=2)
    proc = nn.train(tiny_nnunet, trainer, results=results, PYTHONPATH=str(tmp_path), STARTS=str(starts),
                    CAP=str(schedule.num_stages + 1), **COUNTED)  # fmt: skip
    check(proc)
    assert "FailOnRecompileLimitHit" not in proc.stderr
    assert f"exceeded the torch.compile graph budget ({schedule.num_stages + VALIDATION_GRAPHS})" in proc.stdout
    assert "validating eager instead" in proc.stdout
    # two starts: compiled (past the cap), then eager; the final checkpoint of the last epoch was there at both
    assert [json.loads(line) for line in starts.read_text().splitlines()] == [
        {"checkpoint_final_epoch": schedule.epochs}
    ] * 2
    fold = nn.fold_folder(results, trainer)
    assert (fold / "validation" / "summary.json").is_file() and not (fold / "checkpoint_latest.pth").exists()
