"""One trainer per fold (pgps.nnunet.runlock): a second training of a fold that is being trained stops at once with
one line naming the folder and the holder, exit 2; the lock dies with its process (SIGKILL included)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from pgps.nnunet import runlock
from tests import nnunet_env as nn

HOLD = """
import sys, time
from pgps.nnunet import runlock
runlock.hold(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.FoldBusy, match=rf"{tmp_path} is being trained by host .*, pid {holder.pid}, since"):
            runlock.hold(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    fd = runlock.hold(tmp_path)  # the kernel released the killed holder's lock: no stale lock
    try:
        assert json.loads((tmp_path / runlock.LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        os.close(fd)


WAITER = """
import sys
from pgps.nnunet import runlock
runlock.hold_or_exit(sys.argv[1])
print("got the lock", flush=True)
"""


def test_with_the_wait_option_a_second_trainer_says_whom_it_waits_for_and_takes_over(tmp_path):
    """What the workflow's training rules do (PGPS_WAIT_FOR_LOCK=1): a job started for a fold still being trained
    (a restarted Snakemake resubmitting a running job) waits for it instead of failing, then takes the fold."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        env = {**os.environ, runlock.WAIT_ENV: "1"}
        waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        line = waiter.stderr.readline().strip()
        assert line == (f"PGPS: {tmp_path} is being trained by host {os.uname().nodename}, pid {holder.pid}, "
                        f"since {json.loads((tmp_path / runlock.LOCK_FILE).read_text())['started']}; waiting until "
                        f"it ends ({runlock.WAIT_ENV} is set)")  # fmt: skip
        time.sleep(0.5)
        assert waiter.poll() is None  # still waiting
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    out, _ = waiter.communicate(timeout=30)
    assert waiter.returncode == 0 and out.strip() == "got the lock"


def test_a_second_training_of_a_fold_exits_2_naming_the_first(tiny_nnunet, tmp_path):
    trainer, results = "nnUNetTrainer_PGPS_CPS", tmp_path / "results"
    fold = nn.fold_folder(results, trainer)
    command = [nn.BIN / "nnUNetv2_train", "1", "3d_fullres", "0", "-tr", trainer, "-device", "cpu"]
    quiet = {"PGPS_PROGRESS_EVERY": "0", "PGPS_CARBON": "off"}  # no progress.png, no CodeCarbon: not read here
    long_run = nn.env(tiny_nnunet, results, PGPS_EPOCHS="1000", PGPS_ITERATIONS_PER_EPOCH="2",
                      PGPS_VAL_ITERATIONS="1", nnUNet_n_proc_DA="0", **quiet)  # fmt: skip
    first = subprocess.Popen(command, env=long_run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while f"pid {first.pid}," not in runlock.holder(fold):  # the first run holds the fold
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        first.send_signal(signal.SIGSTOP)  # it keeps the lock, without training on the CPU the second one needs
        second = subprocess.run([*command, "--c"], env=long_run, capture_output=True, text=True, timeout=120)
        assert second.returncode == runlock.EXIT_BUSY, second.stdout[-2000:] + second.stderr[-2000:]
        line = [x for x in second.stderr.splitlines() if x.startswith("PGPS:")]
        assert line == [f"PGPS: {fold} is being trained by {runlock.holder(fold)}; not starting a second training "
                        f"of this fold (set {runlock.WAIT_ENV}=1 to wait for it)"]  # fmt: skip
        assert "Traceback" not in second.stderr and first.poll() is None  # the first run is still there
    finally:
        first.send_signal(signal.SIGKILL)  # as an OOM kill or a scheduler would
        first.wait()
    # no stale lock after the kill: a new trainer of the fold takes it and trains (no final validation)
    after = nn.train_only(
        tiny_nnunet, trainer, results=results, PGPS_EPOCHS="2", PGPS_ITERATIONS_PER_EPOCH="1", **quiet
    )
    assert after.returncode == 0, after.stdout[-2000:] + after.stderr[-2000:]
    assert "Training done" in after.stdout


def test_a_waiting_continuation_reads_the_checkpoint_the_finished_first_training_left(tiny_nnunet, tmp_path):
    """Two sessions of the workflow on one fold (PGPS_WAIT_FOR_LOCK=1): nnU-Net's ``--c`` chooses
    checkpoint_latest.pth while the first training runs, then the second trainer waits for the fold; the first one
    finishes and removes that file. The second continues from what the first left, checkpoint_final.pth: nothing
    left to train, and no epoch trained twice. The first trainer is paused (SIGSTOP) until the second waits."""
    trainer, results = "nnUNetTrainer_PGPS_CPS", tmp_path / "results"
    fold = nn.fold_folder(results, trainer)
    command = [nn.BIN / "nnUNetv2_train", "1", "3d_fullres", "0", "-tr", trainer, "-device", "cpu"]
    env = nn.env(tiny_nnunet, results, PGPS_EPOCHS="3", PGPS_ITERATIONS_PER_EPOCH="2", PGPS_VAL_ITERATIONS="1",
                 PGPS_CHECKPOINT_EPOCHS="1", nnUNet_n_proc_DA="0", PGPS_PROGRESS_EVERY="0", PGPS_CARBON="off",
                 **{runlock.WAIT_ENV: "1"})  # fmt: skip
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with open(first_log, "w") as out:
        first = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    second = None
    try:
        deadline = time.monotonic() + 120
        while not (fold / "checkpoint_latest.pth").exists():  # the first run's epoch 0 is checkpointed
            assert first.poll() is None and time.monotonic() < deadline, first_log.read_text()[-3000:]
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGSTOP)
        with open(second_log, "w") as out:
            second = subprocess.Popen([*command, "--c"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        while "waiting until it ends" not in second_log.read_text():
            assert second.poll() is None and time.monotonic() < deadline, second_log.read_text()[-3000:]
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=120) == 0, first_log.read_text()[-3000:]
        assert not (fold / "checkpoint_latest.pth").exists() and (fold / "checkpoint_final.pth").exists()
        assert second.wait(timeout=120) == 0, second_log.read_text()[-3000:]
    finally:
        for proc in (first, second):
            if proc is not None:
                nn.kill_session(proc.pid)
    text = second_log.read_text()
    assert "PGPS: resuming at epoch 3," in text and not re.search(r": Epoch \d+\s*$", text, re.M), text[-3000:]
