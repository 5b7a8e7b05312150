"""No orphaned workers: a killed training leaves no process behind, and ``pgps gpu-slot`` frees its GPU only when
the whole process group of its command is gone. Every test counts the live processes afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pgps import processes
from pgps.experiments import gpu_slot
from pgps.processes import group_alive, live_members
from tests import nnunet_env as nn

FAULTS = Path(__file__).resolve().parent / "faults"


def settle(session: int, seconds: float) -> list[int]:
    """The processes of a session still alive after waiting up to ``seconds`` for them to end."""
    deadline = time.monotonic() + seconds
    while (left := live_members(session=session)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts processes in /proc (Linux)")

# the command gpu-slot runs: starts a helper that ignores SIGTERM (a worker nobody ends), then waits
COMMAND = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    helper = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                               "signal.SIG_IGN); print('helper', flush=True); time.sleep(600)"], stdout=sys.stdout)
    time.sleep(0.3)
    print("command", os.getpid(), os.getpgid(0), helper.pid, flush=True)
    time.sleep(600)
""")


def start_gpu_slot(tmp_path: Path, grace: float) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgps", "gpu-slot", "--slots", "1", "--lock-dir", str(tmp_path / "locks"), "--grace",
         str(grace), "--", sys.executable, "-c", COMMAND], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # fmt: skip
    lines = [proc.stdout.readline().split() for _ in range(2)]
    (_, command, group, helper) = next(line for line in lines if line[0] == "command")
    assert int(command) == int(group) != os.getpgid(0)  # the command leads a process group of its own
    return proc, int(group), int(helper)


def test_gpu_slot_frees_the_gpu_only_when_the_command_group_is_gone(tmp_path):
    grace = 1.5
    proc, group, helper = start_gpu_slot(tmp_path, grace)
    try:
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # a scheduler cancelling the job: forwarded, the command ends at once
        deadline = start + grace / 2
        while time.monotonic() < deadline:  # the helper ignores SIGTERM: the slot stays taken meanwhile
            assert proc.poll() is None
            with pytest.raises(TimeoutError):
                gpu_slot.acquire(1, tmp_path / "locks", poll_s=0.01, timeout_s=0)
            time.sleep(0.1)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM
        assert time.monotonic() - start >= grace
        assert f"outlived it by {grace:g} s and were killed" in err
        # the helper was SIGKILLed before the slot was freed
        assert not live_members(group=group) and not group_alive(group)
        _, lock = gpu_slot.acquire(1, tmp_path / "locks", timeout_s=0)
        lock.release()
    finally:
        nn.kill_session(proc.pid)
    assert helper not in live_members(session=proc.pid)


def test_a_sigkilled_gpu_slot_takes_its_command_with_it(tmp_path):
    proc, command, helper = start_gpu_slot(tmp_path, 0.5)
    try:
        proc.send_signal(signal.SIGKILL)  # the wrapper itself killed: the kernel sends its command SIGTERM
        proc.wait()
        deadline = time.monotonic() + 10
        while command in live_members(group=command) and time.monotonic() < deadline:
            time.sleep(0.1)
        # (the helper ignores SIGTERM)
        assert live_members(group=command) == [helper], "the command outlived its gpu-slot"
    finally:
        nn.kill_session(proc.pid)


def test_shared_lock_folders_are_usable_by_every_user(tmp_path):
    folder = tmp_path / "shared" / "locks"
    _, lock = gpu_slot.acquire(1, folder, shared=True)
    try:
        assert (folder.stat().st_mode & 0o7777, (folder / "gpu0.lock").stat().st_mode & 0o777) == (0o777, 0o666)
    finally:
        lock.release()


@pytest.mark.nnunet
def test_a_sigkilled_trainer_leaves_no_process_behind(tiny_nnunet, tmp_path):
    """SIGKILL (as an OOM kill does) the trainer while its two loader workers run: within seconds nothing of the
    training is left (the kernel ends the workers with their parent: pgps.processes.end_with_parent)."""
    command = [nn.BIN / "nnUNetv2_train", "1", "3d_fullres", "0", "-tr", "nnUNetTrainer_PGPS_Performance", "-device",
               "cpu"]  # fmt: skip
    env = nn.env(tiny_nnunet, tmp_path / "results", PGPS_EPOCHS="2", PGPS_ITERATIONS_PER_EPOCH="2",
                 PGPS_VAL_ITERATIONS="1", nnUNet_n_proc_DA="2", OMP_NUM_THREADS="1", PYTHONPATH=str(FAULTS),
                 PGPS_FAULT_KILL="iteration:1:1")  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL, out[-3000:]
        assert settle(proc.pid, 10) == [], "processes of the killed training still run"
    finally:
        nn.kill_session(proc.pid)


def _marker() -> int | None:
    """In a pool worker: the mark its parent set at run time (a forked worker has it, a spawned one does not)."""
    return getattr(processes, "pgps_test_mark", None)


def test_spawn_as_fork_forks_only_inside_its_block_and_only_when_enabled(monkeypatch):
    import multiprocessing

    monkeypatch.setattr(processes, "pgps_test_mark", os.getpid(), raising=False)
    with processes.spawn_as_fork():
        with multiprocessing.get_context("spawn").Pool(1) as pool:  # as nnU-Net's export pool is made
            assert pool.apply(_marker) == os.getpid()
        assert multiprocessing.get_context("forkserver").get_start_method() == "forkserver"
    assert multiprocessing.get_context("spawn").get_start_method() == "spawn"
    with processes.spawn_as_fork(enabled=False), multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_marker) is None
