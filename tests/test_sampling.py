"""The framework-free batch plans (pgps.sampling) that the nnU-Net loader and the PyTorch/MONAI adapters share."""

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import pgps
from pgps import sampling


def _plan(strategy, batch_size, num_cases=10, seed=0, share=0.5):
    forced = sampling.forced_foreground(batch_size, share)
    return sampling.plan_cases(np.random.default_rng(seed), strategy, num_cases, forced), forced


@pytest.mark.parametrize("seed", range(5))
def test_plans_follow_appendix_a(seed):
    cases, forced = _plan("split_crop", 9, seed=seed)
    assert int(forced.sum()) == 5 and list(forced) == sorted(forced)  # samples j >= round(9 * 0.5) = 4 (half to even)
    assert len(set(cases[forced])) == len(set(cases[~forced])) == 1 and cases[forced][0] != cases[~forced][0]
    cases, forced = _plan("multi_crop", 8, seed=seed)
    assert len(set(cases)) == 2
    for flag in (False, True):  # each volume gives half of the random and half of the foreground patches
        assert sorted(np.bincount(cases[forced == flag], minlength=10)[np.unique(cases)]) == [2, 2]
    cases, _ = _plan("single_crop", 10, seed=seed)
    assert sorted(cases.tolist()) == list(range(10))  # distinct volumes
    cases, _ = _plan("single_volume", 7, seed=seed)
    assert len(set(cases)) == 1
    with pytest.raises(ValueError, match="single_crop strategy needs 11 distinct training cases"):
        sampling.check_strategy("single_crop", 11, 10)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 64))
def test_rank_slices_partition_the_batch_as_nnunets_ddp(batch_size, world_size):
    if batch_size < world_size:
        with pytest.raises(ValueError, match="cannot be split"):
            sampling.rank_rows(batch_size, 0, world_size)
        return
    slices = [sampling.rank_rows(batch_size, r, world_size) for r in range(world_size)]
    assert np.concatenate(slices).tolist() == list(range(batch_size))  # the union, in order, no duplicates
    sizes = [len(s) for s in slices]
    # nnU-Net's _set_batch_size_and_oversample: b // w each, +1 for the ranks i with b // w * w + i < b
    assert sizes == [batch_size // world_size + (batch_size // world_size * world_size + i < batch_size)
                     for i in range(world_size)]  # fmt: skip


def test_planner_steps_are_pure_functions_of_seed_and_step():
    schedule = pgps.make_schedule("rpss", (32, 32, 32), (8, 8, 8), 4, epochs=3, iterations_per_epoch=5, seed=1)
    planner = sampling.BatchPlanner(schedule, num_cases=6, strategy="multi_crop", seed=11)
    late_first = planner.plan(13)
    plans = [planner.plan(s) for s in range(planner.total_steps)]
    assert np.array_equal(late_first.cases, plans[13].cases)
    assert [p.stage_index for p in plans] == [schedule.stage_index(*divmod(s, 5)) for s in range(15)]
    assert len({tuple(p.cases) for p in plans}) > 5  # steps draw different cases
    other = sampling.BatchPlanner(schedule, num_cases=6, strategy="multi_crop", seed=12)
    assert any(not np.array_equal(p.cases, other.plan(p.step).cases) for p in plans)
    with pytest.raises(ValueError, match="outside the schedule's 15 steps"):
        planner.plan(15)


def test_rank_requests_draw_the_corners_of_the_single_process_batch():
    schedule = pgps.make_schedule("performance", (16, 16, 16), (4, 4, 4), 3, epochs=9, iterations_per_epoch=1)
    label = np.zeros((20, 18, 22), dtype=np.uint8)
    label[3:6, 4:9, 2:5], label[12:18, 10:16, 14:20] = 1, 2
    locations = sampling.class_locations(label)
    for strategy in sampling.STRATEGIES:
        planner = sampling.BatchPlanner(schedule, num_cases=200, strategy=strategy, seed=5)
        for step in (0, 4, 8):
            plan = planner.plan(step)
            whole = {}
            for request in plan.requests():
                corners, _ = request.corners(label.shape, locations)
                whole.update(zip(request.taken_rows.tolist(), corners.tolist(), strict=True))
            assert sorted(whole) == list(range(plan.batch_size))
            for world_size in (2, 3):
                sliced = {}
                for rank in range(world_size):
                    for request in plan.requests(sampling.rank_rows(plan.batch_size, rank, world_size)):
                        corners, _ = request.corners(label.shape, locations)
                        for row, corner in zip(request.taken_rows.tolist(), corners.tolist(), strict=True):
                            assert row not in sliced
                            sliced[row] = corner
                assert sliced == whole, (strategy, step, world_size)


def test_class_locations_and_class_uniform_foreground_centres():
    label = np.zeros((30, 30, 30), dtype=np.int16)
    label[1:25, 1:25, 1:25] = 1  # 13824 voxels
    label[27, 27, 27] = 3  # one voxel; class 2 absent
    found = sampling.class_locations(label)
    assert sorted(found) == [1, 3] and len(found[1]) == 24**3
    assert np.array_equal(found[3][np.arange(1)], [[27, 27, 27]])
    assert np.array_equal(np.sort(found[1][np.arange(len(found[1]))], axis=0), np.sort(np.argwhere(label == 1), axis=0))
    bounds = sampling.crop_bounds(label.shape, (8, 8, 8))
    forced = np.ones(4000, dtype=bool)
    rng = np.random.default_rng(0)
    corners, fell_back = sampling.crop_corners(rng, bounds, (8, 8, 8), forced, list(found.values()))
    centres = label[tuple((corners + 4).T)]
    # a class is drawn uniformly among the classes present, not in proportion to its voxels
    counts = [int((centres == 1).sum()), int((corners == 22).all(1).sum())]  # class 3: clamped to the last corner
    assert fell_back == 0 and sum(counts) == 4000
    assert stats.binomtest(counts[1], 4000, 0.5).pvalue > 1e-3
    empty = sampling.crop_corners(np.random.default_rng(0), bounds, (8, 8, 8), forced[:10], [found[1][:0]])
    assert empty[1] == 10  # no foreground: random patches, counted as fallbacks
    assert ((empty[0] >= bounds[0]) & (empty[0] <= bounds[1])).all()


