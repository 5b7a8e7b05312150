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
    keys = ("image", "label", "pgps_row", "pgps_case", "pgps_forced")
    return len(a) == len(b) and all(
        x["pgps_step"] == y["pgps_step"] and all(torch.equal(x[k], y[k]) for k in keys)
        for x, y in zip(a, b, strict=True)
    )


def test_plain_loop_trains_through_the_stages_with_the_planned_batches(raw):
    result = run(raw, train=True)
    sampler, batches, losses = result.sampler, result.batches, result.losses
    assert len(batches) == SCHEDULE.total_iterations == 8
    for step, batch in enumerate(batches):
        stage = SCHEDULE.stage_at(*divmod(step, SCHEDULE.iterations_per_epoch))
        b, patch = stage.batch_size, stage.patch_size
        assert batch["pgps_step"] == step and SCHEDULE.stages[batch["pgps_stage"]] == stage
        assert batch["image"].shape == (b, 1, *patch) and batch["image"].dtype == torch.float32
        assert batch["label"].shape == (b, 1, *patch) and batch["label"].dtype == torch.int64
        assert batch["pgps_row"].tolist() == list(range(b))
        # the forced-foreground share: nnU-Net's last-half rule, every forced patch holds foreground
        assert batch["pgps_forced"].tolist() == forced_foreground(b, 0.5).tolist()
        holds = (batch["label"].flatten(1) > 0).any(1)
        assert holds[batch["pgps_forced"]].all() and not batch["pgps_fg_fallback"].any()
        # Split-Crop: the foreground patches from one volume, the random ones from another
        cases, forced = batch["pgps_case"], batch["pgps_forced"]
        assert len(set(cases[forced].tolist())) == len(set(cases[~forced].tolist())) == 1
        assert cases[0] != cases[-1]
    assert {b["pgps_stage"] for b in batches} == {0, 1, 2, 3}
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
    state = first.sampler.state_dict(after=part[-1])  # the DataLoader asked for batches ahead: the loop's batch says
    assert state["step"] == 5 and first.sampler.state_dict()["step"] >= 5
    assert same(part + run(raw, state=state, workers=2).batches, whole)


@pytest.mark.parametrize(("strategy", "volumes"), [("single_crop", None), ("multi_crop", 2), ("single_volume", 1)])
def test_batch_strategies(raw, strategy, volumes):
    schedule = pgps.make_schedule("efficiency", (16, 16, 16), (8, 8, 8), 4, epochs=2, iterations_per_epoch=2)
    batches = run(raw, schedule=schedule, strategy=strategy).batches
    for batch in batches:
        cases = batch["pgps_case"].tolist()
        assert len(set(cases)) == (volumes or len(cases))
        if strategy == "multi_crop":  # each volume gives half of the random and half of the forced patches
            for flag in (False, True):
                picked = [c for c, f in zip(cases, batch["pgps_forced"].tolist(), strict=True) if f == flag]
                assert sorted(picked.count(c) for c in set(cases)) == [1, 1]


def test_progressive_resolution_resizes_the_pmax_crop(raw):
    schedule = pgps.make_schedule("progressive-resolution", (16, 16, 16), (8, 8, 8), 2, epochs=4,
                                  iterations_per_epoch=1)  # fmt: skip
    batches = run(raw, schedule=schedule).batches
    for batch in batches:
        stage = schedule.stages[batch["pgps_stage"]]
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
        rows = torch.cat([p["pgps_row"] for p in parts])
        assert sorted(rows.tolist()) == list(range(len(whole["pgps_row"]))) and len(set(rows.tolist())) == len(rows)
        for part in parts:
            assert torch.equal(part["image"], whole["image"][part["pgps_row"]])
            assert torch.equal(part["label"], whole["label"][part["pgps_row"]])
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


def flip_and_noise(patch: dict) -> dict:
    """A per-patch augmentation drawing from torch's default generator (as torchvision's transforms do)."""
    image, label = patch["image"], patch["label"]
    if torch.rand(()) < 0.5:
        image, label = image.flip(1), label.flip(1)
    return {**patch, "image": image + 0.1 * torch.randn(image.shape), "label": label}


