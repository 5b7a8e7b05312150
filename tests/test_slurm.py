"""``snakemake --profile workflow/profiles/slurm`` against a real SLURM controller: the single-node cluster of
``workflow/scripts/slurm_local.sh`` (slurmctld, slurmd and munged on this machine, two fake GPUs as GRES).

Not part of ``make test`` (marker ``slurm``): ``make test-slurm`` runs this file, and CI runs both. Skipped with
one line where the cluster cannot start (not root, no apt-get to install slurm-wlm and munge).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests import nnunet_env as nn
from tests.test_resume import FAULTS, copy_nnunet, fold_dir, read_telemetry, workflow_config

pytestmark = [pytest.mark.slurm, pytest.mark.nnunet]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "workflow" / "scripts" / "slurm_local.sh"
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
# the plugin's first status check after 3 s (default 40 s), then every 3 s (tests/faults/sitecustomize.py caps the
# plugin's growing interval, 3 + 10 k s up to 180 s, in the snakemake processes of these tests)
STATUS_SECONDS = 3
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", str(STATUS_SECONDS), "--latency-wait", "5"]


def free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free consecutive ports")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """The running cluster's environment (SLURM_CONF, the profile's settings for it); stopped at the end."""
    folder = tmp_path_factory.mktemp("slurm")
    started = time.monotonic()
    env = {**os.environ, "SLURM_LOCAL_PORT": str(free_port_pair())}
    proc = subprocess.run(["bash", SCRIPT, "start", folder], env=env, capture_output=True, text=True)
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\nlocal SLURM cluster up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    exports = dict(item.split("=", 1) for item in proc.stdout.split()[1:])
    cluster_env = {**os.environ, **exports, "PGPS_GPU_MODEL": "a100", "PGPS_CPUS_PER_GPU": "1",
                   "PGPS_TRAIN_MEM_MB": "4000", "PGPS_TEST_SLURM_STATUS_SECONDS": str(STATUS_SECONDS),
                   "PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]),
                   "PATH": f"{nn.BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}  # fmt: skip
    yield {"env": cluster_env, "folder": folder}
    subprocess.run(["scancel", "--full", "--user", "root"], env=cluster_env, capture_output=True, timeout=60)
    subprocess.run(["bash", SCRIPT, "stop", folder], env=env, capture_output=True, timeout=60)
    # slurmd's cached configuration is gone with the cluster (else every later snakemake start waits 10 s: the
    # executor plugin asks the stopped controller for its configuration)
    cached = Path("/run/slurm/conf/slurm.conf")
    assert not (cached.exists() and "ClusterName=pgpslocal" in cached.read_text()), cached


def slurm(cluster, *args: str) -> str:
    return subprocess.run(list(args), env=cluster["env"], capture_output=True, text=True, check=True).stdout


def jobs(cluster) -> dict[str, dict[str, str]]:
    """Every job the controller still knows (MinJobAge: 10 minutes): id -> scontrol's fields."""
    out = slurm(cluster, "scontrol", "show", "job", "--oneliner")
    found = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+(?::\w+)?)=(\S*)", line))
        if "JobId" in fields:
            found[fields["JobId"]] = {**fields, "line": line}
    return found


