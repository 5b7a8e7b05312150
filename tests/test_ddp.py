"""Multi-GPU (DDP) training of every PGPS trainer, on the CPU with two gloo processes (pgps.nnunet.ddp).

Two harnesses, each replacing only what needs a GPU (they say what):

- ``tests/ddp_batches_worker.py`` runs the trainer's own loading path (``initialize``, ``get_dataloaders``,
  ``next(dataloader_train)`` for every step) of nnU-Net's sampling and the four PGPS strategies, with 0 and 2
  augmentation workers per rank, in a group of two ranks and in a group of one (the single-process reference), and
  logs every case each process read from the dataset;
- ``tests/ddp_trainer_worker.py`` runs nnU-Net's own ``nnUNetv2_train ... -num_gpus 2`` (the README's multi-GPU
  command, on a plans variant made with the README's ``pgps plans-variant``): uninterrupted, and SIGKILLed in the
  middle of a stage and resumed with ``--c``, with 0 and with 2 workers per rank.

Measured: the rows, cases, forced flags and crop corners each rank received, against the single-process batch of
the same step; the cases each process read; the per-rank shapes; the telemetry rank 0 wrote; the batches trained
before a kill and after the resume; the final weights.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pgps
from pgps.nnunet import ddp
from tests import nnunet_env as nn
from tests.test_cdl_nnunet import DS, TRAIN
from tests.test_readme import readme_commands

pytestmark = pytest.mark.nnunet
HERE = Path(__file__).parent
SAMPLINGS = {  # trainer: its sampling (Single-Crop's batches capped at 4: fold 0 has 5 training cases)
    "nnUNetTrainer_PGPS_Efficiency": "nnunet",
    "nnUNetTrainer_PGPS_Performance": "split_crop",
    "nnUNetTrainer_PGPS_Performance_MultiCrop": "multi_crop",
    "nnUNetTrainer_PGPS_Performance_SingleVolume": "single_volume",
    "nnUNetTrainer_PGPS_Performance_SingleCrop:4": "single_crop",
    "nnUNetTrainer_PGPS_Performance_DataCurriculum": "split_crop",  # CDL-UNet's phases over the cases
}
LOSSES = ["nnUNetTrainer_PGPS_Performance_DiceFocal", "nnUNetTrainer_PGPS_Performance_DiceTopK10",
          "nnUNetTrainer_PGPS_Performance_DicePerim"]  # fmt: skip
SHORT = {"PGPS_ITERATIONS_PER_EPOCH": "2", "PGPS_VAL_ITERATIONS": "1", "PGPS_SEED": "3", "PGPS_CHECKPOINT_EPOCHS": "1",
         "PGPS_PROGRESS_EVERY": "0", "PGPS_CARBON": "off"}  # fmt: skip
"""Short runs, without progress.png (seconds of matplotlib per epoch) and CodeCarbon, which no test here reads."""
BATCH_EPOCHS = 4  # the batch check: one epoch per stage of the tiny plans
EPOCHS = 5  # nnU-Net's command: epochs 0, 1, 2 and 3-4 (P_max, so that a kill can fall inside a stage)
VARIANT = ["--patch-size", *map(str, nn.PATCH), "--batch-size", "4"]  # the tiny plans' patch, 2 patches per rank
KILL_STEP = 9  # epoch 4, iteration 1: in the last stage (epochs 3-4), after the checkpoint of epoch 3


def launch(command: list, env: dict, log: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``command`` in a session of its own, its output to ``log`` (not a pipe, which a process it orphaned could
    hold open), and kill what is left of the session when it ends."""
    with log.open("w") as out, subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True) as proc:  # fmt: skip
        try:
            proc.wait(timeout=timeout)
        finally:
            nn.kill_session(proc.pid)
    return subprocess.CompletedProcess(command, proc.returncode, log.read_text(), "")


@pytest.fixture(scope="module")
def tiny(tiny_nnunet, tmp_path_factory):
    """A private copy of the tiny dataset with the split and difficulty.csv of tests/test_cdl_nnunet.py (fold 0:
    cases 0-4 train, two easy, two hard, one erroneous)."""
    root = tmp_path_factory.mktemp("ddp_nnunet")
    for sub in ("raw", "preprocessed"):
        shutil.copytree(tiny_nnunet / sub, root / sub)
    pre = root / "preprocessed" / nn.DATASET
    (pre / "splits_final.json").write_text(json.dumps([{"train": TRAIN, "val": sorted(set(DS) - set(TRAIN))}]))
    (pre / "difficulty.csv").write_text("case,ds\n" + "".join(f"{c},{v}\n" for c, v in DS.items()))
    return root


