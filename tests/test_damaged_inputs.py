"""Damaged training inputs (pgps.nnunet.inputs): a file cut short stops the training with one line naming it, exit 2,
whether the trainer's process or a loader worker reads it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import nnunet_env as nn

pytestmark = pytest.mark.nnunet
TRAINER = "nnUNetTrainer_PGPS_Performance"


@pytest.fixture
def copy(tiny_nnunet, tmp_path) -> Path:
    for sub in ("raw", "preprocessed"):
        shutil.copytree(tiny_nnunet / sub, tmp_path / sub)
    return tmp_path


def cut_short(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def train(root: Path) -> subprocess.CompletedProcess:
    command = [nn.BIN / "nnUNetv2_train", "1", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"]
    env = nn.env(root, root / "results", PGPS_EPOCHS="2", PGPS_ITERATIONS_PER_EPOCH="1", PGPS_VAL_ITERATIONS="1",
                 nnUNet_n_proc_DA="0")  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("nnUNetPlans_3d_fullres/case_001.pkl", "not a complete pickle (pickle data was truncated); is it cut short?"),
        ("nnUNetPlans.json", "not valid JSON ("),
        ("splits_final.json", "not valid JSON ("),
    ],
)
def test_a_damaged_input_of_training_is_one_line_naming_it(copy, name, what):
    pre = copy / "preprocessed" / nn.DATASET
    if name == "splits_final.json":
        (pre / name).write_text(json.dumps([{"train": [f"case_00{i}" for i in range(5)], "val": ["case_005"]}]))
    cut_short(pre / name)
    proc = train(copy)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"PGPS: damaged input: {pre / name}: {what}")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


WORKER = """
import os, sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
from pgps.nnunet.inputs import DamagedInput
trainer = get_trainer_from_args("1", "3d_fullres", 0, sys.argv[1], device=torch.device("cpu"))
trainer.initialize()
trainer.dataset_tr, _ = trainer.get_tr_and_val_datasets()  # as get_dataloaders, without its check of every case
loader = trainer.make_train_loader(0)
for case in trainer.dataset_tr.identifiers:  # damaged after the start: read in the workers
    path = os.path.join(trainer.preprocessed_dataset_folder, case + ".pkl")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
try:
    for step in range(trainer.num_iterations_per_epoch):
        loader.take(step)
except DamagedInput as exc:
    print("named:", exc, flush=True)
    loader.close()
"""


def test_a_case_damaged_during_training_is_named_by_the_trainer_not_a_worker_traceback(copy):
    env = nn.env(copy, copy / "results", PGPS_EPOCHS="4", PGPS_ITERATIONS_PER_EPOCH="4", nnUNet_n_proc_DA="2",
                 PYTHONPATH=str(Path(__file__).resolve().parents[1]))  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", WORKER, TRAINER], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    named = [line for line in proc.stdout.splitlines() if line.startswith("named:")]
    folder = copy / "preprocessed" / nn.DATASET / "nnUNetPlans_3d_fullres"
    assert len(named) == 1 and named[0].startswith(f"named: {folder}{os.sep}case_00"), proc.stdout[-2000:]
    assert named[0].endswith(".pkl: not a complete pickle (pickle data was truncated); is it cut short?")
    assert "Traceback" not in proc.stderr and "Exception in background worker" not in proc.stdout + proc.stderr
