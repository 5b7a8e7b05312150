"""Crash-safe training: SIGKILL a short CPU training at many points and re-run the workflow's own rule.

Every launch is ``snakemake --rerun-incomplete <fold>/validation/summary.json`` on a config whose demo
(0 data-loading workers, ``PGPS_SEED``) or article (2 workers) section trains the tiny dataset of
``tests/nnunet_env.py``, so the rules' resume logic, Snakemake's removal of a failed job's outputs and
nnU-Net's ``--c`` are all exercised as a re-submitted job would. ``tests/faults/sitecustomize.py``
kills the training process (SIGKILL, from inside, at a chosen iteration, byte of a checkpoint write,
or validation case); the kill points are drawn from a seeded generator.
"""

from __future__ import annotations

import csv
import errno
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests import nnunet_env as nn

pytestmark = pytest.mark.nnunet

ROOT = Path(__file__).resolve().parents[1]
FAULTS = Path(__file__).resolve().parent / "faults"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TRAINER = "nnUNetTrainer_PGPS_Performance"
EPOCHS = 5  # the tiny plans' 4 stages: epochs 0, 1, 2 and 3-4 (P_max)
KILL_SEED = 13


def copy_nnunet(tiny: Path, to: Path) -> Path:
    """An nnU-Net folder (raw, preprocessed) of the tiny dataset, with mtimes kept (Snakemake sees it up to date)."""
    import shutil

    for sub in ("raw", "preprocessed"):
        shutil.copytree(tiny / sub, to / sub)
    return to


def workflow_config(work: Path, nnunet: Path, section: str, **settings) -> Path:
    """A workflow config that trains the tiny dataset in ``section`` (demo or article) with ``settings``."""
    config = {
        "results": str(work / "results"),
        "paper_figures": str(work / "figures"),
        "schedules": {"datasets": {"Tiny": {"patch_size": nn.PATCH, "steps": [8, 8, 8], "batch_size": 2}}},
    }
    if section == "demo":
        config["demo"] = {
            "nnunet_dir": str(nnunet), "configuration": "3d_fullres", "trainers": [TRAINER], "folds": [0],
            "processes": 1, "seed": 0, "datasets": {nn.DATASET.split("_")[1]: {"preset": "lesions", "dataset_id": 1}},
            **settings,
        }  # fmt: skip
    else:
        config["demo"] = {"enabled": False}
        config["article"] = {
            "enabled": True, "nnunet_dir": str(nnunet), "device": "cpu",
            "datasets": {"Tiny": {"dataset_id": 1, "name": "Tiny", "format": "nnunet",
                                  "raw_path": str(nnunet / "raw" / nn.DATASET)}},
            "experiments": {"resume": {"datasets": ["Tiny"], "modes": ["performance"], "folds": [0]}},
            **settings,
        }  # fmt: skip
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fold_dir(nnunet: Path) -> Path:
    return nn.fold_folder(nnunet / "results", TRAINER)


