"""Exact reproduction of the published stage lists, batch sizes and voxel counts."""

import pytest

import pgps
from tests.published import (
    JOURNAL_HIPPOCAMPUS_FIRST_BATCH,
    MICCAI_SUPP_TABLE_2_LUNG_PGPS,
    MICCAI_SUPP_TABLE_2_LUNG_RPSS_APPROX,
    MICCAI_SUPP_TABLE_3,
    MICCAI_TABLE_1_VOXELS,
    parse_supp_table_3,
)

TASKS = sorted(MICCAI_SUPP_TABLE_3)


def planned(task):
    steps, stages, batches = parse_supp_table_3(task)
    return stages[-1], steps, batches[-1]


@pytest.mark.parametrize("task", TASKS)
def test_miccai_supp_table_3_stages(task):
    steps, stages, _ = parse_supp_table_3(task)
    p_max, _, _ = planned(task)
    assert pgps.legacy_stages(p_max, steps) == stages


@pytest.mark.parametrize("task", TASKS)
def test_miccai_supp_table_3_pgps_plus_batch_sizes(task):
    p_max, steps, b_base = planned(task)
    _, stages, batches = parse_supp_table_3(task)
    schedule = pgps.make_schedule("miccai-plus", p_max, steps, b_base)
    assert [s.patch_size for s in schedule.stages] == stages
    assert [s.batch_size for s in schedule.stages] == batches


@pytest.mark.parametrize("task", TASKS)
def test_miccai_plain_pgps_uses_final_batch_size(task):
    p_max, steps, b_base = planned(task)
    schedule = pgps.make_schedule("miccai", p_max, steps, b_base)
    assert {s.batch_size for s in schedule.stages} == {b_base}


# Table 1's "Voxels Shown" of these entries cannot be reproduced from Supplemental Table 3's own
# stages and batch sizes (Colon and Pancreas share one stage structure yet are published with
# different values). We keep them as strict expected failures so that the discrepancy stays visible.
TABLE_1_NOT_FROM_SUPP_TABLE_3 = {
    ("Colon", "miccai"),
    ("Colon", "miccai-plus"),
    ("Pancreas", "miccai"),
    ("Pancreas", "miccai-plus"),
    ("Prostate", "miccai"),
    ("Prostate", "miccai-plus"),
    ("Spleen", "miccai-plus"),
}


@pytest.mark.parametrize(
    ("task", "mode"),
    [
        pytest.param(
            task,
            mode,
            marks=[pytest.mark.xfail(strict=True, reason="published value inconsistent with Supp. Table 3")]
            if (task, mode) in TABLE_1_NOT_FROM_SUPP_TABLE_3
            else [],
        )
        for task in TASKS
        for mode in ("miccai", "miccai-plus")
    ],
)
def test_miccai_table_1_voxels_shown(task, mode):
    p_max, steps, b_base = planned(task)
    published = MICCAI_TABLE_1_VOXELS[task][("miccai", "miccai-plus").index(mode)]
    ours = 100 * pgps.relative_voxels(pgps.make_schedule(mode, p_max, steps, b_base))
    assert ours == pytest.approx(published, abs=0.005)


@pytest.mark.parametrize("length", sorted(MICCAI_SUPP_TABLE_2_LUNG_PGPS))
def test_miccai_supp_table_2_lung_training_lengths(length):
    p_max, steps, b_base = planned("Lung")
    ipe = pgps.iterations_per_epoch(length)
    schedule = pgps.make_schedule("miccai", p_max, steps, b_base, iterations_per_epoch=ipe)
    cps_full = pgps.make_schedule("cps", p_max, steps, b_base)
    ours = 100 * pgps.relative_voxels(schedule, reference=cps_full)
    # The table rounds twice (35.349 -> 35.35 in Table 1 -> 35.4 here), hence 0.06 and not 0.05.
    assert ours == pytest.approx(MICCAI_SUPP_TABLE_2_LUNG_PGPS[length], abs=0.06)