def test_planner_refuses_another_schedule_or_settings():
    schedule = pgps.make_schedule("efficiency", (32, 32, 32), (8, 8, 8), 2, epochs=10)
    planner = sampling.BatchPlanner(schedule, num_cases=4)
    state = json.loads(json.dumps(planner.state()))
    planner.check_state(state)
    other = dataclasses.replace(schedule, iterations_per_epoch=10)
    with pytest.raises(ValueError, match="different curriculum schedule"):
        sampling.BatchPlanner(other, num_cases=4).check_state(state)
    with pytest.raises(ValueError, match="seed 0 \\(now 3\\)"):
        sampling.BatchPlanner(schedule, num_cases=4, seed=3).check_state(state)
    with pytest.raises(ValueError, match=r"stage 0 .*single_crop strategy needs 2 distinct"):
        sampling.BatchPlanner(schedule, num_cases=1, strategy="single_crop")


def padded_crop(volume: np.ndarray, corner, size, pad: float) -> np.ndarray:
    """The window of ``volume`` (C, X, Y, Z) at ``corner``, ``pad`` outside it (a reference written here)."""
    margin = max(size) + max(abs(int(c)) for c in corner) + 1
    big = np.pad(np.asarray(volume), [(0, 0)] + [(margin, margin)] * 3, constant_values=pad)
    return big[(slice(None), *(slice(c + margin, c + margin + s) for c, s in zip(corner, size, strict=True)))]


@pytest.mark.nnunet
@pytest.mark.parametrize("strategy", sampling.STRATEGIES)
def test_the_nnunet_loader_crops_the_core_plan_and_ranks_split_it(tmp_path, strategy):
    """What the nnU-Net loader returns (untransformed crops, read back from its tensors) is the core's plan of the
    step: the planned cases and forced flags, crops at the corners the core draws; two ranks' batches of a step are
    disjoint rows whose concatenation is the single-process batch, tensor for tensor."""
    from pgps.nnunet.datasets.synthdata import LOADER_PRESETS, open_preprocessed, write_preprocessed
    from pgps.nnunet.loading.sampling import PlannedDataLoader

    preset = LOADER_PRESETS["hippocampus"]
    write_preprocessed(dataclasses.replace(preset, synth=dataclasses.replace(preset.synth, num_cases=6)), tmp_path)
    data, labels = open_preprocessed(tmp_path)
    mode = "efficiency" if strategy == "single_crop" else "performance"  # Single-Crop: a batch of at most 6 cases
    schedule = pgps.make_schedule(mode, (16, 16, 16), (8, 8, 8), 3, epochs=3, iterations_per_epoch=2)
    planner = sampling.BatchPlanner(schedule, len(data.identifiers), strategy, foreground_share=0.5, seed=11)
    window = (20, 24, 20)  # nnU-Net's enlarged crop; 4 more voxels of padding on two axes
    for index, stage in enumerate(schedule.stages):
        loaders = {(r, w): PlannedDataLoader(data, planner, index, window, stage.patch_size, labels, rank=r,
                                              world_size=w, start=0) for r, w in ((0, 1), (0, 2), (1, 2))}  # fmt: skip
        for step in planner.stage_steps(index):
            batches = {key: loader.generate_train_batch() for key, loader in loaders.items()}
            one = batches[0, 1]
            plan = planner.plan(int(step))
            assert one["pgps_step"] == step and one["keys"] == [data.identifiers[c] for c in plan.cases]
            assert one["pgps_forced"] == plan.forced.tolist() and one["data"].shape == (stage.batch_size, 1, *window)
            corners = {}
            for request in plan.requests():
                image, _, _, properties = data.load_case(data.identifiers[request.case])
                foreground = [np.asarray(v)[:, 1:] for k, v in properties["class_locations"].items() if len(v)]
                found, _ = request.corners(image.shape[1:], foreground, window=window, need_to_pad=(4, 8, 4))
                corners.update(zip(request.taken_rows.tolist(), found.tolist(), strict=True))
            for row in range(stage.batch_size):
                image, seg, _, _ = data.load_case(one["keys"][row])
                assert np.array_equal(one["data"][row].numpy(), padded_crop(image, corners[row], window, 0))
                assert np.array_equal(one["target"][row].numpy(), padded_crop(seg, corners[row], window, -1))
            halves = [batches[0, 2], batches[1, 2]]
            assert [h["pgps_rows"] for h in halves] == [sampling.rank_rows(stage.batch_size, r, 2).tolist()
                                                         for r in (0, 1)]  # fmt: skip
            for key in ("data", "target"):
                assert np.array_equal(np.concatenate([h[key].numpy() for h in halves]), one[key].numpy())
            assert halves[0]["keys"] + halves[1]["keys"] == one["keys"]
            assert halves[0]["pgps_corners"] + halves[1]["pgps_corners"] == one["pgps_corners"]
