"""pgps.monai in a MONAI loop: `pgps synth` NIfTI files through LoadImaged/CacheDataset, CurriculumCropd, per-patch
random transforms and MONAI's UNet, with the schedule's shapes per step, the foreground share and exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("SimpleITK")

from monai.data import CacheDataset, DataLoader  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from monai.networks.nets import UNet  # noqa: E402
from monai.transforms import (  # noqa: E402
    ClassesToIndicesd,
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    RandFlipd,
    RandGaussianNoised,
)

import pgps  # noqa: E402
import pgps.monai  # noqa: E402
from pgps.cli import main  # noqa: E402
from pgps.sampling import forced_foreground  # noqa: E402
from tests.loops import drive  # noqa: E402

KEYS = ["image", "label"]
# MONAI's UNet with strides (2, 2): step 4. Its instance norm cannot train a 1x1x1 bottleneck, so the
# schedule starts one stage later (8x4x4); performance mode, P_max 16^3: 9 stages, batch 64 down to 2.
SCHEDULE = pgps.make_schedule("performance", (16, 16, 16), (4, 4, 4), 2, epochs=9, iterations_per_epoch=1,
                              single_voxel_bottleneck=False)  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    argv = ["synth", "--preset", "organs", "--classes", "2", "--radius", "3", "6", "--out", str(out), "--dataset-id",
            "8", "--cases", "5", "--shape", "24", "24", "24", "--shape-jitter", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    folder = out / "Dataset008_SynthOrgans"
    return [{"image": str(folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz"),
             "label": str(folder / "labelsTr" / f"case_{i:03d}.nii.gz")} for i in range(5)]  # fmt: skip


def run(files, steps=None, state=None, train=True):
    volumes = CacheDataset(files, Compose([LoadImaged(KEYS), EnsureChannelFirstd(KEYS),
                                           ClassesToIndicesd("label", num_classes=3, indices_postfix="_classes")]),
                           progress=False)  # fmt: skip
    augment = Compose([RandFlipd(KEYS, prob=0.5, spatial_axis=0), RandGaussianNoised("image", prob=0.5, std=0.1)])
    crop = pgps.monai.CurriculumCropd(KEYS, label_key="label", indices_key="label_classes")
    train = pgps.monai.CurriculumDataset(volumes, crop, transform=augment)
    sampler = pgps.monai.CurriculumBatchSampler(SCHEDULE, num_cases=len(files), seed=2)
    if state is not None:
        sampler.load_state_dict(json.loads(json.dumps(state)))
    loader = DataLoader(train, batch_sampler=sampler, num_workers=0)
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 16), strides=(2, 2))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def train_step(batch):
        loss = loss_fn(net(batch["image"]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    batches, losses = drive(sampler, loader, steps, train_step if train else None)
    return sampler, batches, losses


@pytest.fixture(scope="module")
def uninterrupted(files):
    return run(files)


def test_monai_loop_trains_through_the_stages_with_the_planned_batches(uninterrupted):
    sampler, batches, losses = uninterrupted
    assert sampler.finished and len(batches) == SCHEDULE.total_iterations == 9
    assert SCHEDULE.stages[0].patch_size == (8, 4, 4) and SCHEDULE.stages[0].batch_size == 64
    for step, batch in enumerate(batches):
        stage = SCHEDULE.stage_at(step)
        b = stage.batch_size
        assert batch["image"].shape == (b, 1, *stage.patch_size) and batch["label"].shape == (b, 1, *stage.patch_size)
        assert batch["pgps_step"].tolist() == [step] * b and batch["pgps_stage"].tolist() == [step] * b
        assert batch["pgps_row"].tolist() == list(range(b))
        forced = batch["pgps_forced"]
        assert forced.tolist() == forced_foreground(b, 0.5).tolist()
        assert (batch["label"].flatten(1) > 0).any(1)[forced].all()  # flips keep the foreground in the patch
        cases = batch["pgps_case"]
        assert len(set(cases[forced].tolist())) == len(set(cases[~forced].tolist())) == 1  # Split-Crop
    assert np.isfinite(losses).all() and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_monai_loop_resumes_with_the_uninterrupted_batches(files, uninterrupted):
    whole = uninterrupted[1]
    first, part, _ = run(files, steps=4, train=False)
    state = first.state_dict()
    _, rest, _ = run(files, state=state, train=False)
    assert len(part) + len(rest) == len(whole)
    for a, b in zip(part + rest, whole, strict=True):
        for key in ("image", "label", "pgps_row", "pgps_case", "pgps_forced"):
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    # RandFlipd ran on every patch with its own draw: each label is its plain crop, flipped or not, both occur
    volumes = CacheDataset(files, Compose([LoadImaged(KEYS), EnsureChannelFirstd(KEYS)]), progress=False)
    requests = pgps.monai.CurriculumBatchSampler(SCHEDULE, num_cases=5, seed=2).requests(0)
    plain = torch.stack([p["label"] for p in pgps.monai.CurriculumDataset(volumes).__getitems__(requests)])
    flipped = [bool(torch.equal(got, crop.flip(1))) for got, crop in zip(whole[0]["label"], plain, strict=True)]
    kept = [bool(torch.equal(got, crop)) for got, crop in zip(whole[0]["label"], plain, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and not all(flipped)
    with pytest.raises(ValueError, match="different curriculum schedule"):
        pgps.monai.CurriculumBatchSampler(pgps.make_schedule("cps", (16, 16, 16), (4, 4, 4), 2), 5).load_state_dict(
            state
        )


def compose_volumes(files, augment: bool = True) -> CacheDataset:
    """A plain MONAI pipeline: CurriculumCropd in the Compose where RandCropByPosNegLabeld would stand."""
    crop = pgps.monai.CurriculumCropd(KEYS, label_key="label", indices_key="label_classes")
    after = [RandFlipd(KEYS, prob=0.5, spatial_axis=0), RandGaussianNoised("image", prob=0.5, std=0.1)]
    transform = Compose([LoadImaged(KEYS), EnsureChannelFirstd(KEYS),
                         ClassesToIndicesd("label", num_classes=3, indices_postfix="_classes"), crop,
                         *(after if augment else [])])  # fmt: skip
    return CacheDataset(files, transform, progress=False)


def compose_batches(volumes, workers: int, rank: int = 0, world_size: int = 1, strategy="split_crop") -> list[dict]:
    sampler = pgps.monai.CurriculumBatchSampler(SCHEDULE, num_cases=len(volumes), seed=2, rank=rank,
                                                world_size=world_size, strategy=strategy)  # fmt: skip
    loader = DataLoader(pgps.monai.CurriculumDataset(volumes), batch_sampler=sampler, num_workers=workers)
    return [batch for _ in range(SCHEDULE.epochs) for batch in loader]


def test_curriculum_cropd_in_a_compose_gives_the_planned_patches_with_workers(files):
    """CurriculumCropd inside a CacheDataset's Compose, the random transforms after it, a DataLoader with 2 workers:
    every step's patch shapes, cases and forced flags are the BatchPlanner's; the batches equal those of 0 workers,
    and the two ranks' slices are the single process's patches (also where a volume's patches go to both ranks: the
    volume is cropped and augmented whole on each); the flips ran (some patches flipped, some not)."""
    from pgps.sampling import BatchPlanner

    volumes = compose_volumes(files)
    batches = compose_batches(volumes, workers=2)
    planner = BatchPlanner(SCHEDULE, len(files), seed=2)
    assert len(batches) == planner.total_steps
    for step, batch in enumerate(batches):
        plan = planner.plan(step)
        shape = (plan.batch_size, 1, *plan.stage.patch_size)
        assert batch["image"].shape == shape and batch["label"].shape == shape
        assert batch["pgps_step"].tolist() == [step] * plan.batch_size
        assert batch["pgps_case"].tolist() == plan.cases.tolist()
        assert batch["pgps_forced"].tolist() == plan.forced.tolist()
        assert (batch["label"].flatten(1) > 0).any(1)[batch["pgps_forced"]].all()
    keys = ("image", "label", "pgps_row", "pgps_case", "pgps_forced")
    for a, b in zip(batches, compose_batches(volumes, workers=0), strict=True):
        assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in keys)
    # Multi-Crop alternates the volumes within the batch: most steps have a volume whose patches two ranks share
    single = compose_batches(volumes, 0, strategy="multi_crop")
    ranks = [compose_batches(volumes, 0, rank, 2, strategy="multi_crop") for rank in range(2)]
    for whole, *parts in zip(single, *ranks, strict=True):
        assert sorted(torch.cat([p["pgps_row"] for p in parts]).tolist()) == list(range(len(whole["pgps_row"])))
        for part in parts:
            assert torch.equal(torch.as_tensor(part["image"]), torch.as_tensor(whole["image"])[part["pgps_row"]])
    plain = compose_batches(compose_volumes(files, augment=False), workers=0)
    flipped = [bool(torch.equal(got, crop.flip(1))) for got, crop in zip(batches[0]["label"], plain[0]["label"],
                                                                        strict=True)]  # fmt: skip
    assert any(flipped) and not all(flipped)


def test_curriculum_cropd_without_its_dataset_says_what_to_write(files):
    """A DataLoader indexing the CacheDataset by case (MONAI's random crops' way) has no step to crop: the error
    gives the line; a crop given twice is refused."""
    volumes = compose_volumes(files)
    with pytest.raises(RuntimeError) as caught:
        next(iter(DataLoader(volumes, batch_size=2)))
    chain = [caught.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    assert any("DataLoader(pgps.monai.CurriculumDataset(dataset), batch_sampler=pgps.monai.CurriculumBatchSampler("
               in str(e) for e in chain), [str(e) for e in chain]  # fmt: skip
    with pytest.raises(ValueError, match="already crops with CurriculumCropd"):
        pgps.monai.CurriculumDataset(volumes, pgps.monai.CurriculumCropd(KEYS))