def launch(work: Path, cores: int, kill: str = "", record: Path | None = None) -> tuple[int, str]:
    """One re-submission: the workflow's rule for the fold, with a fault; returns Snakemake's status and the job log."""
    nnunet = work / "nnunet"
    target = fold_dir(nnunet) / "validation" / "summary.json"
    env = {
        **os.environ, "PATH": f"{nn.BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(FAULTS),
        "OMP_NUM_THREADS": "1", "PGPS_FAULT_KILL": kill, "PGPS_FAULT_RECORD": str(record or ""),
        "PGPS_PROGRESS_EVERY": "0",  # the article rule's trainings: no progress.png (not read; seconds per epoch)
    }  # fmt: skip
    for logs in (work / "results" / "logs").rglob("*.log"):
        logs.unlink()
    command = [SNAKEMAKE, "-s", ROOT / "Snakefile", "-d", work, "--cores", str(cores), "--configfile",
               work / "config.yaml", "--rerun-incomplete", target]  # fmt: skip
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:  # fmt: skip
        try:
            stdout, stderr = proc.communicate(timeout=900)
        finally:
            nn.kill_session(proc.pid)
    log = "\n".join(p.read_text() for p in (work / "results" / "logs").rglob("*.log"))
    return proc.returncode, log + stdout[-3000:] + stderr[-3000:]


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint resumes at (nnU-Net's ``current_epoch``), or None if it does not exist."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)["current_epoch"]


def read_telemetry(folder: Path) -> list[dict]:
    with open(folder / "pgps_telemetry.csv") as f:
        return list(csv.DictReader(f))


UNINTERRUPTED = """
import multiprocessing, sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
torch.set_num_threads(multiprocessing.cpu_count())  # what nnUNetv2_train -device cpu does
get_trainer_from_args("1", "3d_fullres", 0, sys.argv[1], device=torch.device("cpu")).run_training()
"""


def uninterrupted(tiny: Path, results: Path, **settings: str) -> Path:
    """The fold folder of an uninterrupted training (no final validation: equal weights give equal Dice)."""
    env = nn.env(tiny, results, **settings)
    proc = subprocess.run([sys.executable, "-c", UNINTERRUPTED, TRAINER], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return nn.fold_folder(results, TRAINER)


@pytest.fixture(scope="module")
def demo_runs(tiny_nnunet, tmp_path_factory):
    """The demo rule's run killed at four points drawn from a seeded generator and run to the end, and the
    same training uninterrupted."""
    rng = np.random.default_rng(KILL_SEED)
    a = int(rng.integers(1, EPOCHS - 1))  # a mid-epoch kill (1..3)
    b = int(rng.integers(a, EPOCHS - 1))  # a kill inside the write of checkpoint_latest after epoch b (a..3)
    plan = [
        ("iteration", f"iteration:{a}:{rng.integers(2)}", a),
        ("latest write", f"save:checkpoint_latest.pth:{b}:{rng.uniform():.3f}", b),
        ("final write", f"save:checkpoint_final.pth:-1:{rng.uniform():.3f}", None),
        ("validation", f"validation:{rng.integers(2)}", None),
        ("none", "", None),
    ]
    # progress_every 0: no progress.png, which no test reads (seconds of matplotlib per plot)
    settings = {"epochs": EPOCHS, "iterations_per_epoch": 2, "val_iterations": 1, "checkpoint_epochs": 1,
                "progress_every": 0}  # fmt: skip
    reference = uninterrupted(
        tiny_nnunet, tmp_path_factory.mktemp("uninterrupted") / "results", PGPS_EPOCHS=str(EPOCHS),
        PGPS_ITERATIONS_PER_EPOCH="2", PGPS_VAL_ITERATIONS="1", PGPS_SEED="0", nnUNet_n_proc_DA="0",
        PGPS_PROGRESS_EVERY="0",
    )  # fmt: skip
    work = tmp_path_factory.mktemp("killed")
    copy_nnunet(tiny_nnunet, work / "nnunet")
    workflow_config(work, work / "nnunet", "demo", **settings)
    folder = fold_dir(work / "nnunet")
    launches = []
    for what, kill, epoch in plan:
        before = {name: checkpoint_epoch(folder / name) for name in ("checkpoint_latest.pth", "checkpoint_final.pth")}
        strays = sorted(p.name for p in folder.glob("checkpoint_*.tmp*")) if folder.exists() else []
        status, log = launch(work, cores=1, kill=kill)
        launches.append({"what": what, "kill": kill, "epoch": epoch, "before": before, "strays": strays,
                         "status": status, "log": log})  # fmt: skip
    return {"reference": reference, "folder": folder, "launches": launches, "plan": plan}


def describe(launch: dict) -> str:
    return f"{launch['what']} ({launch['kill']}): status {launch['status']}\n{launch['log'][-4000:]}"


def test_every_launch_but_the_last_was_killed_where_planned_and_the_last_finished(demo_runs):
    *killed, last = demo_runs["launches"]
    for launch in killed:
        assert launch["status"] != 0, describe(launch)
        assert ("Training done" in launch["log"]) == (launch["what"] == "validation"), describe(launch)
        if launch["what"] == "iteration":  # the last epoch it started is the planned one
            started = re.findall(r": Epoch (\d+)\s*$", launch["log"], re.M)
            assert started[-1:] == [str(launch["epoch"])], describe(launch)
    assert last["status"] == 0 and "Mean Validation Dice" in last["log"], describe(last)


def test_a_kill_inside_a_checkpoint_write_keeps_the_previous_checkpoint_loadable(demo_runs):
    launches = demo_runs["launches"]
    latest_write, after = launches[1], launches[2]
    b = latest_write["epoch"]
    # the write of the state after epoch b was cut short: the state after epoch b - 1 is still there, loadable
    assert after["before"]["checkpoint_latest.pth"] == b, describe(latest_write)
    assert [s.rsplit(".tmp", 1)[0] for s in after["strays"]] == ["checkpoint_latest.pth"], after["strays"]
    assert f"resuming at epoch {b}," in after["log"], describe(after)
    after = launches[3]  # killed inside the write of checkpoint_final: checkpoint_latest is kept until it exists
    assert after["before"]["checkpoint_final.pth"] is None and after["before"]["checkpoint_latest.pth"] >= EPOCHS - 1
    assert [s.rsplit(".tmp", 1)[0] for s in after["strays"]] == ["checkpoint_final.pth"], after["strays"]
    assert f"resuming at epoch {after['before']['checkpoint_latest.pth']}," in after["log"], describe(after)
    assert not list(demo_runs["folder"].glob("*.tmp*")), "a stray temporary checkpoint survived the finished run"


def test_every_relaunch_resumes_from_the_newest_state_never_from_best(demo_runs):
    launches = demo_runs["launches"]
    for killed, after in itertools.pairwise(launches):
        expected = after["before"]["checkpoint_final.pth"] or after["before"]["checkpoint_latest.pth"]
        assert f"resuming at epoch {expected}," in after["log"], describe(after)
        if killed["what"] == "iteration":  # a kill inside epoch e loses only that epoch (checkpoint every epoch)
            assert expected == killed["epoch"], describe(after)
        if killed["what"] == "validation":  # killed in the final validation: only the validation is redone
            assert expected == EPOCHS and "Epoch " not in after["log"].split("resuming at epoch")[1], describe(after)
            assert "Mean Validation Dice" in after["log"], describe(after)


def test_the_telemetry_holds_every_epoch_exactly_once(demo_runs):
    rows = read_telemetry(demo_runs["folder"])
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    summary = json.loads((demo_runs["folder"] / "pgps_summary.json").read_text())
    assert summary["epochs_done"] == EPOCHS


def test_with_0_workers_the_resumed_run_equals_the_uninterrupted_one(demo_runs):
    from pgps.nnunet.carbon import COLUMNS as CARBON_COLUMNS
    from pgps.nnunet.telemetry import TELEMETRY_COLUMNS

    reference, folder = demo_runs["reference"], demo_runs["folder"]
    a = torch.load(reference / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    b = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert a["current_epoch"] == b["current_epoch"] == EPOCHS
    assert a["network_weights"].keys() == b["network_weights"].keys()
    for key, value in a["network_weights"].items():
        assert torch.equal(value, b["network_weights"][key]), key
    for key, value in a["optimizer_state"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b["optimizer_state"]["state"][key][name]), (key, name)
    measured = {"epoch_time_s", "compile_time_s", *CARBON_COLUMNS}  # clocks and CodeCarbon's energy: never repeat
    same = [c for c in TELEMETRY_COLUMNS if c not in measured]
    rows = [[[r[c] for c in same] for r in read_telemetry(f)] for f in (reference, folder)]
    assert rows[0] == rows[1]


def test_with_workers_no_batch_after_a_resume_repeats_one_before_it(tiny_nnunet, tmp_path):
    """Why: with nnUNet_n_proc_DA=2, a resume mid-stage replayed the batches of the epochs before it."""
    rng = np.random.default_rng(KILL_SEED + 1)
    epoch, iteration = EPOCHS - 1, int(rng.integers(4))  # the second epoch of the P_max stage (epochs 3-4)
    copy_nnunet(tiny_nnunet, tmp_path / "nnunet")
    # the article rule (its nnUNet_n_proc_DA = its threads = 2 here); a checkpoint_latest after every epoch by time
    workflow_config(tmp_path, tmp_path / "nnunet", "article", epochs=EPOCHS, iterations_per_epoch=4, val_iterations=1,
                    checkpoint_epochs=50, checkpoint_minutes=1e-4)  # fmt: skip
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    status, log = launch(tmp_path, cores=2, kill=f"iteration:{epoch}:{iteration}", record=first)
    assert status != 0, log[-4000:]
    status, log = launch(tmp_path, cores=2, kill="train_end", record=second)
    assert f"resuming at epoch {epoch}," in log, log[-4000:]
    read = [[line.split() for line in path.read_text().splitlines()] for path in (first, second)]
    before = {md5 for e, _, md5 in read[0] if int(e) < epoch}  # trained into the checkpoint the run resumed from
    after = [md5 for e, _, md5 in read[1]]
    assert len(after) == 4 * (EPOCHS - epoch) and {int(e) for e, _, _ in read[1]} == set(range(epoch, EPOCHS))
    assert len({md5 for e, _, md5 in read[0] if int(e) >= 3 and int(e) < epoch}) >= 4  # P_max batches before the kill
    assert not before & set(after), "batches after the resume repeat batches the checkpoint was trained on"


# -- the pieces, without nnU-Net processes ---------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    from pgps.io import atomic_link, atomic_write

    path = tmp_path / "checkpoint_latest.pth"
    path.write_bytes(b"old state")

    def dies_halfway(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"new st")
        raise KeyboardInterrupt  # stands for the process dying here

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_halfway)
    assert path.read_bytes() == b"old state" and [p.name for p in tmp_path.iterdir()] == [path.name]
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"new state"))
    atomic_link(path, tmp_path / "checkpoint_best.pth")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"newer state"))  # a new file: the link keeps its state
    assert (tmp_path / "checkpoint_best.pth").read_bytes() == b"new state" and path.read_bytes() == b"newer state"


