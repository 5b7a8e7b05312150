"""Graceful stop (pgps.nnunet.preemption) without a cluster: a real ``nnUNetv2_train`` of the tiny dataset gets
SIGUSR1 or SIGTERM from this test while it trains, checkpoints the iteration it finished and exits 75; ``--c``
resumes at that epoch and iteration and ends where the uninterrupted training ends (same weights, same
telemetry).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from pgps import processes
from tests import nnunet_env as nn
from tests.test_resume import FAULTS, TRAINER, read_telemetry, uninterrupted

pytestmark = pytest.mark.nnunet

EPOCHS, ITERATIONS = 4, 4
SHORT = {"PGPS_EPOCHS": str(EPOCHS), "PGPS_ITERATIONS_PER_EPOCH": str(ITERATIONS), "PGPS_VAL_ITERATIONS": "1",
         "PGPS_SEED": "0", "nnUNet_n_proc_DA": "0", "PGPS_PROGRESS_EVERY": "0"}  # fmt: skip
"""Short runs; no progress.png (matplotlib, 0.6 s of CPU an epoch; nothing here reads it)."""


def train_and_signal(root: Path, results: Path, sig: int, after: int, record: Path, log: Path, group: bool = False,
                     **extra: str) -> tuple[int, int]:  # fmt: skip
    """``nnUNetv2_train --c`` with ``sig`` sent once ``after`` training iterations have started (the fault
    recorder's lines); its exit status and the iterations it had started. ``group``: the signal goes to the
    trainer's whole process group, its loader workers included, as SLURM sends it; ``extra``: more environment."""
    env = nn.env(root, results, **{**SHORT, **extra}, PGPS_FAULT_RECORD=str(record),
                 PYTHONPATH=os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    command = [nn.BIN / "nnUNetv2_train", "1", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu", "--c"]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if record.exists() and len(record.read_text().splitlines()) >= after:
                os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
                break
            time.sleep(0.02)
        status = proc.wait(timeout=90 if group else 300)  # a group signal: the exit must not wait for the workers
        if group:  # nothing of the training left: its workers ended with it
            time.sleep(0.5)
            assert not processes.live_members(session=proc.pid), processes.live_members(session=proc.pid)
    finally:
        nn.kill_session(proc.pid)
    return status, len(record.read_text().splitlines())


@pytest.fixture(scope="module")
def reference(tiny_nnunet, tmp_path_factory):
    return uninterrupted(tiny_nnunet, tmp_path_factory.mktemp("uninterrupted") / "results", **SHORT)


def stop(root: Path, work: Path, sig: int, group: bool = False, **extra: str) -> tuple[Path, int, int]:
    """Train with ``sig`` sent after 6 iterations started: the fold folder and the epoch and iteration checkpointed."""
    from pgps.nnunet.preemption import EXIT_STOPPED

    results, record = work / "results", work / "batches.txt"
    folder = nn.fold_folder(results, TRAINER)
    status, started = train_and_signal(root, results, sig, 6, record, work / "first.log", group, **extra)
    log = (work / "first.log").read_text()
    assert status == EXIT_STOPPED, log[-4000:]
    checkpoint = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    partial = checkpoint["logging"]["pgps_curriculum"]["partial_epoch"]
    epoch, done = partial["epoch"], partial["iterations"]
    # every iteration that started was finished and is in the checkpoint: none lost
    assert epoch * ITERATIONS + done == started >= 6, (epoch, done, started)
    assert checkpoint["current_epoch"] == epoch and epoch < EPOCHS
    assert f"{signal.Signals(sig).name} received; stopped after iteration {done} of epoch {epoch}" in log
    assert not list(folder.glob("*.tmp*")), "a stray temporary checkpoint after the graceful stop"
    return folder, epoch, done


def test_sigterm_stops_after_the_iteration_with_it_checkpointed(tiny_nnunet, tmp_path):
    stop(tiny_nnunet, tmp_path, signal.SIGTERM)


def test_sigterm_to_the_trainer_and_its_workers_stops_it_and_ends_them(tiny_nnunet, tmp_path):
    """As SLURM signals a job (every process of it): with 2 loader workers, which ignore SIGTERM under the trainer,
    the trainer still stops after its iteration and exits 75 at once, its workers ended (multiprocessing's exit
    handler would otherwise wait for them until the scheduler's SIGKILL); nothing of the training is left."""
    started = time.monotonic()
    stop(tiny_nnunet, tmp_path, signal.SIGTERM, group=True, nnUNet_n_proc_DA="2")
    log = (tmp_path / "first.log").read_text()
    assert time.monotonic() - started < 120, log[-3000:]


def test_after_sigusr1_the_resume_ends_as_the_uninterrupted_run(tiny_nnunet, reference, tmp_path):
    from pgps.nnunet.carbon import COLUMNS as CARBON_COLUMNS
    from pgps.nnunet.telemetry import TELEMETRY_COLUMNS

    folder, epoch, done = stop(tiny_nnunet, tmp_path, signal.SIGUSR1)
    again = nn.train(tiny_nnunet, TRAINER, "--c", results=tmp_path / "results", **SHORT)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert f"resuming at epoch {epoch}, iteration {done}," in again.stdout
    a = torch.load(reference / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    b = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    for key, value in a["network_weights"].items():
        assert torch.equal(value, b["network_weights"][key]), key
    measured = {"epoch_time_s", "compile_time_s", *CARBON_COLUMNS}  # clocks and energy: never repeat
    same = [c for c in TELEMETRY_COLUMNS if c not in measured]
    rows = [[[r[c] for c in same] for r in read_telemetry(f)] for f in (reference, folder)]
    assert rows[0] == rows[1]
    assert [int(r["epoch"]) for r in read_telemetry(folder)] == list(range(EPOCHS))
    assert [float(x) for x in a["logging"]["train_losses"]] == [float(x) for x in b["logging"]["train_losses"]]
