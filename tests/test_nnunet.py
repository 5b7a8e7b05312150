"""nnU-Net integration on a tiny dataset made here: trainers, samplers, telemetry, resume (CPU)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest

import pgps
from tests import nnunet_env as nn
from tests import nnunet_many as many
from tests.report_fixtures import TELEMETRY_COLUMNS

pytestmark = pytest.mark.nnunet

PERFORMANCE = "nnUNetTrainer_PGPS_Performance"
QUIET = {"PGPS_PROGRESS_EVERY": "0", "PGPS_CARBON": "off"}
"""No progress.png (seconds of matplotlib per epoch) and no CodeCarbon in the runs whose tests read neither
(test_performance_trains_every_stage_from_the_cli checks CodeCarbon's columns)."""
STAGES = pgps.journal_stages(nn.PATCH, (8, 8, 8))  # the reduced plans: 3 stride-2 downsamplings per axis


@pytest.fixture(scope="session")
def tiny(tiny_nnunet):
    return tiny_nnunet


def read_telemetry(folder):
    with open(folder / "pgps_telemetry.csv") as f:
        return list(csv.DictReader(f))


def check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_performance_trains_every_stage_from_the_cli(tiny):
    trainer = PERFORMANCE
    check(nn.train(tiny, trainer, PGPS_PROGRESS_EVERY="0"))
    folder = nn.fold_folder(tiny / "results", trainer)
    rows = read_telemetry(folder)
    assert list(rows[0]) == [
        "epoch", "stage", "patch_size", "crop_size", "batch_size", "iterations", "iterated_voxels", "epoch_time_s",
        "compile_time_s", "compilations", "fg_voxel_share", "class_presence_share", "fg_fallbacks", "train_loss",
        "val_loss", "pseudo_dice", "lr", "energy_kwh", "co2_kg",
    ]  # fmt: skip
    assert tuple(rows[0]) == TELEMETRY_COLUMNS  # the report tests' synthetic runs write the same columns
    schedule = pgps.make_schedule("performance", nn.PATCH, (8, 8, 8), 2, epochs=4, iterations_per_epoch=2)
    assert [int(r["stage"]) for r in rows] == [0, 1, 2, 3]
    assert [r["patch_size"] for r in rows] == ["8x8x8", "16x8x8", "16x16x8", "16x16x16"]
    assert [int(r["batch_size"]) for r in rows] == [s.batch_size for s in schedule.stages] == [16, 8, 4, 2]
    assert [int(r["iterated_voxels"]) for r in rows] == [2 * s.tensor_voxels for s in schedule.stages]
    assert all(int(r["fg_fallbacks"]) == 0 for r in rows)
    for r in rows:
        assert 0 < float(r["fg_voxel_share"]) < 1 and 0 < float(r["class_presence_share"]) <= 1
        assert float(r["epoch_time_s"]) > 0 and np.isfinite(float(r["train_loss"]))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True)
    summary = json.loads((folder / "pgps_summary.json").read_text())
    assert summary["iterated_voxels"] == sum(int(r["iterated_voxels"]) for r in rows)
    # CodeCarbon (installed with pgps[carbon], as make venv does): each training epoch's energy and CO2-eq
    from pgps.nnunet.carbon import offline_tracker_class

    if offline_tracker_class() is not None:
        for key in ("energy_kwh", "co2_kg"):
            assert all(float(r[key]) >= 0 for r in rows), key
            assert summary[key] == pytest.approx(sum(float(r[key]) for r in rows)), key
        assert (folder / "pgps_emissions.csv").is_file()
        assert "CodeCarbon offline tracker" in next(folder.glob("training_log_*.txt")).read_text()
    assert summary["p_max_epochs_done"] == 1
    # validation and inference use the planned configuration (P_max, b_base)
    plans = json.loads((folder.parent / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["patch_size"] == nn.PATCH
    assert json.loads((folder / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"] >= 0
    log = next(folder.glob("training_log_*.txt")).read_text()
    assert "PGPS stage 0 (1 of 4): patch 8x8x8, batch 16" in log
    assert "PGPS stage 3 (4 of 4): patch 16x16x16, batch 2" in log


FAMILIES = [
    ("nnUNetTrainer_PGPS_CPS", "cps"),
    ("nnUNetTrainer_PGPS_Efficiency", "efficiency"),
    ("nnUNetTrainer_PGPS_MICCAIPlus", "miccai-plus"),
    ("nnUNetTrainer_PGPS_ProgressiveResolution", "progressive-resolution"),
    ("nnUNetTrainer_PGPS_Performance_SingleCrop", "performance"),
    ("nnUNetTrainer_PGPS_Performance_NoMirroring", "performance"),
]


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """The trainings of the tests below that read only what a training wrote, one after another in one process
    (:mod:`tests.nnunet_many`), each with its own results folder; the pre-empted run and its resume last."""
    work = tmp_path_factory.mktemp("nnunet_runs")
    bad = work / "bad"  # plans whose patch is not a multiple of the steps
    for sub in ("raw", "preprocessed"):
        shutil.copytree(tiny / sub, bad / sub)
    plans_file = bad / "preprocessed" / nn.DATASET / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["patch_size"] = [16, 20, 16]
    plans_file.write_text(json.dumps(plans))
    trainings = {
        trainer: (trainer, work / trainer, [], {"PGPS_EPOCHS": "4" if trainer.endswith("SingleCrop") else "3"})
        for trainer, _ in FAMILIES
    }
    trainings["rpss"] = ("nnUNetTrainer_PGPS_RPSS", work / "rpss", [], {"PGPS_ITERATIONS_PER_EPOCH": "5",
                                                                        "PGPS_EPOCHS": "2"})  # fmt: skip
    trainings["workers"] = (PERFORMANCE, work / "workers", [], {"nnUNet_n_proc_DA": "2"})
    trainings["whole"] = (PERFORMANCE, work / "whole", [], {"PGPS_SEED": "3"})
    trainings["bad_plans"] = ("nnUNetTrainer_PGPS_Efficiency", work / "bad" / "results", [], {
        "nnUNet_raw": str(bad / "raw"), "nnUNet_preprocessed": str(bad / "preprocessed")})  # fmt: skip
    trainings["interrupted"] = (PERFORMANCE, work / "split", ["1"], {"PGPS_SEED": "3"})  # stops after epoch 1
    # resumed as --c does (nnU-Net's load_checkpoint), after the pre-emption above left its process
    trainings["resumed"] = (PERFORMANCE, work / "split", ["-1", "", "resume"], {"PGPS_SEED": "3"})
    return {"work": work, **many.train_many(tiny, work, trainings, **QUIET)}


@pytest.mark.parametrize(("trainer", "mode"), FAMILIES)
def test_trainer_families_follow_their_schedule(runs, trainer, mode):
    run = runs[trainer]
    if trainer.endswith("SingleCrop"):  # 16 distinct cases needed for the first stage, the split has 4
        assert run["status"] != 0
        assert "single_crop strategy needs 16 distinct training cases" in run["log"]
        assert "ValueError: PGPS stage 0" in run["log"]
        return
    assert run["status"] == 0, run["log"][-3000:]
    rows = read_telemetry(nn.fold_folder(runs["work"] / trainer, trainer))
    epochs = 3
    schedule = pgps.make_schedule(mode, nn.PATCH, (8, 8, 8), 2, epochs=epochs, iterations_per_epoch=2)
    expected = [schedule.stage_at(e) for e in range(epochs)]
    assert [r["patch_size"] for r in rows] == ["x".join(map(str, s.patch_size)) for s in expected]
    assert [r["crop_size"] for r in rows] == ["x".join(map(str, s.crop_size)) for s in expected]
    assert [int(r["batch_size"]) for r in rows] == [s.batch_size for s in expected]
    assert [int(r["iterated_voxels"]) for r in rows] == [2 * s.tensor_voxels for s in expected]


def test_rpss_draws_stages_per_iteration(runs):
    assert runs["rpss"]["status"] == 0, runs["rpss"]["log"][-3000:]
    rows = read_telemetry(nn.fold_folder(runs["work"] / "rpss", "nnUNetTrainer_PGPS_RPSS"))
    schedule = pgps.make_schedule("rpss", nn.PATCH, (8, 8, 8), 2, epochs=2, iterations_per_epoch=5)
    assert len(rows) == 2
    for epoch, row in enumerate(rows):
        drawn = schedule.rpss_draws(epoch)
        assert int(row["iterated_voxels"]) == sum(schedule.stages[i].tensor_voxels for i in drawn)


def test_resume_continues_the_curriculum_exactly(runs):
    whole, split = runs["work"] / "whole", runs["work"] / "split"
    assert runs["whole"]["status"] == 0, runs["whole"]["log"][-3000:]
    assert runs["interrupted"]["status"] == 17, runs["interrupted"]["log"][-3000:]
    assert re.findall(r": Epoch (\d+)$", runs["interrupted"]["log"], re.M) == ["0", "1"]  # 2 of 4 epochs
    folder = nn.fold_folder(split, PERFORMANCE)
    assert runs["resumed"]["status"] == 0, runs["resumed"]["log"][-3000:]
    assert "resuming at epoch 2, stage 2" in runs["resumed"]["log"]
    a, b = read_telemetry(nn.fold_folder(whole, PERFORMANCE)), read_telemetry(folder)
    same = ["epoch", "stage", "patch_size", "batch_size", "iterations", "iterated_voxels", "fg_fallbacks"]
    assert [[r[k] for k in same] for r in a] == [[r[k] for k in same] for r in b]
    # with in-process loading and the RNG states restored, the resumed run sees the same batches
    for key in ("fg_voxel_share", "class_presence_share", "train_loss", "lr"):
        assert [float(r[key]) for r in a] == pytest.approx([float(r[key]) for r in b], rel=1e-5), key


def test_unknown_sampler_and_bad_plans_fail_before_training(runs):
    bad = runs["bad_plans"]  # a patch that is not a multiple of the steps
    assert bad["status"] != 0
    assert "patch_size_max axis 1 (= 20) is not divisible by its step 8" in bad["log"]
    assert "Epoch 0" not in bad["log"]
    from pgps.nnunet.loading.sampling import check_strategy

    with pytest.raises(ValueError, match=r"unknown batch sampling strategy 'random_crop'; choose one of: split_crop"):
        check_strategy("random_crop", 4, 10)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8, 9, 16, 17])
def test_foreground_share_is_half_at_every_batch_size(batch_size):
    from pgps.sampling import forced_foreground

    forced = forced_foreground(batch_size, 0.5)
    assert abs(int(forced.sum()) - batch_size / 2) <= 0.5
    assert list(forced) == sorted(forced)  # nnU-Net's rule: the last samples are forced


def _loader(tiny, strategy, batch_size, seed=0, without=()):
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from pgps.nnunet.loading.sampling import PlannedDataLoader

    pre = tiny / "preprocessed" / nn.DATASET
    folder = str(pre / "nnUNetPlans_3d_fullres")
    cases = [k for k in nnUNetDatasetBlosc2(folder).identifiers if k not in without]
    data = nnUNetDatasetBlosc2(folder, cases)
    labels = PlansManager(str(pre / "nnUNetPlans.json")).get_label_manager(
        json.loads((pre / "dataset.json").read_text())
    )
    return PlannedDataLoader.constant(data, batch_size, (8, 8, 8), (8, 8, 8), labels, strategy=strategy, seed=seed)


def _plan(loader, step=0) -> list[tuple[str, bool]]:
    """``(case, forced)`` of every sample of ``step``'s batch, from the loader's planner."""
    plan = loader.planner.plan(step)
    return [(loader.indices[c], bool(f)) for c, f in zip(plan.cases.tolist(), plan.forced, strict=True)]


def test_samplers_build_batches_as_appendix_a_describes(tiny):
    split = _loader(tiny, "split_crop", 16)
    for _ in range(5):
        batch = split.generate_train_batch()
        keys, target = batch["keys"], batch["target"]
        assert batch["data"].shape == (16, 1, 8, 8, 8) and target.shape == (16, 1, 8, 8, 8)
        assert len(set(keys[:8])) == len(set(keys[8:])) == 1 and keys[0] != keys[8]
        # forced-foreground patches are centred on a foreground voxel
        assert all((target[j] > 0).any() for j in range(8, 16))
    multi = _plan(_loader(tiny, "multi_crop", 8))
    assert [k for k, _ in multi][:4] == [multi[0][0], multi[1][0]] * 2 and multi[0][0] != multi[1][0]
    assert sum(f for _, f in multi) == 4 and {k for k, f in multi if f} == {k for k, f in multi if not f}
    single = _plan(_loader(tiny, "single_crop", 4))
    assert len({k for k, _ in single}) == 4
    assert len({k for k, _ in _plan(_loader(tiny, "single_volume", 9))}) == 1
    with pytest.raises(ValueError, match="single_crop strategy needs 7 distinct training cases"):
        _loader(tiny, "single_crop", 7)
    # a step's batch is a function of the seed and the step: a second loader gives the same batches
    a, b = _loader(tiny, "split_crop", 4, seed=5), _loader(tiny, "split_crop", 4, seed=5)
    assert (a.generate_train_batch()["data"] == b.generate_train_batch()["data"]).all()
    assert not (a.generate_train_batch()["data"] == _loader(tiny, "split_crop", 4, seed=6).generate_train_batch()[
        "data"]).all()  # fmt: skip


def test_case_without_foreground_falls_back_to_random_and_is_counted(tmp_path):
    root = tmp_path / "empty"
    nn.write_raw(root, empty_cases=nn.NUM_CASES - 1)  # nnU-Net cannot plan a dataset without any foreground
    nn.plan_and_preprocess(root)
    sampler = _loader(root, "split_crop", 6, without=[f"case_{nn.NUM_CASES - 1:03d}"])
    batch = sampler.generate_train_batch()
    assert batch["pgps_fg_fallbacks"] == 3


ALL_VARIANTS = """
import json, sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
from pgps.nnunet import variants
out = {}
for name in variants.TRAINERS:
    backbone = getattr(getattr(variants, name), "backbone", "")  # UNETR/SwinUNETR train their own configuration
    conf, plans = (f"3d_{backbone}", "nnUNetTransformerPlans") if backbone else ("3d_fullres", "nnUNetPlans")
    # nnU-Net's lookup of the name (recursive_find_trainer_class_by_name), as nnUNetv2_train does
    trainer = get_trainer_from_args("1", conf, 0, name, plans, device=torch.device("cpu"))
    cls = type(trainer)
    assert getattr(cls, "backbone", "") == backbone, name
    trainer.initialize()
    s = trainer.schedule
    probe = getattr(trainer, "memory_probe", None)
    out[name] = [cls.__name__, s.mode, s.iterations_per_epoch, [st.batch_size for st in s.stages],
                 list(s.patch_size_max), list(s.steps), probe.to_dict(2) if probe else None, cls.rpss_pool]
print(json.dumps(out))
"""


def test_every_variant_is_found_by_nnunet_and_builds_its_schedule(tiny):
    import subprocess

    from pgps.nnunet.variants import TRAINERS, TRAINING_LENGTHS

    nn.add_transformer_plans(tiny)  # tiny 3d_unetr (P_max 32x16x16) and 3d_swinunetr (64x32x32) configurations
    env = nn.env(tiny, tiny / "results_variants")
    proc = subprocess.run([nn.sys.executable, "-c", ALL_VARIANTS], env=env, capture_output=True, text=True)
    check(proc)
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(found) == sorted(TRAINERS)
    backbones = {"UNETR": (nn.TRANSFORMER_PATCH["unetr"], 16), "SwinUNETR": (nn.TRANSFORMER_PATCH["swinunetr"], 32)}
    for name, (cls_name, mode, ipe, batches, p_max, steps, probe, pool) in found.items():
        assert cls_name == name
        percent = name.rsplit("_", 1)[-1]
        fraction = TRAINING_LENGTHS[int(percent[:-3])] if percent.endswith("pct") else 1.0
        assert ipe == pgps.iterations_per_epoch(fraction)
        backbone = name.split("_")[2]
        expected_p_max, step = backbones.get(backbone, (nn.PATCH, 8))
        assert (p_max, steps) == (expected_p_max, [step] * 3)
        stages = pgps.make_schedule(mode, p_max, steps, 2, rpss_pool=pool).stages
        if name.endswith("_MemoryProbe"):  # batch sizes from the probe's measured memory per sample
            assert [s["patch_size"] for s in probe["stages"]] == [list(s.patch_size) for s in stages]
            per_sample = {tuple(s["patch_size"]): s["bytes_per_sample"] for s in probe["stages"]}
            assert batches == pgps.memory_batch_sizes([s.patch_size for s in stages], 2, per_sample.__getitem__)
        else:
            assert probe is None and batches == [s.batch_size for s in stages]


def test_stage_changes_with_worker_processes_train_through(runs):
    assert runs["workers"]["status"] == 0, runs["workers"]["log"][-3000:]
    rows = read_telemetry(nn.fold_folder(runs["work"] / "workers", PERFORMANCE))
    assert [r["batch_size"] for r in rows] == ["16", "8", "4", "2"]


def test_pgps_commands_find_the_trainers_without_nnunet_exttrainer(monkeypatch, tmp_path):
    """nnU-Net's own lookup finds a pgps trainer once pgps added its folder, after the user's own folders."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from pgps.nnunet import ext_trainer_path, use_pgps_trainers

    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    use_pgps_trainers()
    assert recursive_find_trainer_class_by_name("nnUNetTrainer_PGPS_Performance").__name__ == (
        "nnUNetTrainer_PGPS_Performance"
    )
    monkeypatch.setenv("nnUNet_extTrainer", str(tmp_path))
    use_pgps_trainers()
    use_pgps_trainers()
    assert os.environ["nnUNet_extTrainer"] == os.pathsep.join([str(tmp_path), ext_trainer_path()])