def test_checkpoint_latest_by_wall_time(monkeypatch, tmp_path):
    """After ``checkpoint_every_minutes``, an epoch end writes checkpoint_latest (holding that epoch), never for the
    last epoch (the final checkpoint follows) and not twice for one epoch."""
    from types import SimpleNamespace

    from pgps.nnunet import checkpoints as module

    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    saved = []
    stub = SimpleNamespace(checkpoint_every_minutes=2.0, num_epochs=10, output_folder=str(tmp_path),
                           current_epoch=0, _latest_saved=(-1, 1000.0))  # fmt: skip

    def save_checkpoint(filename):
        saved.append((Path(filename).name, stub.current_epoch))
        stub._latest_saved = (stub.current_epoch, clock[0])

    stub.save_checkpoint = save_checkpoint
    for epoch, minutes in enumerate([1.0, 1.5, 0.5, 2.5, 0.1, 2.0, 3.0, 1.0, 2.0, 5.0]):
        clock[0] += 60 * minutes
        stub.current_epoch = epoch + 1  # nnU-Net has moved on when the hook runs
        module.CheckpointMixin._maybe_save_latest_by_time(stub, epoch)
        assert stub.current_epoch == epoch + 1
    # 2.5 min after the start (epoch 1), then 3.0 (epoch 3), 2.1 (5), 3.0 (6), 3.0 (8); epoch 9 is the last
    assert saved == [("checkpoint_latest.pth", e) for e in (1, 3, 5, 6, 8)]
    stub.checkpoint_every_minutes = 0  # by epochs only
    clock[0] += 3600
    module.CheckpointMixin._maybe_save_latest_by_time(stub, 7)
    assert len(saved) == 5


