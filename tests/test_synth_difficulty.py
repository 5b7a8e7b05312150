"""The per-case image difficulty of pgps.data.synth, measured from the generated images and label sets: contrast and
edge sharpness fall with it, the annotators' agreement falls with it, the draw is deterministic per seed and case,
and the knob moves neither the objects nor the noise."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import spearmanr

from pgps.data import synth
from pgps.metrics import label_dice

HARD = synth.preset(
    "organs",
    num_cases=12,
    shape=(40, 40, 40),
    shape_jitter=0,
    radii=((6.0, 8.0),),
    difficulty=(0.0, 1.0),
    hard_contrast=0.4,
    hard_blur=2.0,
)


@pytest.mark.parametrize("sigma", [0.4, 1.0, 1.7, 3.0])
def test_gaussian_blur_is_scipys_gaussian_filter(sigma):
    volume = np.random.default_rng(1).normal(size=(9, 12, 15))
    expected = ndimage.gaussian_filter(volume, sigma, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(synth.gaussian_blur(volume, sigma), expected, atol=1e-12)
    np.testing.assert_array_equal(synth.gaussian_blur(volume, 0.0), volume)
    with pytest.raises(ValueError, match="blur sd"):
        synth.gaussian_blur(volume, -1.0)


def test_case_difficulty_is_drawn_per_seed_and_case_alone():
    d = [synth.case_difficulty(HARD, i) for i in range(HARD.num_cases)]
    assert all(0 <= v <= 1 for v in d) and len(set(d)) == len(d)
    assert d == [synth.case_difficulty(synth.preset("organs", difficulty=(0.0, 1.0), num_cases=30), i)
                 for i in range(12)]  # fmt: skip  # the other knobs and the number of cases do not matter
    other = [synth.case_difficulty(synth.preset("organs", difficulty=(0.0, 1.0), seed=1), i) for i in range(12)]
    assert other != d
    narrow = synth.preset("organs", difficulty=(0.2, 0.3))
    assert all(0.2 <= synth.case_difficulty(narrow, i) <= 0.3 for i in range(20))
    assert synth.case_difficulty(synth.preset("organs", difficulty=(0.4, 0.4)), 3) == 0.4
    with pytest.raises(ValueError, match="difficulty must be a range"):
        synth.preset("organs", difficulty=(0.6, 0.2))
    with pytest.raises(ValueError, match="hard_contrast"):
        synth.preset("organs", hard_contrast=0.0)


def test_the_knob_moves_neither_the_objects_nor_the_noise():
    plain = synth.preset("organs", num_cases=3, noise_sd=1.0)
    faint = synth.preset("organs", num_cases=3, noise_sd=1.0, difficulty=(1.0, 1.0), hard_contrast=0.5, hard_blur=1.5)
    for i in range(3):
        image, label = synth.make_case(plain, i)
        hard_image, hard_label = synth.make_case(faint, i)
        np.testing.assert_array_equal(label, hard_label)
        means = np.array([plain.mean_intensity(c) for c in range(plain.num_classes + 1)])
        expected = synth.gaussian_blur(0.5 * means[label], 1.5) + (image - means[label])  # same noise draw
        np.testing.assert_allclose(hard_image, expected.astype(np.float32), atol=1e-5)


def _measure(config, index):
    """(core contrast / nominal contrast, steepest edge / contrast) of the one class in the noiseless image."""
    image, label = synth.make_case(config, index)
    core = ndimage.binary_erosion(label == 1, iterations=6)  # 3 blur sds or more from the edge
    contrast = float(image[core].mean())
    steepest = max(float(np.abs(np.diff(image, axis=a)).max()) for a in range(3))
    return contrast / config.mean_intensity(1), steepest / contrast


def test_contrast_and_sharpness_measured_in_the_images_fall_with_difficulty():
    knobs = {"num_cases": 12, "shape": (40, 40, 40), "shape_jitter": 0, "radii": ((10.0, 12.0),), "noise_sd": 0.0}
    clean = synth.configure("organs", num_classes=1, difficulty=(0.0, 1.0), hard_contrast=0.4, hard_blur=2.0, **knobs)
    d = np.array([synth.case_difficulty(clean, i) for i in range(12)])
    contrast, sharpness = np.array([_measure(clean, i) for i in range(12)]).T
    np.testing.assert_allclose(contrast, 1 - 0.6 * d, rtol=0.01)  # the core keeps its mean: contrast x (1 - 0.6 d)
    assert spearmanr(d, sharpness).statistic < -0.9
    blurred = d > 0.5  # a blurred step of height h is at most h / (sd sqrt(2 pi)) steep
    assert np.all(sharpness[blurred] <= 1.1 / (np.sqrt(2 * np.pi) * 2.0 * d[blurred]))
    sharp = synth.configure("organs", num_classes=1, **knobs)  # no difficulty: full contrast, one-voxel steps
    assert _measure(sharp, 0) == pytest.approx((1.0, 1.0))


def test_annotators_disagree_as_much_as_the_image_blurs():
    noise = synth.LabelNoise(count=3, levels=(0.0, 0.0), iso_spread=0.4)
    assert noise.iso_levels == pytest.approx((0.1, 0.9, 0.5))
    d, agreement = [], []
    for i in range(HARD.num_cases):
        sets = synth.make_label_sets(HARD, noise, i, 0.0)
        pairs = [label_dice(sets[a], sets[b]) for a in range(3) for b in range(a + 1, 3)]
        d.append(synth.case_difficulty(HARD, i))
        agreement.append(np.mean(pairs))
    assert spearmanr(d, agreement).statistic < -0.9
    assert max(agreement) > 0.95 and min(agreement) < 0.75
    # a sharp image: every annotator draws the true outline
    sharp = synth.preset("organs", num_cases=2, difficulty=(0.0, 0.0))
    for s in synth.make_label_sets(sharp, noise, 0, 0.0):
        np.testing.assert_array_equal(s, synth.make_label(sharp, 0))


def test_generate_dataset_records_every_cases_difficulty(tmp_path):
    pytest.importorskip("SimpleITK")
    config = synth.preset(
        "organs", num_cases=3, shape=(24, 24, 24), shape_jitter=0, radii=((3.0, 4.0),), difficulty=(0.1, 0.9)
    )
    noise = synth.label_noise(2, (0.0, 0.0), iso_spread=0.3)
    path = synth.generate_dataset(config, tmp_path, 700, "Hard", label_noise=noise, test_cases=2)
    recorded = json.loads((path / "dataset.json").read_text())["pgps_synth"]["case_difficulty"]
    assert recorded == {f"case_{i:03d}": synth.case_difficulty(config, i) for i in range(5)}
    assert all(math.isfinite(v) for v in recorded.values()) and sorted(p.name for p in path.iterdir()) == [
        "dataset.json",
        "imagesTr",
        "imagesTs",
        "labelSets",
        "labelsTr",
        "labelsTs",
    ]
    lines = synth.describe(
        "organs", config, json.loads((path / "dataset.json").read_text())["pgps_synth"]["statistics"], noise
    )
    assert any("image difficulty per case uniform in 0.1..0.9" in line for line in lines)
    assert any("iso-levels 0.5 +- 0.3" in line for line in lines)
