"""pgps.torch in a plain PyTorch loop on `pgps synth` data: shapes per step, foreground share, strategies,
exact resume, worker processes, and two processes with torch.distributed (gloo) on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sitk = pytest.importorskip("SimpleITK")

import pgps  # noqa: E402
import pgps.torch  # noqa: E402
from pgps.cli import main  # noqa: E402
from pgps.sampling import forced_foreground  # noqa: E402
from tests.loops import drive  # noqa: E402

DataLoader = torch.utils.data.DataLoader
# performance mode, P_max 16^3, step 8: 8^3 x 16, 16x8x8 x 8, 16x16x8 x 4, 16^3 x 2; 2 iterations per epoch
SCHEDULE = pgps.make_schedule("performance", (16, 16, 16), (8, 8, 8), 2, epochs=4, iterations_per_epoch=2)
DDP_WORKER = Path(__file__).parent / "ddp_worker.py"


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A `pgps synth` dataset (NIfTI, nnU-Net's raw layout): 6 lesion-like cases of about 24^3."""
    out = tmp_path_factory.mktemp("raw")
    argv = ["synth", "--preset", "lesions", "--out", str(out), "--dataset-id", "7", "--cases", "6",
            "--shape", "24", "24", "24", "--shape-jitter", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    return out / "Dataset007_SynthLesions"


def load_case(folder: Path):
    """``load(i)`` for PatchDataset: reads case i from disk when a worker needs it."""

    def load(i: int):
        read = [sitk.GetArrayFromImage(sitk.ReadImage(str(folder / sub / f"case_{i:03d}{end}.nii.gz")))
                for sub, end in (("imagesTr", "_0000"), ("labelsTr", ""))]  # fmt: skip
        return read[0], read[1]

    return load


def run(raw, schedule=SCHEDULE, steps=None, state=None, workers=0, train=False, **sampler_kw):
    """Iterate the curriculum (optionally training a tiny network) and record every batch."""
    sampler = pgps.torch.CurriculumBatchSampler(schedule, num_cases=6, seed=4, **sampler_kw)
    if state is not None:
        sampler.load_state_dict(json.loads(json.dumps(state)))  # a checkpoint's dict survives JSON
    dataset = pgps.torch.PatchDataset(load=load_case(raw), num_cases=6)
    extra = {"persistent_workers": True, "prefetch_factor": 2} if workers else {}
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=pgps.torch.collate_patches, num_workers=workers,
                        **extra)  # fmt: skip
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 2, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    pids = set()

    def train_step(batch):
        loss = torch.nn.functional.cross_entropy(net(batch["image"]), batch["label"][:, 0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def workers_of(batch):
        if workers:
            pids.add(tuple(w.pid for w in loader._iterator._workers))

    batches, losses = drive(sampler, loader, steps, train_step if train else None, workers_of)
    return SimpleNamespace(sampler=sampler, batches=batches, losses=losses, pids=pids)


def same(a: list[dict], b: list[dict]) -> bool:
    keys = ("image", "label", "row", "case", "forced")
    return len(a) == len(b) and all(
        x["step"] == y["step"] and all(torch.equal(x[k], y[k]) for k in keys) for x, y in zip(a, b, strict=True)
    )


def test_plain_loop_trains_through_the_stages_with_the_planned_batches(raw):
    result = run(raw, train=True)
    sampler, batches, losses = result.sampler, result.batches, result.losses
    assert len(batches) == SCHEDULE.total_iterations == 8
    for step, batch in enumerate(batches):
        stage = SCHEDULE.stage_at(*divmod(step, SCHEDULE.iterations_per_epoch))
        b, patch = stage.batch_size, stage.patch_size
        assert batch["step"] == step and SCHEDULE.stages[batch["stage"]] == stage
        assert batch["image"].shape == (b, 1, *patch) and batch["image"].dtype == torch.float32
        assert batch["label"].shape == (b, 1, *patch) and batch["label"].dtype == torch.int64
        assert batch["row"].tolist() == list(range(b))
        # the forced-foreground share: nnU-Net's last-half rule, every forced patch holds foreground
        assert batch["forced"].tolist() == forced_foreground(b, 0.5).tolist()
        holds = (batch["label"].flatten(1) > 0).any(1)
        assert holds[batch["forced"]].all() and not batch["fg_fallback"].any()
        # Split-Crop: the foreground patches from one volume, the random ones from another
        cases = batch["case"]
        assert len(set(cases[batch["forced"]].tolist())) == len(set(cases[~batch["forced"]].tolist())) == 1
        assert cases[0] != cases[-1]
    assert {b["stage"] for b in batches} == {0, 1, 2, 3}
    # the network trained: the loss of the last stage's batches is below the first stage's
    assert np.isfinite(losses).all() and np.mean(losses[-2:]) < np.mean(losses[:2])
    assert sampler.finished and len(sampler) == 0
    with pytest.raises(RuntimeError, match="are done"):  # past the schedule: no silent empty epochs
        list(sampler)


def test_interrupt_and_resume_gives_the_uninterrupted_batches(raw):
    whole = run(raw, train=True).batches
    first = run(raw, steps=3)  # stops in epoch 1, after the first stage change
    part, state = first.batches, first.sampler.state_dict()
    assert state["step"] == 3 and state["schedule"] == SCHEDULE.to_dict()
    assert same(part + run(raw, state=state).batches, whole)
    with pytest.raises(ValueError, match="different curriculum schedule"):
        other = pgps.make_schedule("efficiency", (16, 16, 16), (8, 8, 8), 2, epochs=4, iterations_per_epoch=2)
        pgps.torch.CurriculumBatchSampler(other, num_cases=6, seed=4).load_state_dict(state)
    with pytest.raises(ValueError, match="seed 4 \\(now 5\\)"):
        pgps.torch.CurriculumBatchSampler(SCHEDULE, num_cases=6, seed=5).load_state_dict(state)


def test_persistent_workers_stay_valid_across_stages_and_resume_exactly(raw):
    whole = run(raw).batches
    with_workers = run(raw, workers=2)
    assert same(with_workers.batches, whole)
    assert len(with_workers.pids) == 1  # the same two worker processes served all four stages
    first = run(raw, steps=5, workers=2)
    part = first.batches
    state = first.sampler.state_dict(next_step=part[-1]["step"] + 1)  # the DataLoader asked for batches ahead
    assert state["step"] == 5 and first.sampler.state_dict()["step"] >= 5
    assert same(part + run(raw, state=state, workers=2).batches, whole)


@pytest.mark.parametrize(("strategy", "volumes"), [("single_crop", None), ("multi_crop", 2), ("single_volume", 1)])
def test_batch_strategies(raw, strategy, volumes):
    schedule = pgps.make_schedule("efficiency", (16, 16, 16), (8, 8, 8), 4, epochs=2, iterations_per_epoch=2)
    batches = run(raw, schedule=schedule, strategy=strategy).batches
    for batch in batches:
        cases = batch["case"].tolist()
        assert len(set(cases)) == (volumes or len(cases))
        if strategy == "multi_crop":  # each volume gives half of the random and half of the forced patches
            for flag in (False, True):
                picked = [c for c, f in zip(cases, batch["forced"].tolist(), strict=True) if f == flag]
                assert sorted(picked.count(c) for c in set(cases)) == [1, 1]


def test_progressive_resolution_resizes_the_pmax_crop(raw):
    schedule = pgps.make_schedule("progressive-resolution", (16, 16, 16), (8, 8, 8), 2, epochs=4,
                                  iterations_per_epoch=1)  # fmt: skip
    batches = run(raw, schedule=schedule).batches
    for batch in batches:
        stage = schedule.stages[batch["stage"]]
        assert stage.crop_size == (16, 16, 16) and batch["image"].shape == (2, 1, *stage.patch_size)
        assert set(batch["label"].unique().tolist()) <= {0, 1}  # labels resized by nearest neighbour


def test_two_gloo_processes_slice_the_single_process_batch(raw, tmp_path):
    """Two ranks (torch.distributed, gloo, CPU) train a DDP model; every step, their slices together are the
    single-process batch: the same patches, every row once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, str(DDP_WORKER), str(raw), str(store), str(rank), "2", str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]  # fmt: skip
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = run(raw).batches
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == len(single)
    for step, whole in enumerate(single):
        parts = [r["batches"][step] for r in ranks]
        rows = torch.cat([p["row"] for p in parts])
        assert sorted(rows.tolist()) == list(range(len(whole["row"]))) and len(set(rows.tolist())) == len(rows)
        for part in parts:
            assert torch.equal(part["image"], whole["image"][part["row"]])
            assert torch.equal(part["label"], whole["label"][part["row"]])
    assert ranks[0]["gathered"] == ranks[1]["gathered"]  # all_gather_object over gloo saw both slices
    for a, b in zip(ranks[0]["weights"], ranks[1]["weights"], strict=True):
        assert torch.equal(a, b)  # DDP kept the replicas in step


def test_set_epoch_follows_distributed_sampler_habits():
    sampler = pgps.torch.CurriculumBatchSampler(SCHEDULE, num_cases=6, seed=4)
    sampler.set_epoch(2)
    assert [r[0].step for r in sampler] == [4, 5] and sampler.epoch == 3
    sampler.load_state_dict({**sampler.state_dict(), "step": 7})  # resumed in the middle of epoch 3
    sampler.set_epoch(3)
    assert len(sampler) == 1 and [r[0].step for r in sampler] == [7] and sampler.finished
    sampler.set_epoch(0)  # a repeated epoch replays its batches
    assert [r[0].step for r in sampler] == [0, 1]
    with pytest.raises(ValueError, match="outside the schedule's 4 epochs"):
        sampler.set_epoch(5)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_loader_without_collate_patches_is_an_error_naming_it(raw, workers):
    """torch's default collation would stack one step's parts into a 6-D tensor, out of the global order."""
    sampler = pgps.torch.CurriculumBatchSampler(SCHEDULE, num_cases=6, seed=4)
    dataset = pgps.torch.PatchDataset(load=load_case(raw), num_cases=6)
    with pytest.raises(RuntimeError, match=r"collate_fn=pgps\.torch\.collate_patches"):
        next(iter(DataLoader(dataset, batch_sampler=sampler, num_workers=workers)))


def test_iterating_past_the_schedule_raises(raw):
    sampler = pgps.torch.CurriculumBatchSampler(SCHEDULE, num_cases=6, seed=4)
    loader = DataLoader(pgps.torch.PatchDataset(load=load_case(raw), num_cases=6), batch_sampler=sampler,
                        collate_fn=pgps.torch.collate_patches)  # fmt: skip
    shapes = [[tuple(b["image"].shape) for b in loader] for _ in range(SCHEDULE.epochs)]
    assert shapes == [[(s.batch_size, 1, *s.patch_size)] * 2 for s in SCHEDULE.stages] and sampler.finished
    with pytest.raises(RuntimeError, match=r"4 epochs \(8 steps\) are done"):
        next(iter(loader))


def test_fewer_epochs_than_stages_warns_and_names_the_idle_stages():
    with pytest.warns(UserWarning, match=r"2 epochs are fewer than the 4 stages: stages (.*) get 0 epochs") as seen:
        schedule = pgps.make_schedule("performance", (16, 16, 16), (8, 8, 8), 2, epochs=2)
    idle = ", ".join(str(i) for i, s in enumerate(schedule.stages) if s.epochs == 0)
    assert f"stages {idle} get 0 epochs and never train" in str(seen[0].message) and idle.startswith("0, 1")
    assert f"note: 2 epochs are fewer than the 4 stages: stages {idle} get 0 epochs" in schedule.table()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # RPSS draws a stage per iteration: nothing to warn about
        pgps.make_schedule("rpss", (16, 16, 16), (8, 8, 8), 2, epochs=2)