def test_the_cuda_generator_is_checkpointed_on_a_gpu_only(monkeypatch):
    """No GPU here: torch.cuda's generator calls are replaced, to check that a GPU run saves and restores its
    device's generator and that a CPU run never touches torch.cuda."""
    from types import SimpleNamespace

    from pgps.nnunet.trainer import PGPSMixin

    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.tensor([7, device.index], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state.tolist(), device)))
    gpu = SimpleNamespace(device=torch.device("cuda", 1))
    state = PGPSMixin._rng_state(gpu)
    assert state["cuda"].tolist() == [7, 1]
    PGPSMixin._restore_rng(gpu, state)
    assert restored == [([7, 1], torch.device("cuda", 1))]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: pytest.fail("a CPU run touched torch.cuda"))
    cpu = SimpleNamespace(device=torch.device("cpu"))
    assert "cuda" not in PGPSMixin._rng_state(cpu)
    PGPSMixin._restore_rng(cpu, {**state, "cuda": None})
    assert len(restored) == 1


def test_a_checkpoint_of_an_earlier_pgps_resumes_at_its_epoch_and_says_so_once(tmp_path):
    """Checkpoints written before the one batch plan hold the schedule and the next epoch, not the curriculum's
    position: the run resumes at that epoch's first step, with a line in the training log and a warning."""
    from types import SimpleNamespace

    import pgps
    from pgps.nnunet.checkpoints import CheckpointMixin

    schedule = pgps.make_schedule("performance", (64, 32, 32), (32, 32, 32), 2, epochs=6)
    logged = []
    stub = SimpleNamespace(schedule=schedule, print_to_log_file=logged.append)
    rows = [{"epoch": e} for e in range(5)]
    with pytest.warns(UserWarning, match="a checkpoint of an earlier pgps"):
        CheckpointMixin.load_curriculum_state_dict(
            stub, {"schedule": schedule.to_dict(), "epoch": 3, "telemetry": rows}
        )
    assert (stub.curriculum.epoch, stub.curriculum.iteration) == (3, 0)
    assert stub.telemetry_rows == rows[:3] and stub._saved_planner is None
    assert logged[0].startswith("PGPS: a checkpoint of an earlier pgps") and logged[-1].startswith("PGPS: resuming")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_checkpoint_write_on_a_full_disk_says_no_space_left_and_keeps_the_previous_one(tmp_path):
    """torch.save on a full disk fails with "unexpected pos ..."; the checkpoint writer names the cause and the
    file, and the previous checkpoint is intact. The temporary file is a link to /dev/full, where every write
    fails with ENOSPC, as on a full disk."""
    from pgps.io import atomic_write

    path = tmp_path / "checkpoint_latest.pth"
    torch.save({"epoch": 1}, path)
    os.symlink("/dev/full", f"{path}.tmp{os.getpid()}")
    with pytest.raises(OSError, match=rf"no space left on device while writing {re.escape(str(path))}") as raised:
        atomic_write(path, lambda tmp: torch.save({"epoch": 2, "weights": torch.zeros(10**5)}, tmp))
    assert raised.value.errno == errno.ENOSPC and "unexpected pos" in str(raised.value.__cause__)
    assert torch.load(path)["epoch"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == [path.name]

    def broken(tmp: str) -> None:  # a failure with space left is not called a full disk
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("unexpected pos 4 vs 8")

    with pytest.raises(RuntimeError, match="unexpected pos 4 vs 8"):
        atomic_write(path, broken)
