"""The batched PGPS loader (pgps.nnunet.loading.sampling) on small synthetic volumes in nnU-Net's preprocessed
format."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

pytestmark = pytest.mark.nnunet

ROTATION = (-np.pi / 6, np.pi / 6)
DS_SCALES = [[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from pgps.nnunet.datasets.synthdata import LOADER_PRESETS, open_preprocessed, write_preprocessed

    preset = LOADER_PRESETS["hippocampus"]
    small = dataclasses.replace(preset, synth=dataclasses.replace(preset.synth, num_cases=8))
    folder = tmp_path_factory.mktemp("loader")
    write_preprocessed(small, folder)
    return open_preprocessed(folder)


def make_loader(dataset, patch=(8, 8, 8), batch_size=16, strategy="split_crop", seed=0, **kw):
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size

    from pgps.nnunet.loading.batched import AugmentationSpec
    from pgps.nnunet.loading.sampling import PlannedDataLoader

    data, labels = dataset
    spec = AugmentationSpec.from_transform_args(patch, ROTATION, DS_SCALES, (0, 1, 2), False)
    window = get_patch_size(patch, ROTATION, ROTATION, ROTATION, (0.85, 1.25))
    common = {"strategy": strategy, "seed": seed, "augmentation": spec}
    return PlannedDataLoader.constant(data, batch_size, window, patch, labels, **common, **kw)


def test_batched_split_crop_batches_have_nnunets_layout(dataset):
    loader = make_loader(dataset, patch=(8, 16, 8), batch_size=20)
    for _ in range(3):
        batch = loader.generate_train_batch()
        keys, data, target = batch["keys"], batch["data"], batch["target"]
        assert data.shape == (20, 1, 8, 16, 8) and data.dtype == torch.float32
        assert [t.shape for t in target] == [(20, 1, 8, 16, 8), (20, 1, 4, 8, 4), (20, 1, 2, 4, 2)]
        assert all(t.dtype == torch.int16 for t in target) and int(target[0].min()) >= 0  # -1 removed
        assert len(set(keys[:10])) == len(set(keys[10:])) == 1 and keys[0] != keys[10]  # Split-Crop
        assert all((target[0][j] > 0).any() for j in range(10, 20))  # forced patches hold foreground
        assert torch.isfinite(data).all() and batch["pgps_fg_fallbacks"] == 0
    single = make_loader(dataset, batch_size=8, strategy="single_crop").generate_train_batch()
    assert len(set(single["keys"])) == 8


def test_a_step_is_the_same_batch_in_any_process_and_steps_differ(dataset):
    """A batch is a function of the seed and its step: a second loader (a worker, a resumed run) that produces the
    same step gives the same tensors, augmentation included; other steps and other seeds give other batches."""
    a, b = make_loader(dataset, seed=3), make_loader(dataset, seed=3)
    first, second = a.generate_train_batch(), a.generate_train_batch()
    assert (first["pgps_step"], second["pgps_step"]) == (0, 1)
    b.steps.claim()  # b skips step 0, as a second worker does
    again = b.generate_train_batch()
    assert again["pgps_step"] == 1 and torch.equal(second["data"], again["data"])
    assert all(torch.equal(x, y) for x, y in zip(second["target"], again["target"], strict=True))
    assert not torch.equal(first["data"], second["data"])
    assert not torch.equal(first["data"], make_loader(dataset, seed=4).generate_train_batch()["data"])


def test_deferred_augmentation_gives_the_same_batch(dataset):
    from pgps.nnunet.loading.sampling import finish_batch

    here = make_loader(dataset, seed=7).generate_train_batch()
    deferred = make_loader(dataset, seed=7, defer_augmentation=True).generate_train_batch()
    assert "data" not in deferred and set(deferred["pgps_raw"]) >= {"image", "seg", "params", "spec"}
    done = finish_batch(deferred, "cpu")
    assert torch.equal(done["data"], here["data"]) and done["keys"] == here["keys"]
    assert all(torch.equal(x, y) for x, y in zip(done["target"], here["target"], strict=True))
    assert finish_batch(here, "cpu") is here  # batches that are already augmented pass through


@pytest.mark.parametrize("read", ["padded box", "clipped box", "patch by patch"])
def test_patches_are_nnunets_crops(dataset, monkeypatch, read):
    """Every way of reading (one padded bounding box, one box clipped to the volume, each patch on its own)
    gives ``crop_and_pad_nd``'s crops, and an untransformed patch is the centre of the enlarged crop, as
    nnU-Net's SpatialTransform cuts it."""
    from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
    from batchgeneratorsv2.transforms.utils.cropping import crop_tensor

    from pgps.nnunet.loading import sampling
    from pgps.nnunet.loading.batched import centre_offset

    monkeypatch.setattr(sampling, "DENSE_READ", 0.0 if read == "patch by patch" else 1e9)
    monkeypatch.setattr(sampling, "PADDED_REGION", 2**30 if read == "padded box" else 0)
    data, seg, _, _ = dataset[0].load_case(dataset[0].identifiers[0])
    rng = np.random.default_rng(0)
    window, patch = (13, 12, 14), (8, 8, 8)
    corners = rng.integers(-8, np.asarray(data.shape[1:]) - 2, size=(30, 3))  # many reach past the volume
    image_out, seg_out = torch.empty(30, 1, *window), torch.empty(30, 1, *window, dtype=torch.int16)
    small_image, small_seg = torch.empty(30, 1, *patch), torch.empty(30, 1, *patch, dtype=torch.int16)
    offset = centre_offset(window, patch)
    rows = np.arange(30)
    sampling.read_patches(data, seg, [(corners, window, image_out, seg_out, rows),
                                      (corners + offset, patch, small_image, small_seg, rows)])  # fmt: skip
    for j, corner in enumerate(corners.tolist()):
        bbox = [[c, c + w] for c, w in zip(corner, window, strict=True)]
        big = torch.from_numpy(crop_and_pad_nd(data, bbox, 0))
        big_seg = torch.from_numpy(crop_and_pad_nd(seg, bbox, -1, cast_cropped_to=np.int16))
        assert torch.equal(image_out[j], big) and torch.equal(seg_out[j], big_seg)
        centre = [w // 2 for w in window]  # SpatialTransform without a grid: crop_tensor at floor(shape / 2)
        assert torch.equal(small_image[j], crop_tensor(big, centre, patch))
        assert torch.equal(small_seg[j], crop_tensor(big_seg, centre, patch, pad_kwargs={"value": -1}))


def test_vectorised_corners_have_crop_box_distribution(dataset):
    """``crop_corners`` (all patches of a volume at once) draws as ``crop_box`` (one at a time) does, in the
    loader's window and padding."""
    from pgps import sampling

    loader = make_loader(dataset, patch=(8, 8, 8))
    data, _, _, properties = dataset[0].load_case(dataset[0].identifiers[1])
    shape = data.shape[1:]
    foreground, annotated = loader._locations(properties["class_locations"])
    bounds, window = sampling.crop_bounds(shape, loader.patch_size, loader.need_to_pad), loader.patch_size
    rng = np.random.default_rng(0)
    n = 3000
    for forced in (False, True):
        flags = np.full(n, forced)
        vectorised, fell_back = sampling.crop_corners(rng, bounds, window, flags, foreground, annotated)
        one_by_one = np.array([sampling.crop_box(rng, bounds, window, forced, foreground, annotated)[0]
                               for _ in range(n)])  # fmt: skip
        assert fell_back == 0
        for axis in range(3):
            assert stats.ks_2samp(vectorised[:, axis], one_by_one[:, axis]).pvalue > 1e-3, (forced, axis)
        lower, upper = bounds
        assert (vectorised >= lower).all() and (vectorised <= upper).all()
    # forced patches: centred on a voxel of a class drawn uniformly among the classes present
    centres = vectorised + np.asarray(loader.patch_size) // 2
    seg = dataset[0].load_case(dataset[0].identifiers[1])[1][0]
    inside = (centres >= 0).all(1) & (centres < np.asarray(shape)).all(1)
    labels = seg[tuple(centres[inside].T)]
    counts = np.bincount(labels, minlength=3)[1:]
    assert counts.sum() > 0.9 * inside.sum()  # clamping at the border may move a few off their voxel
    assert stats.chisquare(counts).pvalue > 1e-3  # two classes, equally often


def test_small_volumes_are_cached_and_large_ones_are_not(dataset):
    loader = make_loader(dataset)
    loader.generate_train_batch()
    assert 1 <= len(loader._cache) <= 2 and loader._cached_bytes > 0
    cached = next(iter(loader._cache.values()))
    assert isinstance(cached[0], np.ndarray) and isinstance(cached[1], np.ndarray)
    tiny = make_loader(dataset, cache_bytes=1000)  # every volume exceeds an eighth of the budget
    tiny.generate_train_batch()
    assert not tiny._cache


def test_pgps_performance_trainers_use_the_batched_path():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from pgps.nnunet import variants

    args = ((8, 8, 8), ROTATION, DS_SCALES, (0, 1, 2), False)
    kwargs = {"use_mask_for_norm": [False], "is_cascaded": False, "foreground_labels": [1, 2]}

    def spec(cls, **extra):
        return object.__new__(cls).batched_augmentation_spec(*args, **{**kwargs, **extra})

    assert spec(variants.nnUNetTrainer_PGPS_Performance).patch_size == (8, 8, 8)
    assert spec(variants.nnUNetTrainer_PGPS_Performance_SingleCrop) is not None
    assert spec(variants.nnUNetTrainer_PGPS_Performance_NoMirroring) is not None
    assert spec(variants.nnUNetTrainer_PGPS_Efficiency) is None  # nnU-Net's own loader and transforms
    assert spec(variants.nnUNetTrainer_PGPS_Performance, is_cascaded=True) is None

    class OwnTransforms(variants.nnUNetTrainer_PGPS_Performance):
        get_training_transforms = staticmethod(lambda *a, **k: nnUNetTrainer.get_training_transforms(*a, **k))

    class Off(variants.nnUNetTrainer_PGPS_Performance):
        batched_augmentation = False

    assert spec(OwnTransforms) is None and spec(Off) is None
