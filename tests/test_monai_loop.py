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
