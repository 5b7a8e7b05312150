"""Multi-GPU (DDP) training of the PGPS trainers, on the CPU with two gloo processes (pgps.nnunet.ddp).

Each rank runs the trainer's own ``run_training`` (tests/ddp_trainer_worker.py says what it replaces: the
CUDA device and the ``device_ids`` of ``DistributedDataParallel``; NCCL and the GPU placement are nnU-Net's and
run only on GPUs). Checked: every step's global batch is one plan drawn alike on both ranks, split into
disjoint rows as nnU-Net splits its batch; the union is the plan one process with the same seed draws; the
telemetry rank 0 writes is the global batch's; a run stopped after a checkpoint and resumed on both ranks
trains the same batches as an uninterrupted run; a stage smaller than the GPUs stops before training.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pgps
from pgps.nnunet import ddp
from tests import nnunet_env as nn

pytestmark = pytest.mark.nnunet
WORKER = Path(__file__).parent / "ddp_trainer_worker.py"
TRAINER = "nnUNetTrainer_PGPS_Efficiency"  # nnU-Net's own loader, four stages of batch 2, two epochs each
STOP_AFTER = 2  # in the middle of stage 1: the resumed ranks continue its plan generator from the checkpoint
SHORT = {"PGPS_EPOCHS": "8", "PGPS_ITERATIONS_PER_EPOCH": "2", "PGPS_VAL_ITERATIONS": "1", "nnUNet_n_proc_DA": "0",
         "PGPS_SEED": "3"}  # fmt: skip


def run_ranks(root: Path, results: Path, out: Path, mode: str = "", world_size: int = 2) -> list[list[dict]]:
    out.mkdir(parents=True, exist_ok=True)
    store = out / f"store{mode}"
    env = nn.env(root, results, **SHORT)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(store), str(r), str(world_size), TRAINER, str(out), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world_size)
    ]
    logs = [p.communicate(timeout=900) for p in procs]
    for p, (stdout, stderr) in zip(procs, logs, strict=True):
        assert p.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world_size)]


@pytest.fixture(scope="module")
def runs(tiny_nnunet, tmp_path_factory):
    """One process (a DDP group of one, the reference), and two ranks stopped after epoch 1 and resumed."""
    single = tmp_path_factory.mktemp("ddp_single")
    two = tmp_path_factory.mktemp("ddp_two")
    stopped = run_ranks(tiny_nnunet, two, two / "steps_a", mode=str(STOP_AFTER))
    resumed = run_ranks(tiny_nnunet, two, two / "steps_b", mode="resume")
    return {
        "single": run_ranks(tiny_nnunet, single, single / "steps", world_size=1)[0],
        "ranks": [a + b for a, b in zip(stopped, resumed, strict=True)],
        "epochs": [[s["epoch"] for s in steps] for steps in (stopped + resumed)],
        "results": two,
        "checkpoint": two / "steps_a" / "checkpoint_latest.pth",
    }


def test_ranks_take_disjoint_rows_of_the_single_process_plan(runs):
    """Every step: one global batch planned alike on both ranks, and the plan of one process with the same seed;
    rows split as nnU-Net splits its batch, disjoint, together the whole batch; each rank trained its rows.
    The ranks ran epochs 0-2, were stopped after its checkpoint and resumed for epochs 3-7."""
    single, (rank0, rank1) = runs["single"], runs["ranks"]
    epochs = [e for e in range(8) for _ in (0, 1)]  # two iterations each
    before, after = epochs[: 2 * (STOP_AFTER + 1)], epochs[2 * (STOP_AFTER + 1) :]
    assert runs["epochs"] == [before, before, after, after]
    assert len(single) == len(rank0) == len(rank1) == 8 * 2  # epochs x iterations
    for one, a, b in zip(single, rank0, rank1, strict=True):
        assert a["plan"] == b["plan"] == one["plan"]  # resumed steps too: the plan state came back on both ranks
        batch = len(a["plan"])
        assert one["rows"] == list(range(batch)) and one["keys"] == [p[0] for p in one["plan"]]
        assert a["rows"] == ddp.rank_rows(batch, 0, 2).tolist() and b["rows"] == ddp.rank_rows(batch, 1, 2).tolist()
        assert sorted(a["rows"] + b["rows"]) == list(range(batch))
        for step in (a, b):
            assert step["keys"] == [a["plan"][r][0] for r in step["rows"]]  # each rank trained on its rows' cases
            assert step["shape"][0] == len(step["rows"])  # the network received the rank's share
    # the forced-foreground rows are the global batch's: nnU-Net's last round(b * (1 - p)) rule on the global index
    p = 0.33  # nnU-Net's share (PGPS-Efficiency keeps it)
    for step in rank0:
        forced = [f for _, _, f in step["plan"]]
        assert forced == (np.arange(len(forced)) >= round(len(forced) * (1 - p))).tolist()


def test_rank0_writes_the_global_batch_telemetry(runs):
    fold = nn.fold_folder(runs["results"], TRAINER)
    rows = list(csv.DictReader((fold / "pgps_telemetry.csv").open()))
    summary = json.loads((fold / "pgps_summary.json").read_text())
    schedule = pgps.Schedule.from_dict(summary["schedule"])
    assert [int(r["epoch"]) for r in rows] == list(range(8))  # the epochs before the stop kept across the resume
    for row in rows:
        stage = schedule.stages[int(row["stage"])]
        assert int(row["batch_size"]) == stage.batch_size == 2  # the global batch, from both ranks' halves
        assert row["patch_size"] == "x".join(map(str, stage.patch_size))
        assert int(row["iterated_voxels"]) == 2 * stage.batch_size * pgps.numel(stage.patch_size)
    assert summary["gpus"] == 2 and summary["epochs_done"] == 8


def test_the_checkpoint_holds_every_ranks_random_state(runs):
    import torch

    state = torch.load(runs["checkpoint"], weights_only=False)["logging"]["pgps_curriculum"]
    rng = state["rng"]
    assert isinstance(rng, list) and len(rng) == 2  # one per rank, each restored by its own rank on --c
    assert not np.array_equal(rng[0]["numpy"][1], rng[1]["numpy"][1])  # the ranks' augmentation draws differ
    assert set(state["plan_states"]) == {"1"}  # stage 1's shared plan generator, alike on both ranks


def test_a_stage_smaller_than_the_gpus_stops_before_training():
    schedule = pgps.make_schedule("efficiency", (16, 16, 16), (8, 8, 8), 2, epochs=4, iterations_per_epoch=1)
    ddp.check_stages(schedule, 2, str)
    with pytest.raises(ValueError, match=r"PGPS stage 0 \(0\) has a batch of 2, fewer than the 4 GPUs.*-num_gpus"):
        ddp.check_stages(schedule, 4, str)


def test_rank_split_is_nnunets():
    """nnU-Net's _set_batch_size_and_oversample: b // N each, the first b % N ranks one more; the forced share of
    a rank is that of its rows of the global batch."""
    for b, n in ((2, 2), (7, 3), (64, 8), (5, 4)):
        rows = [ddp.rank_rows(b, r, n) for r in range(n)]
        sizes = [len(r) for r in rows]
        expected = [b // n + (1 if (b // n) * n + i < b else 0) for i in range(n)]  # nnU-Net's expression
        assert sizes == expected and np.concatenate(rows).tolist() == list(range(b))
    # 50% foreground of a global batch of 6 over 4 ranks: rows 3, 4, 5 forced -> ranks get 0, 1/2, 1, 1 of theirs
    assert [ddp.rank_foreground_share(6, 0.5, r, 4) for r in range(4)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="cannot be split over 4 processes"):
        ddp.rank_rows(3, 0, 4)
