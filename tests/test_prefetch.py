"""The CPU loader overlapped with compute (#29): without loader workers, a PGPS trainer on the CPU makes the next
batch of the epoch in a background thread while the step computes. Measured on the tests' tiny dataset: where each
batch was made, and that the network receives exactly the batches (data and targets, bit for bit) of a run without
prefetching, also across a resume (tests/test_resume.py resumes with the default, prefetching)."""

from __future__ import annotations

import json

import pytest

from tests import nnunet_many as many

pytestmark = pytest.mark.nnunet

RUN = """
import hashlib, json, sys, threading, torch
from nnunetv2.run.run_training import get_trainer_from_args
from pgps.nnunet.loading import sampling
trainer = get_trainer_from_args("1", "3d_fullres", 0, sys.argv[1], device=torch.device("cpu"))
trainer.prefetch_batches = sys.argv[2] == "1"
made = []
generate = getattr(sampling.PlannedDataLoader.generate_train_batch, "unrecorded",
                   sampling.PlannedDataLoader.generate_train_batch)  # an earlier run in this process wrapped it
def recorded(self, *args, **kwargs):
    made.append(threading.current_thread().name.split("_")[0])
    return generate(self, *args, **kwargs)
recorded.unrecorded = generate
sampling.PlannedDataLoader.generate_train_batch = recorded
received = []
step = trainer.train_step
def train_step(batch):
    digest = hashlib.sha256()
    for t in [batch["data"], *(batch["target"] if isinstance(batch["target"], list) else [batch["target"]])]:
        digest.update(t.detach().contiguous().numpy().tobytes())
    received.append([trainer.current_epoch, digest.hexdigest()[:16]])
    return step(batch)
trainer.train_step = train_step
trainer.run_training()
print(json.dumps({"made": made, "received": received}))
"""


TRAINERS = ["nnUNetTrainer_PGPS_CPS", "nnUNetTrainer_PGPS_Performance"]


@pytest.fixture(scope="module")
def runs(tiny_nnunet, tmp_path_factory) -> dict:
    """Every trainer with and without prefetching, one after another in one process (:mod:`tests.nnunet_many`);
    no progress.png and no CodeCarbon, which the test does not read."""
    work = tmp_path_factory.mktemp("prefetch")
    settings = {"PGPS_EPOCHS": "4", "PGPS_ITERATIONS_PER_EPOCH": "3", "PGPS_VAL_ITERATIONS": "1", "PGPS_SEED": "3",
                "PGPS_PROGRESS_EVERY": "0", "PGPS_CARBON": "off"}  # fmt: skip
    trainings = {f"{t}_{p}": (t, work / f"{t}_{p}", [str(p)], settings) for t in TRAINERS for p in (1, 0)}
    done = many.train_many(tiny_nnunet, work, trainings, script=RUN)
    for name, run in done.items():
        assert run["status"] == 0, (name, run["log"][-3000:])
    return {name: json.loads(run["log"].strip().splitlines()[-1]) for name, run in done.items()}


@pytest.mark.parametrize("trainer", TRAINERS)
def test_the_next_batch_is_made_while_the_step_computes_and_is_the_same_batch(runs, trainer):
    prefetched, plain = runs[f"{trainer}_1"], runs[f"{trainer}_0"]
    assert prefetched["received"] == plain["received"]  # the same batches, bit for bit, in the same epochs
    assert len(plain["received"]) == 4 * 3 and set(plain["made"]) == {"MainThread"}
    # in each epoch the first batch is made in the training thread, the next ones in the prefetch thread (after a
    # stage change too: a stage's first batch, with its new loader, is made in the training thread)
    threads = prefetched["made"]
    assert len(threads) == 12 and threads[0::3] == ["MainThread"] * 4
    assert all(name == "pgps-prefetch" for i, name in enumerate(threads) if i % 3), threads