def train_stateful(raw, checkpoint: Path, stop: int | None = None, epoch_end: bool = False, resume: bool = False):
    """The training loop a user writes with torchdata's StatefulDataLoader (2 workers, a per-patch transform):
    stops once ``stop`` batches were trained (``epoch_end``: after the epoch they fall in), saving network, optimiser
    and loader to ``checkpoint``; ``resume`` starts from that file in a new loader."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    sampler = pgps.torch.CurriculumBatchSampler(SCHEDULE, num_cases=6, seed=4)
    dataset = pgps.torch.PatchDataset(load=load_case(raw), num_cases=6, transform=flip_and_noise)
    loader = StatefulDataLoader(dataset, batch_sampler=sampler, collate_fn=pgps.torch.collate_patches, num_workers=2,
                                persistent_workers=True)  # fmt: skip
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 2, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    if resume:
        saved = torch.load(checkpoint)
        net.load_state_dict(saved["net"])
        optimizer.load_state_dict(saved["optimizer"])
        loader.load_state_dict(saved["loader"])
    batches = []
    while not sampler.finished:  # before the loader's first batch a resumed sampler is still at step 0
        for batch in loader:
            loss = torch.nn.functional.cross_entropy(net(batch["image"]), batch["label"][:, 0])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batches.append(batch)
            if len(batches) == stop and not epoch_end:
                break
        if stop is not None and len(batches) >= stop:
            break
    state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "loader": loader.state_dict()}
    torch.save(state, checkpoint)
    return batches, [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("epoch_end", [False, True], ids=["mid-epoch", "epoch-end"])
def test_stateful_dataloader_with_workers_resumes_bit_identically(raw, tmp_path, epoch_end):
    """Interrupted after 3 batches (inside epoch 1) or after epoch 1 ended (its iteration finished: the state must
    not let the restored workers' read-ahead skip epoch 2's first steps), resumed in a new loader from the saved
    file: the batches (augmented per patch) and the trained weights are those of the uninterrupted run."""
    whole, weights = train_stateful(raw, tmp_path / "whole.pt")
    assert [b["pgps_step"] for b in whole] == list(range(SCHEDULE.total_iterations))
    part, _ = train_stateful(raw, tmp_path / "run.pt", stop=3, epoch_end=epoch_end)
    assert [b["pgps_step"] for b in part] == list(range(4 if epoch_end else 3))
    rest, resumed = train_stateful(raw, tmp_path / "run.pt", resume=True)
    assert same(part + rest, whole)
    assert all(torch.equal(a, b) for a, b in zip(resumed, weights, strict=True))


def test_patch_dataset_transform_runs_per_patch_seeded_per_patch(raw):
    """The same augmented batches with 0 or 2 workers, and the two ranks' slices are the single process's patches:
    each patch's draw depends on (seed, step, volume, row) only. The transform ran (flipped and not flipped patches
    differ from the plain crops), and the worker's generator is left as it was."""
    plain = pgps.torch.PatchDataset(load=load_case(raw), num_cases=6)
    augmented = pgps.torch.PatchDataset(load=load_case(raw), num_cases=6, transform=flip_and_noise)

    def batches(workers: int, rank: int = 0, world_size: int = 1, dataset=augmented) -> list[dict]:
        sampler = pgps.torch.CurriculumBatchSampler(SCHEDULE, num_cases=6, seed=4, rank=rank, world_size=world_size)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=pgps.torch.collate_patches,
                            num_workers=workers)  # fmt: skip
        return [b for _ in range(SCHEDULE.epochs) for b in loader]

    single = batches(0)
    assert same(batches(2), single)
    ranks = [batches(0, r, 2) for r in range(2)]
    for whole, *parts in zip(single, *ranks, strict=True):
        for part in parts:
            assert torch.equal(part["image"], whole["image"][part["pgps_row"]])
            assert torch.equal(part["label"], whole["label"][part["pgps_row"]])
    flipped = kept = 0
    for got, crop in zip(single, batches(0, dataset=plain), strict=True):
        assert not torch.equal(got["image"], crop["image"])  # the noise
        for label, before in zip(got["label"], crop["label"], strict=True):
            flipped += torch.equal(label, before.flip(1)) and not torch.equal(label, before)
            kept += torch.equal(label, before)
    assert flipped and kept
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    augmented[pgps.torch.CurriculumBatchSampler(SCHEDULE, num_cases=6, seed=4).requests(0)[0]]
    assert torch.equal(torch.rand(3), expected)
    bad = pgps.torch.PatchDataset(load=load_case(raw), num_cases=6, transform=lambda patch: patch["image"])
    with pytest.raises(TypeError, match="must return a dict with 'image' and 'label', got Tensor"):
        bad[pgps.torch.CurriculumBatchSampler(SCHEDULE, num_cases=6, seed=4).requests(0)[0]]


def test_one_name_for_the_step_and_the_earlier_names_still_read(raw):
    """pgps.torch's batch fields carry pgps.monai's names; the earlier ones read with a DeprecationWarning, and so does
    state_dict(next_step=...); state_dict(after=batch) takes a pgps.torch or a pgps.monai batch."""
    sampler = pgps.torch.CurriculumBatchSampler(SCHEDULE, num_cases=6, seed=4)
    loader = DataLoader(pgps.torch.PatchDataset(load=load_case(raw), num_cases=6), batch_sampler=sampler,
                        collate_fn=pgps.torch.collate_patches)  # fmt: skip
    batch = next(iter(loader))
    assert set(batch) == {"image", "label", "pgps_row", "pgps_case", "pgps_forced", "pgps_fg_fallback", "pgps_step",
                          "pgps_stage"}  # fmt: skip
    for old in ("step", "stage", "row", "case", "forced", "fg_fallback"):
        with pytest.warns(DeprecationWarning, match=f'batch\\["{old}"\\] is now batch\\["pgps_{old}"\\]'):
            assert batch[old] is batch[f"pgps_{old}"]
    with pytest.raises(KeyError):
        batch["absent"]
    assert sampler.state_dict(after=batch)["step"] == 1
    assert sampler.state_dict(after={"pgps_step": torch.tensor([5, 5, 5])})["step"] == 6  # a pgps.monai batch
    with pytest.warns(DeprecationWarning, match="next_step=.* is deprecated"):
        assert sampler.state_dict(next_step=4)["step"] == 4
    with pytest.raises(ValueError, match="several steps"):
        sampler.state_dict(after={"pgps_step": torch.tensor([5, 6])})