def test_miccai_supp_table_2_rpss_voxels_need_the_miccai_pool():
    """RPSS's voxels (≈ 35.4% of CPS, printed with "∼") fit a draw over the MICCAI stages (34.7% in expectation),
    not over the journal stages (30.8%): evidence that the paper's RPSS pool is the MICCAI stage list."""
    p_max, steps, b_base = planned("Lung")
    ours = {
        pool: 100 * pgps.relative_voxels(pgps.make_schedule("rpss", p_max, steps, b_base, rpss_pool=pool))
        for pool in ("miccai", "journal")
    }
    assert ours["miccai"] == pytest.approx(MICCAI_SUPP_TABLE_2_LUNG_RPSS_APPROX, abs=1.0)
    assert abs(ours["journal"] - MICCAI_SUPP_TABLE_2_LUNG_RPSS_APPROX) > 4


def test_journal_hippocampus_first_stage_batch():
    schedule = pgps.make_schedule("performance", (40, 56, 40), (8, 8, 8), 9)
    assert schedule.stages[0].patch_size == (8, 8, 8)
    assert schedule.stages[0].batch_size == JOURNAL_HIPPOCAMPUS_FIRST_BATCH


def test_spec_examples():
    # SPEC section 1: P_max 128^3, step 32: 10 stages; P_max 40x56x40, step 8: 15 stages.
    big = pgps.journal_stages((128, 128, 128), (32, 32, 32))
    assert len(big) == 10
    assert big[:4] == [(32, 32, 32), (64, 32, 32), (64, 64, 32), (64, 64, 64)]
    assert big[4] == (96, 64, 64) and big[-1] == (128, 128, 128)
    assert len(pgps.journal_stages((40, 56, 40), (8, 8, 8))) == 15
    # SPEC: PGPS+ on Hippocampus gives 24, 12, then 9; on Brain 24, 12, 6, 4, 3, 2, 2, 2, 2.
    hippo = pgps.make_schedule("miccai-plus", (40, 56, 40), (8, 8, 8), 9)
    assert [s.batch_size for s in hippo.stages] == [24, 12] + [9] * 12
    brain = pgps.make_schedule("miccai-plus", (128, 128, 128), (32, 32, 32), 2)
    assert [s.batch_size for s in brain.stages] == [24, 12, 6, 4, 3, 2, 2, 2, 2]


def test_issue_example_performance_128():
    # Issue 2: "prints 10 stages starting at 32^3 with batch 128".
    schedule = pgps.make_schedule("performance", (128, 128, 128), (32, 32, 32), 2)
    assert schedule.num_stages == 10
    assert schedule.stages[0].patch_size == (32, 32, 32)
    assert schedule.stages[0].batch_size == 128


def _flops_benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "performance_flops.py"
    spec = importlib.util.spec_from_file_location("performance_flops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_performance_flops_notes_are_the_benchmarks_numbers():
    """The notes on Table 1's PGPS-Perf FLOPs (published/table1.csv) state what benchmarks/performance_flops.py
    computes for the MSD plans: the article's accounting, our numel batch formula and Algorithm 1 as printed."""
    import re

    from pgps.report.published import load_published

    bench = _flops_benchmark()
    table1 = load_published("table1").set_index(["row", "column"])
    for task, plan in bench.PLANS.items():
        note = table1.loc[(task, "flops.performance"), "note"]
        article = float(re.search(r"first stage not counted\) gives ([\d.]+);", note)[1])
        ours = float(re.search(r"ours counts every stage: ([\d.]+) on", note)[1])
        algorithm1 = float(re.search(r"Algorithm 1 as printed ([\d.]+);", note)[1])
        found = bench.candidates(*plan, with_profiler=False)
        computed = (round(found["article"], 1), round(found["voxels"], 1), round(found["algorithm1"], 1))
        assert computed == (article, ours, algorithm1), task
        assert table1.loc[(task, "flops.performance"), "value"] == bench.PRINTED[task]


def test_profiler_flops_of_the_unet_equal_its_iterated_voxels():
    """FLOPs counted by torch's FlopCounterMode on nnU-Net's U-Net (forward and backward, every stage of
    PGPS-Performance on MSD Hippocampus's plans) give the same relative FLOPs as iterated voxels."""
    bench = _flops_benchmark()
    found = bench.candidates(*bench.PLANS["MSD_Hippocampus"])
    assert found["profiler"] == pytest.approx(found["voxels"], rel=1e-9)
