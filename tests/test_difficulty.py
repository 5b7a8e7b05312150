"""The torch-free core of the data-level curriculum: Dice and NSD (pgps.metrics), CDL-UNet's Eq. 1 and
Eq. 2 (pgps.data.difficulty) and the data pacing functions (pgps.data.curriculum), against hand-computed values."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from pgps.data import curriculum as dc
from pgps.data.difficulty import (
    DifficultyTable,
    clean_labels,
    difficulty_csv,
    difficulty_group,
    difficulty_score,
    pairwise_dice,
    reliability_scores,
    score_case,
)
from pgps.metrics import dice_per_class, label_dice
from pgps.metrics.surface import normalized_surface_dice, nsd_per_class

# -- Dice between label maps ---------------------------------------------------------------------------


def test_dice_per_class_and_its_convention_for_absent_classes():
    a = np.array([[1, 1, 1, 0], [2, 2, 0, 0]])
    b = np.array([[1, 1, 0, 0], [2, 0, 0, 3]])
    # class 1: |A| 3, |B| 2, overlap 2 -> 4/5; class 2: 2, 1, 1 -> 2/3; class 3: 0, 1, 0 -> 0
    assert dice_per_class(a, b) == pytest.approx({1: 0.8, 2: 2 / 3, 3: 0.0})
    assert label_dice(a, b) == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    # class 4 is absent from both: left out by default, 1.0 with absent="one" (the authors' script)
    assert math.isnan(dice_per_class(a, b, classes=[4])[4])
    assert label_dice(a, b, classes=[1, 2, 3, 4]) == pytest.approx((0.8 + 2 / 3) / 3)
    assert label_dice(a, b, classes=[1, 2, 3, 4], absent="one") == pytest.approx((0.8 + 2 / 3 + 0 + 1) / 4)
    # two maps without foreground agree perfectly; a map against itself is 1
    assert label_dice(np.zeros((3, 3), int), np.zeros((3, 3), int)) == 1.0
    assert label_dice(a, a) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        label_dice(a, b[:, :3])
    with pytest.raises(ValueError, match="must hold integers"):
        label_dice(a.astype(float), b)


# -- Eq. 1 and Eq. 2 ---------------------------------------------------------------------------------------

L1 = np.array([1, 1, 1, 1, 0, 0, 0, 0])
L2 = np.array([1, 1, 1, 0, 0, 0, 0, 0])
L3 = np.array([1, 1, 1, 1, 1, 0, 0, 0])


def test_reliability_and_difficulty_scores_by_hand():
    # Dice(L1, L2) = 2*3/(4+3) = 6/7; Dice(L1, L3) = 2*4/(4+5) = 8/9; Dice(L2, L3) = 2*3/(3+5) = 3/4
    dice = pairwise_dice([L1, L2, L3])
    assert dice == pytest.approx(np.array([[1, 6 / 7, 8 / 9], [6 / 7, 1, 3 / 4], [8 / 9, 3 / 4, 1]]))
    # Eq. 1: RS_i = (Dice(L_i, L_j) + Dice(L_i, L_k)) / 2
    rs = reliability_scores(dice)
    assert rs == pytest.approx([(6 / 7 + 8 / 9) / 2, (6 / 7 + 3 / 4) / 2, (8 / 9 + 3 / 4) / 2])
    case = score_case("case_000", [L1, L2, L3])
    assert case.real == 0  # L1 has the highest RS: L_real
    # Eq. 2: DS = (Dice(L_real, L_1) + Dice(L_real, L_2)) / 2 = (1 + 6/7) / 2 = 13/14 > 0.9: easy
    assert case.ds == pytest.approx(13 / 14) and case.group == "easy"


def test_the_reference_set_can_be_the_most_reliable():
    a = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    b = np.array([0, 0, 1, 1, 1, 1, 0, 0])
    ref = np.array([0, 1, 1, 1, 1, 0, 0, 0])
    # Dice(a, b) = 4/8, Dice(a, ref) = 6/8, Dice(b, ref) = 6/8: RS = 0.625, 0.625, 0.75
    case = score_case("c", [a, b, ref])
    assert case.rs == pytest.approx((0.625, 0.625, 0.75)) and case.real == 2
    # DS = (Dice(ref, a) + Dice(ref, b)) / 2 = 0.75 <= 0.8: erroneous
    assert case.ds == pytest.approx(0.75) and case.group == "erroneous"
    assert difficulty_score(pairwise_dice([a, b, ref]), real=2, provided=[0]) == pytest.approx(0.75)
    # ties go to the lowest index
    assert score_case("t", [a, a]).real == 0


def test_groups_follow_the_thresholds_and_reject_bad_ones():
    assert [difficulty_group(v) for v in (0.95, 0.9, 0.85, 0.8, 0.1)] == ["easy", "hard", "hard", "erroneous",
                                                                          "erroneous"]  # fmt: skip
    assert difficulty_group(0.85, easy=0.84, erroneous=0.5) == "easy"
    with pytest.raises(ValueError, match="thresholds must satisfy"):
        difficulty_group(0.5, easy=0.5, erroneous=0.6)
    with pytest.raises(ValueError, match="differ in shape"):
        score_case("x", [L1, L1[:4]])


def test_cleaning_sets_out_of_range_labels_to_background():
    label, count = clean_labels(np.array([0, 1, 14, 2, 255]), range(14))
    assert label.tolist() == [0, 1, 0, 2, 0] and count == 2


def test_difficulty_csv_round_trip_and_regrouping(tmp_path):
    rows = [score_case("a", [L1, L2, L3]), score_case("b", [L1, L1, L1]), score_case("c", [L1, 1 - L1, L1])]
    path = tmp_path / "difficulty.csv"
    path.write_text(difficulty_csv(rows, ["s1", "s2", "s3"]))
    header = path.read_text().splitlines()[0].split(",")
    assert header[:5] == ["case", "ds", "group", "real", "rs"]
    assert {"rs_s1", "rs_s2", "rs_s3", "dice_s1_s2", "dice_s1_s3", "dice_s2_s3"} <= set(header)
    table = DifficultyTable.read(str(path))
    assert table.ds["b"] == 1.0 and table.groups == {"a": "easy", "b": "easy", "c": "erroneous"}
    assert table.ranked() == ["b", "a"]
    regrouped = DifficultyTable.read(str(path), easy=0.95)
    assert regrouped.groups["a"] == "hard"
    bad = tmp_path / "bad.csv"
    bad.write_text("case,ds\nx,1.5\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: ds 1.5 is outside \[0, 1\]"):
        DifficultyTable.read(str(bad))


# -- data pacing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "epochs", "params", "expected"),
    [
        # the paper's two phases: 40% of the epochs on the 3 easy cases, then all 7 usable ones
        ("easy_then_hard", 10, {}, [3] * 4 + [7] * 6),
        # Platanios linear: c = e*(1-0.2)/5 + 0.2 = .2,.36,.52,.68,.84 of 10 cases, rounded up
        ("linear", 5, {"start": 0.2}, [2, 4, 6, 7, 9]),
        # Platanios root (p=2): c = sqrt(0.04 + 0.192 e) = .2, .482, .651, .785, .899
        ("root", 5, {"start": 0.2}, [2, 5, 7, 8, 9]),
        # Hacohen & Weinshall fixed exponential: 0.1 * 2^(e // 2)
        ("exponential", 8, {"start": 0.1, "increase": 2, "step_length": 2}, [1, 1, 2, 2, 4, 4, 8, 8]),
        # DeepSpeed fixed_linear, evaluated at step s = e + 1 as its engine does: floor(s/4 * (10-2) + 2), multiples
        # of 2, capped at 10
        ("fixed_linear", 6, {"min_cases": 2, "max_cases": 10, "total_epochs": 4, "step": 2}, [4, 6, 8, 10, 10, 10]),
        # DeepSpeed fixed_root at s = e + 1: floor(sqrt(s/4) * 8 + 1) = 5, 6.66, 7.93, 9, then capped
        ("fixed_root", 5, {"min_cases": 1, "max_cases": 9, "total_epochs": 4}, [5, 6, 7, 9, 9]),
        # DeepSpeed fixed_discrete: 2 cases before epoch 2, 5 before epoch 4, then 9
        ("fixed_discrete", 6, {"difficulty": [2, 5, 9], "max_epoch": [2, 4]}, [2, 2, 5, 5, 9, 9]),
        ("none", 3, {}, [10, 10, 10]),
    ],
)
def test_pacing_functions_by_hand(kind, epochs, params, expected):
    usable = 7 if kind == "easy_then_hard" else 10
    assert dc.pacing_counts(kind, epochs, 3, usable, params) == expected


def deepspeed_fixed_root(global_steps: int, total_step: int, min_d: int, max_d: int, step: int, degree: float) -> int:
    """DeepSpeed's documented fixed_root schedule (fixed_linear: degree 1), written out from its curriculum
    scheduler: floor((steps / total_step)^(1/degree) * (max - min) + min), less its remainder modulo the difficulty
    step, at most max. Its engine calls it with global_steps + 1."""
    d = math.floor((global_steps / total_step) ** (1.0 / degree) * (max_d - min_d) + min_d)
    return min(d - d % step, max_d)


@pytest.mark.parametrize(("kind", "degree"), [("fixed_linear", 1.0), ("fixed_root", 2.0), ("fixed_root", 3.0)])
def test_fixed_schedules_follow_deepspeed_and_reach_every_case_at_the_last_epoch(kind, degree):
    epochs, usable = 37, 23
    params = {"min_cases": 3, "step": 1} | ({"degree": degree} if kind == "fixed_root" else {})
    counts = dc.pacing_counts(kind, epochs, 5, usable, params)
    assert counts == [deepspeed_fixed_root(e + 1, epochs, 3, usable, 1, degree) for e in range(epochs)]
    assert counts[-1] == usable  # numbered from 0 it stopped at 22 of 23 cases


def test_pacing_rejects_unknown_kinds_and_parameters():
    with pytest.raises(ValueError, match="unknown data pacing 'cosine'"):
        dc.pacing_counts("cosine", 10, 1, 5)
    with pytest.raises(ValueError, match="linear pacing has no parameter"):
        dc.pacing_counts("linear", 10, 1, 5, {"degree": 2})
    with pytest.raises(ValueError, match="needs at least one easy case"):
        dc.pacing_counts("easy_then_hard", 10, 0, 5)
    with pytest.raises(ValueError, match="one max_epoch fewer"):
        dc.pacing_counts("fixed_discrete", 10, 1, 5, {"difficulty": [1, 2], "max_epoch": [2, 3]})


def _table(ds: dict[str, float]) -> DifficultyTable:
    return DifficultyTable(ds, {c: difficulty_group(v) for c, v in ds.items()})


def test_data_schedule_ranks_easy_first_and_resumes():
    table = _table({"a": 0.85, "b": 0.99, "c": 0.5, "d": 0.95, "e": 0.81})
    s = dc.make_data_schedule(table, "easy_then_hard", epochs=5)
    assert s.order == ("b", "d", "a", "e") and s.num_easy == 2  # erroneous c is never drawn
    assert [s.cases_at(e) for e in (0, 1, 2)] == [["b", "d"], ["b", "d"], ["b", "d", "a", "e"]]
    assert [(p.start, p.stop, p.num_cases) for p in s.phases] == [(0, 2, 2), (2, 5, 4)]
    assert dc.restart_epoch(s, 3) == (1, 3)
    assert "phase 1: epochs 2-4 (3), 4 cases: b, d, a, e" in s.table()
    run = dc.DataCurriculum(s)
    for _ in range(3):
        run.step()
    resumed = dc.DataCurriculum(dc.DataSchedule.from_dict(s.to_dict()))
    resumed.load_state_dict(run.state_dict())
    assert resumed.epoch == 3 and resumed.phase.index == 1 and resumed.cases == run.cases
    other = dc.DataCurriculum(dc.make_data_schedule(table, "easy_then_hard", epochs=6))
    with pytest.raises(ValueError, match="different data curriculum"):
        other.load_state_dict(run.state_dict())
    with pytest.raises(ValueError, match="learning-rate restart needs a phased pacing"):
        dc.restart_epoch(dc.make_data_schedule(table, "linear", epochs=5), 1)


# -- Normalized Surface Dice -------------------------------------------------------------------------------


def _cube(shape, corner, n):
    m = np.zeros(shape, bool)
    m[tuple(slice(c, c + n) for c in corner)] = True
    return m


def test_nsd_of_a_cube_shifted_by_one_voxel():
    n = 4
    ref = _cube((8, 8, 8), (2, 2, 2), n)
    shifted = _cube((8, 8, 8), (3, 2, 2), n)
    # Boundary of an n-cube: n^3 - (n-2)^3 = 56 voxels each. Boundary voxels on the other boundary:
    # the lateral rings of the n-1 shared layers, 4(n-1) each: 4(n-1)^2 = 36 per cube.
    # Below one voxel of tolerance: (36 + 36) / (56 + 56) = 9/14; at one voxel every boundary voxel is within.
    assert normalized_surface_dice(shifted, ref, 0.5) == pytest.approx(9 / 14)
    assert normalized_surface_dice(shifted, ref, 1.0) == 1.0
    # spacing 2 mm along the shift: 9/14 below 1 mm; from 1 mm the 2x2 inner voxels of the face each cube
    # has inside the other (4 per cube) reach the other's boundary ring of that layer in-plane (1 mm):
    # (36 + 4 + 36 + 4) / 112 = 5/7; from 2 mm every boundary voxel is within
    assert normalized_surface_dice(shifted, ref, 0.9, spacing=(2, 1, 1)) == pytest.approx(9 / 14)
    assert normalized_surface_dice(shifted, ref, 1.9, spacing=(2, 1, 1)) == pytest.approx(5 / 7)
    assert normalized_surface_dice(shifted, ref, 2.0, spacing=(2, 1, 1)) == 1.0
    assert normalized_surface_dice(ref, ref, 0.0) == 1.0
    assert math.isnan(normalized_surface_dice(ref & False, ref & False, 1.0))
    assert normalized_surface_dice(ref, ref & False, 1.0) == 0.0
    labels_a, labels_b = ref.astype(np.uint8), shifted.astype(np.uint8) * 2
    assert nsd_per_class(labels_a, labels_b, 1.0) == {1: 0.0, 2: 0.0}


def test_nsd_equals_monai_surface_dice_on_random_masks():
    import torch
    from monai.metrics import SurfaceDiceMetric
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for trial in range(6):
        shape = tuple(int(s) for s in rng.integers(12, 24, size=3))
        spacing = tuple(float(s) for s in rng.uniform(0.5, 2.5, size=3))
        tolerance = float(rng.uniform(0.3, 3.0))

        def random_labels(shape=shape, border=trial == 5):
            noise = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
            labels = np.digitize(noise, np.quantile(noise, [0.6, 0.8])).astype(np.int64)
            if border:
                labels[:, :, :3] = 2  # a class touching the image border
            return labels

        pred, ref = random_labels(), random_labels()
        ours = nsd_per_class(pred, ref, tolerance, spacing, classes=[1, 2])

        def onehot(x):
            return torch.from_numpy(np.stack([x == c for c in range(3)]).astype(np.float32))[None]

        metric = SurfaceDiceMetric(class_thresholds=[tolerance, tolerance], include_background=False)
        monai = metric(onehot(pred), onehot(ref), spacing=spacing)[0].tolist()
        assert [ours[1], ours[2]] == pytest.approx(monai, abs=1e-6), (trial, shape, spacing, tolerance)


def test_core_modules_do_not_import_torch_or_scipy():
    code = (
        "import sys, pgps, pgps.metrics, pgps.data.difficulty, pgps.data.curriculum\n"
        "print(sorted(m for m in ('torch', 'scipy', 'nnunetv2', 'SimpleITK') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- synthetic label sets with known, graded corruption (pgps synth --label-sets) -----------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_difficulty_ranking_recovers_the_corruption_order(seed):
    from scipy.stats import spearmanr

    from pgps.data import synth

    config = synth.preset("organs", num_cases=12, seed=seed)
    noise = synth.LabelNoise()  # 3 sets, levels 0..1 over the cases, set factors 1, 0.75, 0.5
    levels = noise.case_levels(config.num_cases, config.seed)
    assert sorted(levels) == pytest.approx(np.linspace(0, 1, 12).tolist())
    cases = [score_case(f"c{i}", synth.make_label_sets(config, noise, i, levels[i])) for i in range(12)]
    rho = spearmanr([c.ds for c in cases], levels).statistic
    assert rho <= -0.9, rho  # high DS (easy) where the labels are least corrupted
    # L_real is the least corrupted set (factor 0.5) wherever the sets differ (seeds 0-5: 63 of 66 cases, the
    # middle set otherwise), never the most corrupted one
    reals = [c.real for c, level in zip(cases, levels, strict=True) if level > 0]
    assert reals.count(2) >= 10 and 0 not in reals
    clean = cases[levels.index(0.0)]
    assert clean.ds == 1.0 and clean.group == "easy"


def test_synth_writes_label_sets_and_test_cases(tmp_path, capsys):
    import json

    import SimpleITK as sitk

    from pgps.cli import main
    from pgps.data import synth

    args = ["synth", "--preset", "organs", "--cases", "3", "--shape", "32", "32", "32", "--shape-jitter", "0",
            "--radius", "4", "6", "--label-sets", "2", "--label-levels", "0", "0.5", "--test-cases", "1",
            "--out", str(tmp_path), "--dataset-id", "7", "--name", "N", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    root = tmp_path / "Dataset007_N"
    meta = json.loads((root / "dataset.json").read_text())["pgps_synth"]
    levels = meta["label_noise"]["case_levels"]
    assert sorted(levels.values()) == [0.0, 0.25, 0.5] and meta["test_cases"] == 1
    assert sorted(p.name for p in (root / "imagesTs").iterdir()) == ["case_003_0000.nii.gz"]
    config = synth.SynthConfig.from_dict(meta["config"])
    noise = synth.LabelNoise(count=2, levels=(0.0, 0.5))
    for case, level in levels.items():
        index = int(case.split("_")[1])
        expected = synth.make_label_sets(config, noise, index, level)
        for k in (1, 2):
            written = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelSets" / f"set_{k}" / f"{case}.nii.gz")))
            assert np.array_equal(written, expected[k - 1])
        clean = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / f"{case}.nii.gz")))
        assert np.array_equal(clean, synth.make_case(config, index)[1])
        assert np.array_equal(expected[0], clean) == (level == 0.0)
    assert "2 noisy label sets per case" in capsys.readouterr().out
    with pytest.raises(ValueError, match="factors must be 2 numbers"):
        synth.LabelNoise(count=2, factors=(1.0,))