def start(work: Path, cluster, *args, env: dict | None = None, log: str = "snakemake.log",
          profile: bool = True) -> subprocess.Popen:  # fmt: skip
    """Snakemake in ``work`` with the SLURM profile (``profile``: added; else ``args`` name it), quick status checks."""
    command = [SNAKEMAKE, "-s", ROOT / "Snakefile", "-d", work, *FAST_STATUS, *args]
    if profile:
        command[5:5] = ["--profile", PROFILE]
    with open(work / log, "w") as out:
        proc = subprocess.Popen(command, env={**cluster["env"], **(env or {})}, stdout=out, cwd=ROOT,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    STARTED.append(proc)
    return proc


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_session_left():
    """Every Snakemake a test started is killed at its end, also when the test fails before finishing it."""
    yield
    while STARTED:
        nn.kill_session(STARTED.pop().pid)


def finish(proc: subprocess.Popen, work: Path, log: str = "snakemake.log", timeout: float = 1500) -> tuple[int, str]:
    try:
        status = proc.wait(timeout=timeout)
    finally:
        nn.kill_session(proc.pid)
    return status, (work / log).read_text()


def article(work: Path, tiny: Path, **settings) -> Path:
    copy_nnunet(tiny, work / "nnunet")
    return workflow_config(work, work / "nnunet", "article", **settings)


def readme_trial() -> list[str]:
    """The README's local trial of the profile: its snakemake command's arguments (tests/test_readme.py's reading);
    its cluster commands are the script this file's fixture runs."""
    from tests.test_readme import readme_commands

    script = [c for c in readme_commands("sudo") if c[:1] == ["workflow/scripts/slurm_local.sh"]]
    assert sorted(c[1] for c in script) == ["start", "stop"], script
    commands = [c for c in readme_commands("snakemake") if "workflow/configs/slurm_tiny.yaml" in c]
    assert len(commands) == 1, commands
    return commands[0]


def test_the_readme_trial_runs_the_demo_through_the_slurm_profile(cluster, tmp_path):
    """The README's command as written (in a working directory of its own): every job through sbatch."""
    proc = start(tmp_path, cluster, *readme_trial(), profile=False)
    status, log = finish(proc, tmp_path)
    assert status == 0, log[-6000:]
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    known = jobs(cluster)
    assert all(known[j]["JobState"] == "COMPLETED" for j in submitted), log[-6000:]
    rules = re.findall(r"submitted with SLURM jobid \d+ \(log: \S+/slurm_logs/rule_(\w+?)/", log)
    assert len(rules) == len(submitted), log[-6000:]  # the jobs not submitted are the workflow's local rules
    assert {"demo_synthesize", "demo_preprocess", "demo_train"} <= set(rules), rules
    results = tmp_path / "results" / "slurm_tiny"
    train_log = next((results / "logs" / "demo").glob("train_*.attempts.log")).read_text()
    header = re.findall(r"== pgps: attempt started \S+ on \S+ \(SLURM job (\d+)\)", train_log)
    assert len(header) == 1 and header[0] in submitted, train_log[:2000]
    assert "Mean Validation Dice" in train_log, train_log[-3000:]
    assert any((results / "figures" / "demo").rglob("*.csv"))


def test_a_cancelled_job_leaves_no_process_behind(cluster, tmp_path):
    """A process of a job whose parent ended first (reparented to init) is still the job's: scancel ends it. The
    local cluster tracks a job by its process group; with proctrack/linuxproc such a process outlived its job (a
    trainer started after its Snakemake was killed by a requeue ran on for 37 minutes)."""
    marker = tmp_path / "orphan.pid"
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\n( sleep 600 & echo $! > {marker}.tmp; mv {marker}.tmp {marker} )\nsleep 600\n")
    job = slurm(cluster, "sbatch", "--parsable", "-o", str(tmp_path / "job.out"), str(script)).strip()
    wait_for(marker.exists, 60, "the job's background process")
    pid = int(marker.read_text())

    def state() -> tuple[str, int] | None:  # the process's state and parent, None once it is gone
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return None
        return (fields[0], int(fields[1])) if fields[0] != "Z" else None

    assert state(), f"process {pid} of job {job} ended before the cancel"
    slurm(cluster, "scancel", job)
    wait_for(lambda: state() is None, 30, f"process {pid} of cancelled job {job} to end")


def test_article_training_jobs_carry_their_gpu_request(cluster, tiny_nnunet, tmp_path):
    """One 1-GPU run and one 2-GPU run (``-num_gpus 2``): both accepted with --gpus=a100:N --cpus-per-gpu=1 and
    started on the node; the 1-GPU one trains on the CPU to the end, the 2-GPU one reaches nnU-Net, whose DDP
    needs CUDA."""
    config = article(tmp_path, tiny_nnunet, epochs=2, iterations_per_epoch=2, val_iterations=1)
    settings = yaml.safe_load(config.read_text())
    settings["article"]["experiments"]["ddp"] = {"datasets": ["Tiny"], "modes": ["cps"], "folds": [0], "gpus": 2,
                                                 "variants": [{"patch_size": nn.PATCH, "batch_size": 2}]}  # fmt: skip
    config.write_text(yaml.safe_dump(settings))
    dry = subprocess.run([SNAKEMAKE, "-s", ROOT / "Snakefile", "-d", tmp_path, "-n", "--configfile", config],
                         capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    outputs = set(re.findall(r"\S+/fold_0/validation/summary\.json", dry.stdout))
    one = str(fold_dir(tmp_path / "nnunet") / "validation" / "summary.json")
    two = next((o for o in outputs if "nnUNetTrainer_PGPS_CPS" in o), None)
    assert one in outputs and two, dry.stdout[-4000:] + dry.stderr[-4000:]
    one, two = Path(one), Path(two)
    proc = start(tmp_path, cluster, one, two, "--configfile", config, "--retries", "0")
    status, log = finish(proc, tmp_path)
    assert status != 0 and one.exists() and not two.exists(), log[-6000:]
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    trainings = {j: f for j, f in jobs(cluster).items() if j in submitted and "rule_train" in f.get("Comment", "")}
    assert len(trainings) == 2, log[-6000:]
    by_gpus = {}
    for fields in trainings.values():
        gpus = re.search(r"TresPerJob=gres:gpu:a100:(\d)", fields["line"])
        assert gpus and "TresPerJob" in fields["line"], fields["line"]
        assert re.search(r"CpusPerTres=gres:gpu:1\b", fields["line"]), fields["line"]
        assert fields["NodeList"] == socket.gethostname().split(".")[0], fields["line"]
        by_gpus[int(gpus[1])] = fields
    assert by_gpus[1]["JobState"] == "COMPLETED" and by_gpus[2]["JobState"] == "FAILED"
    logs = {p.name: p.read_text() for p in (tmp_path / "results" / "logs" / "train").rglob("*.attempts.log")}
    ddp = next(text for name, text in logs.items() if "CPS" in name)
    assert re.search(r"nnUNetv2_train 1 3d_fullres\S* 0 -tr nnUNetTrainer_PGPS_CPS .*-num_gpus 2", log), log[-6000:]
    assert "only implemented for cuda devices" in ddp, ddp[-3000:]


def slow_article(work: Path, tiny: Path, epochs: int = 30, iterations: int = 4) -> Path:
    """A training long enough to be interrupted (about a second per epoch on 2 cores), checkpointed every epoch."""
    return article(work, tiny, epochs=epochs, iterations_per_epoch=iterations, val_iterations=1, checkpoint_epochs=1)


def paced(seconds: float, **env: str) -> dict[str, str]:
    """The environment of a training whose every iteration lasts at least ``seconds`` (tests/faults, on the cluster
    environment's PYTHONPATH): it runs for a known time however loaded the machine is, sleeping, not computing."""
    return {"PGPS_FAULT_PACE": str(seconds), **env}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def telemetry_epochs(folder: Path) -> list[int]:
    return [int(r["epoch"]) for r in read_telemetry(folder)] if (folder / "pgps_telemetry.csv").exists() else []


def test_a_time_limit_kill_loses_at_most_one_iteration_and_the_retry_resumes(cluster, tiny_nnunet, tmp_path):
    """A 1-minute limit (no warning signal): SLURM sends SIGTERM at the limit; the trainer checkpoints the iteration
    it finished and exits 75; Snakemake's retry resumes at that iteration. The fault recorder writes a line for
    every training iteration started, so the iterations trained twice are the lines beyond epochs x iterations.
    The training is paced to at least 75 s (300 iterations of 0.25 s), past the limit on any machine."""
    epochs, iterations = 75, 4
    config = slow_article(tmp_path, tiny_nnunet, epochs=epochs, iterations=iterations)
    target = fold_dir(tmp_path / "nnunet") / "validation" / "summary.json"
    record = tmp_path / "batches.txt"
    env = paced(0.25, PGPS_SLURM_SIGNAL_SECONDS="0", PGPS_FAULT_RECORD=str(record))
    limit = ["--set-resources", "train:runtime=1", "train:mem_mb=4000"]  # replaces the profile's train resources
    proc = start(tmp_path, cluster, target, "--configfile", config, *limit, env=env)
    status, log = finish(proc, tmp_path)
    train_log = next((tmp_path / "results" / "logs" / "train").rglob("*.attempts.log")).read_text()
    assert status == 0, log[-4000:] + train_log[-4000:]
    attempts = re.findall(r"SLURM job (\d+)\)", train_log)
    assert len(attempts) >= 2, train_log[-4000:]
    # SLURM's verdict as the workflow saw it (squeue forgets a job MinJobAge after its end)
    assert f"SLURM-job '{attempts[0]}' failed, SLURM status is: 'TIMEOUT'" in log, log[-4000:]
    stops = re.findall(r"SIGTERM received; stopped after iteration (\d+) of epoch (\d+)", train_log)
    resumes = re.findall(r"resuming at epoch (\d+), iteration (\d+),", train_log)
    assert stops and [(e, i) for i, e in stops] == resumes, train_log[-6000:]
    trained = len(record.read_text().splitlines())
    assert trained - epochs * iterations <= len(stops), (trained, len(stops))  # at most one iteration per stop
    assert telemetry_epochs(fold_dir(tmp_path / "nnunet")) == list(range(epochs))


def test_scontrol_requeue_resumes_at_the_checkpointed_iteration(cluster, tiny_nnunet, tmp_path):
    """The training is paced (at least 0.1 s per iteration): the requeue after epoch 5 finds it running."""
    epochs = 20
    config = slow_article(tmp_path, tiny_nnunet, epochs=epochs)
    folder = fold_dir(tmp_path / "nnunet")
    target = folder / "validation" / "summary.json"
    proc = start(tmp_path, cluster, target, "--configfile", config, env=paced(0.1))
    wait_for(lambda: len(telemetry_epochs(folder)) >= 5, 900, "epoch 5 of the training job")
    job = next(j for j, f in jobs(cluster).items() if f["JobState"] == "RUNNING" and "rule_train" in f["Comment"])
    slurm(cluster, "scontrol", "requeue", job)
    wait_for(lambda: jobs(cluster)[job]["JobState"] == "PENDING", 120, "the requeued job to be pending")
    slurm(cluster, "scontrol", "update", f"JobId={job}", "StartTime=now")  # skip the requeue delay
    status, log = finish(proc, tmp_path)
    train_log = next((tmp_path / "results" / "logs" / "train").rglob("*.attempts.log")).read_text()
    assert status == 0, log[-4000:] + train_log[-4000:]
    assert re.findall(r"SLURM job (\d+)\)", train_log) == [job, job], train_log[:3000]
    stopped = re.search(r"SIGTERM received; stopped after iteration (\d+) of epoch (\d+)", train_log)
    assert stopped, train_log[-6000:]
    assert f"resuming at epoch {stopped[2]}, iteration {stopped[1]}," in train_log
    assert telemetry_epochs(folder) == list(range(epochs))


def test_a_second_session_does_not_train_a_running_fold_again(cluster, tiny_nnunet, tmp_path):
    """Two Snakemake sessions (two working directories) on one results folder: the second one's training job of
    the fold the first one trains waits for the fold's run lock (the workflow's PGPS_WAIT_FOR_LOCK), then finds the
    training finished (only nnU-Net's final validation runs again): no epoch is trained twice."""
    epochs = 60
    config = slow_article(tmp_path, tiny_nnunet, epochs=epochs)
    folder = fold_dir(tmp_path / "nnunet")
    target = folder / "validation" / "summary.json"
    first = start(tmp_path, cluster, target, "--configfile", config)
    wait_for(lambda: len(telemetry_epochs(folder)) >= 2, 900, "the first session's training")
    other = tmp_path / "other"
    other.mkdir()
    second = start(other, cluster, target, "--configfile", config)
    status1, log1 = finish(first, tmp_path)
    status2, log2 = finish(second, other)
    assert status1 == 0, log1[-4000:]
    assert status2 == 0, log2[-4000:]
    train_log = next((tmp_path / "results" / "logs" / "train").rglob("*.attempts.log")).read_text()
    attempts = re.findall(r"SLURM job (\d+)\)", train_log)
    assert len(attempts) == 2 and attempts[0] != attempts[1], train_log[:3000]
    assert "is being trained by host" in train_log and "waiting until it ends" in train_log, train_log[-4000:]
    assert f"resuming at epoch {epochs}," in train_log  # checkpoint_final: no training left
    assert len(re.findall(r": Epoch 0\s*$", train_log, re.M)) == 1
    assert telemetry_epochs(folder) == list(range(epochs))