# -- every sampling, 0 and 2 workers per rank: the trainer's own loading path -----------------------------------
def run_group(root: Path, out: Path, world_size: int) -> tuple[list[dict], list[Path]]:
    out.mkdir(parents=True)
    env = nn.env(root, out / "results", **SHORT, PGPS_EPOCHS=str(BATCH_EPOCHS))
    command = [sys.executable, str(HERE / "ddp_batches_worker.py"), str(out / "store"), "RANK", str(world_size),
               str(out), *SAMPLINGS, *(f"{name}::0" for name in LOSSES)]  # fmt: skip
    procs = [subprocess.Popen([str(c).replace("RANK", str(r)) for c in command], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(world_size)]  # fmt: skip
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world_size)], sorted(out.glob("reads-*"))


@pytest.fixture(scope="module")
def batches(tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("ddp_batches")
    (single,), _ = run_group(tiny, work / "one", 1)
    ranks, reads = run_group(tiny, work / "two", 2)
    return {"single": single, "ranks": ranks, "reads": reads}


RUNS = [(trainer, workers) for trainer in SAMPLINGS for workers in (0, 2)]


@pytest.mark.parametrize(("trainer", "workers"), RUNS)
def test_ranks_take_disjoint_rows_of_the_single_process_batch(batches, trainer, workers):
    """Every step of the schedule, in order on both ranks: the rows nnU-Net's split gives each rank, disjoint and
    together the batch; each rank's cases, forced flags and crop corners are those rows of the batch one process
    trains at that step (with the same number of workers, and with none); shapes follow the stage."""
    run = f"{trainer.split(':')[0]}-{workers}"
    single, rank0, rank1 = batches["single"][run], *(r[run] for r in batches["ranks"])
    schedule = pgps.Schedule.from_dict(single["schedule"])
    assert [s["step"] for s in single["steps"]] == list(range(schedule.total_iterations))
    same = ("step", "rows", "keys", "forced", "corners", "shape")  # workers change nothing
    without = batches["single"][f"{trainer.split(':')[0]}-0"]["steps"]
    assert [[s[k] for k in same] for s in single["steps"]] == [[s[k] for k in same] for s in without]
    assert len(rank0["steps"]) == len(rank1["steps"]) == schedule.total_iterations
    for one, a, b in zip(single["steps"], rank0["steps"], rank1["steps"], strict=True):
        assert one["step"] == a["step"] == b["step"]
        stage = schedule.stages[schedule.stage_index(*divmod(one["step"], schedule.iterations_per_epoch))]
        batch = stage.batch_size
        assert one["rows"] == list(range(batch)) and one["shape"] == [batch, 1, *stage.patch_size]
        assert a["rows"] == ddp.rank_rows(batch, 0, 2).tolist() and b["rows"] == ddp.rank_rows(batch, 1, 2).tolist()
        for key in ("keys", "forced", "corners"):
            assert a[key] + b[key] == one[key], (one["step"], key)
        for half in (a, b):
            assert half["shape"] == [len(half["rows"]), 1, *stage.patch_size]
    # the forced rows are the global batch's: nnU-Net's last round(b * (1 - p)) rule on the global index
    share = 0.33 if SAMPLINGS[trainer] == "nnunet" else 0.5
    for step in single["steps"]:
        forced = step["forced"]
        assert forced == (np.arange(len(forced)) >= round(len(forced) * (1 - share))).tolist()
    if SAMPLINGS[trainer] == "split_crop":  # Split-Crop: the forced rows from one volume, the others from another
        assert all(len({k for k, f in zip(s["keys"], s["forced"], strict=True) if f}) == 1 for s in single["steps"])


@pytest.mark.parametrize(("trainer", "workers"), RUNS)
def test_a_rank_reads_only_the_cases_of_its_rows(batches, trainer, workers):
    """Every case a rank's processes (its workers included) read from the dataset is a case of that rank's rows of
    the step being produced; where the step's batch held other cases, this rank did not read them."""
    name = trainer.split(":")[0]
    for rank in (0, 1):
        files = [p for p in batches["reads"] if p.name.startswith(f"reads-{name}-{workers}-{rank}-")]
        reads = [line.split() for p in files for line in p.read_text().splitlines()]
        assert len(files) >= (1 if workers == 0 else 2) and reads  # with workers: read in the workers
        outside = [(step, key) for step, key, mine, _ in reads if mine != "1"]
        assert not outside, outside[:5]
        if SAMPLINGS[trainer] in ("nnunet", "split_crop", "single_crop"):  # the check can fail: other cases existed
            assert any(int(others) for *_, others in reads)


@pytest.mark.parametrize("trainer", [*(t.split(":")[0] for t in SAMPLINGS), *LOSSES])
def test_every_sampling_and_loss_trains_on_two_ranks(batches, trainer):
    """The trainer's own ``train_step`` on every step of its schedule, on both ranks of the gloo group (DDP's
    gradient all-reduce, nnU-Net's DDP batch Dice): a finite loss at every step, as in the single process."""
    for run in (batches["single"], *batches["ranks"]):
        losses = [s["loss"] for s in run[f"{trainer}-0"]["steps"]]
        assert len(losses) == BATCH_EPOCHS * 2 and all(np.isfinite(losses)), losses


# -- nnU-Net's command with -num_gpus 2: telemetry, SIGKILL and --c ---------------------------------------------
def readme_ddp_command(tiny: Path) -> list[str]:
    """The README's multi-GPU command on the tiny dataset: its plans variant made by ``pgps plans-variant`` (as the
    README makes one), dataset 1, two processes."""
    commands = [c for c in readme_commands("nnUNetv2_train") if "-num_gpus" in c]
    assert commands, "the README shows no nnUNetv2_train -num_gpus command"
    args = list(commands[0])
    configuration = args[1]
    match = re.fullmatch(r"3d_fullres_p\d+x\d+x\d+_b\d+", configuration)
    assert match and args[args.index("-p") + 1] == "nnUNetVariantPlans", args
    pre = tiny / "preprocessed" / nn.DATASET
    proc = subprocess.run([nn.BIN / "pgps", "plans-variant", "--plans", pre / "nnUNetPlans.json", "--out",
                           pre / "nnUNetVariantPlans.json", *VARIANT], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    args[0], args[1] = "1", f"3d_fullres_p{'x'.join(map(str, nn.PATCH))}_b4"
    args[args.index("-num_gpus") + 1] = "2"
    return args


def train(
    tiny: Path,
    args: list[str],
    results: Path,
    out: Path,
    workers: int,
    *extra: str,
    kill: int | None = None,
    validate: bool = True,
):
    out.mkdir(parents=True, exist_ok=True)
    env = nn.env(tiny, results, **SHORT, PGPS_EPOCHS=str(EPOCHS), nnUNet_n_proc_DA=str(workers),
                 PGPS_TEST_OUT=str(out), PGPS_TEST_KILL=str(kill if kill is not None else ""),
                 PGPS_TEST_NO_VALIDATION="" if validate else "1", PYTHONPATH=str(HERE.parent))  # fmt: skip
    proc = launch([sys.executable, str(HERE / "ddp_trainer_worker.py"), *args, *extra], env, out / "log.txt")
    steps = [[json.loads(line) for line in (out / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    return proc, steps


def fold(results: Path) -> Path:
    return results / nn.DATASET / "nnUNetTrainer_PGPS_Performance__nnUNetVariantPlans__3d_fullres_p16x16x16_b4" / (
        "fold_0")  # fmt: skip


@pytest.fixture(scope="module")
def trainings(tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("ddp_trainings")
    args = readme_ddp_command(tiny)
    runs = {"args": args}
    proc, runs["whole"] = train(tiny, args, work / "whole", work / "whole_steps", 0)
    assert proc.returncode == 0, proc.stdout[-4000:]
    runs["whole_log"] = proc.stdout
    for workers in (0, 2):
        results = work / f"killed{workers}"
        proc, before = train(tiny, args, results, work / f"before{workers}", workers, kill=KILL_STEP)
        assert proc.returncode != 0 and "SIGKILL" in proc.stdout, proc.stdout[-4000:]
        # no final validation after the resume: the tests below read the batches and the final checkpoint
        proc, after = train(tiny, args, results, work / f"after{workers}", workers, "--c", validate=False)
        assert proc.returncode == 0, proc.stdout[-4000:]
        runs[workers] = {"before": before, "after": after, "log": proc.stdout, "results": results}
    runs["results"] = work
    return runs


def test_the_readme_command_trains_on_two_processes_with_the_global_batch_telemetry(trainings):
    folder = fold(trainings["results"] / "whole")
    rows = list(csv.DictReader((folder / "pgps_telemetry.csv").open()))
    summary = json.loads((folder / "pgps_summary.json").read_text())
    schedule = pgps.Schedule.from_dict(summary["schedule"])
    assert summary["gpus"] == 2 and summary["epochs_done"] == EPOCHS and [s.batch_size for s in schedule.stages] == [
        32, 16, 8, 4]  # fmt: skip
    steps = trainings["whole"]
    for row in rows:
        stage = schedule.stages[int(row["stage"])]
        assert int(row["batch_size"]) == stage.batch_size  # the global batch, from both ranks' rows
        assert row["patch_size"] == "x".join(map(str, stage.patch_size))
        assert int(row["iterated_voxels"]) == 2 * stage.tensor_voxels
        for rank in (0, 1):
            mine = [s for s in steps[rank] if s["epoch"] == int(row["epoch"])]
            assert [s["shape"][0] for s in mine] == [len(ddp.rank_rows(stage.batch_size, rank, 2))] * 2
    assert (folder / "validation" / "summary.json").is_file()  # nnU-Net's final validation ran on both ranks
    # the spawned ranks fork their loader workers (a spawned worker re-imports torch and nnU-Net at every stage)
    assert trainings["whole_log"].count("PGPS: loader workers start by fork in this DDP rank") == 2
    assert [s["step"] for s in steps[0]] == [s["step"] for s in steps[1]] == list(range(EPOCHS * 2))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_killed_two_rank_run_resumes_at_the_step_without_replay(trainings, workers):
    """SIGKILL in the middle of the last stage, ``--c``: both ranks continue at the checkpoint's step; no batch
    trained after the resume repeats one trained into the checkpoint; every step's batch (data and labels) is the
    uninterrupted run's, whatever the number of workers."""
    run = trainings[workers]
    resumed_at = (KILL_STEP // 2) * 2  # the checkpoint after epoch 3
    assert f"resuming at epoch {resumed_at // 2}, stage 3" in run["log"]
    whole = {(r, s["step"]): s for r in (0, 1) for s in trainings["whole"][r]}
    for rank in (0, 1):
        before, after = run["before"][rank], run["after"][rank]
        assert [s["step"] for s in before][:resumed_at] == list(range(resumed_at))
        assert [s["step"] for s in after] == list(range(resumed_at, EPOCHS * 2))
        trained = {s["data"] for s in before if s["step"] < resumed_at}
        assert not trained & {s["data"] for s in after}, "a batch after the resume repeats one before it"
        for s in before + after:
            reference = whole[rank, s["step"]]
            same = ("keys", "rows", "data", "target")
            assert [s[k] for k in same] == [reference[k] for k in same], (rank, s["step"])


@pytest.mark.parametrize("workers", [0, 2])
def test_the_resumed_two_rank_run_ends_with_the_uninterrupted_weights(trainings, workers):
    """With 0 workers, and with 2: a step's batch does not depend on the workers (above) and nothing else in a
    training step is random, so the resumed run's final weights are the uninterrupted run's, bit for bit."""
    import torch

    a = torch.load(fold(trainings["results"] / "whole") / "checkpoint_final.pth", map_location="cpu",
                   weights_only=False)  # fmt: skip
    b = torch.load(fold(trainings[workers]["results"]) / "checkpoint_final.pth", map_location="cpu",
                   weights_only=False)  # fmt: skip
    assert a["current_epoch"] == b["current_epoch"] == EPOCHS
    for key, value in a["network_weights"].items():
        assert torch.equal(value, b["network_weights"][key]), key
    state = b["logging"]["pgps_curriculum"]
    assert state["curriculum"]["epoch"] == EPOCHS and state["curriculum"]["iteration"] == 0
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2  # every rank's random states
    assert state["planner"]["strategy"] == "split_crop" and state["planner"]["num_cases"] == len(TRAIN)


# -- the pieces ---------------------------------------------------------------------------------------------------
SAME_SCHEDULE = """
import sys, torch.distributed as dist, pgps
from pgps.nnunet import ddp
rank = int(sys.argv[2])
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=rank, world_size=2)
mine = pgps.make_schedule("performance", (16, 16, 16), (8, 8, 8), 2, epochs=4)
mine = mine.with_batch_sizes([16 + rank, 8, 4, 2], f"probed on rank {rank}")  # as two memory probes might differ
print(ddp.same_on_every_rank(mine).stages[0].batch_size)
dist.destroy_process_group()
"""


def test_every_rank_trains_rank_0s_schedule(tmp_path):
    """The trainer's schedule goes through ``same_on_every_rank`` under DDP: two ranks that built different ones
    (memory probes on two GPUs) both train rank 0's."""
    procs = [subprocess.Popen([sys.executable, "-c", SAME_SCHEDULE, str(tmp_path / "store"), str(r)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]  # fmt: skip
    out = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], out
    assert [o.strip() for o, _ in out] == ["16", "16"]


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
