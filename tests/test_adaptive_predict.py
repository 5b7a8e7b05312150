"""CDL-UNet's adaptive sliding window (pgps.nnunet.inference.predict) on a stand-in network, window by window: the
windows it evaluates and skips, what uncovered voxels become, and equality with nnUNetPredictor when off."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

from pgps.nnunet.inference.predict import Adaptation, AdaptivePredictor, centre_first_order, remove_small_components

PATCH = (16, 16, 16)


class Thresholder(torch.nn.Module):
    """Logits (background, foreground) = (-x, x): foreground where the input is positive. Counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.cat([-x, x], dim=1)


def predictor(cls, **kwargs):
    p = cls(tile_step_size=0.5, use_mirroring=False, perform_everything_on_device=False,
            device=torch.device("cpu"), allow_tqdm=False, **kwargs)  # fmt: skip
    p.network = Thresholder()
    p.list_of_parameters = [p.network.state_dict()]
    p.configuration_manager = SimpleNamespace(patch_size=list(PATCH))
    p.label_manager = SimpleNamespace(num_segmentation_heads=2, has_regions=False)
    p.allowed_mirroring_axes = None
    return p


def image_with_object():
    """64x32x32 (z, y, x), -1 background with a 8x24x24 positive block at z 20-27 (4608 voxels)."""
    x = -torch.ones((1, 64, 32, 32))
    x[:, 20:28, 4:28, 4:28] = 1.0
    return x


def test_off_is_nnunet_predictor_exactly():
    x = image_with_object()
    ours = predictor(AdaptivePredictor, adaptation=Adaptation.off())
    plain = predictor(nnUNetPredictor)
    a = ours.predict_logits_from_preprocessed_data(x)
    b = plain.predict_logits_from_preprocessed_data(x)
    assert torch.equal(a, b)
    # nnU-Net's windows at step 0.5: ceil((64 - 16) / 8) + 1 = 7 along z, 3 along y and x
    assert ours.network.calls == plain.network.calls == 7 * 3 * 3
    row = ours.report[-1]
    assert (row["windows_fine"], row["windows_planned"], row["windows_evaluated"], row["windows_skipped"]) == (
        63, 63, 63, 0
    )  # fmt: skip


def test_coarse_step_above_the_window_threshold():
    x = image_with_object()
    p = predictor(AdaptivePredictor, adaptation=Adaptation(window_threshold=50, centre_first=False))
    p.predict_logits_from_preprocessed_data(x)
    # 63 fine windows >= 50: step 1.0, ceil(48 / 16) + 1 = 4 along z, 2 along y and x
    coarse = [len(s) for s in compute_steps_for_sliding_window((64, 32, 32), PATCH, 1.0)]
    assert coarse == [4, 2, 2] and p.network.calls == 16
    assert p.report[-1]["step"] == 1.0 and p.report[-1]["windows_planned"] == 16
    below = predictor(AdaptivePredictor, adaptation=Adaptation(window_threshold=64, centre_first=False))
    below.predict_logits_from_preprocessed_data(x)
    assert below.network.calls == 63 and below.report[-1]["step"] == 0.5


def test_centre_first_skips_empty_slabs_and_fills_background():
    x = image_with_object()
    p = predictor(AdaptivePredictor, adaptation=Adaptation(window_threshold=50, min_foreground=1000))
    logits = p.predict_logits_from_preprocessed_data(x)
    # coarse windows: slabs z 0-15, 16-31, 32-47, 48-63, each with 2x2 windows in y, x (starts 0 and 16).
    # The centre window of each slab (all four are equally central: the first, y 0-15, x 0-15) is evaluated;
    # only slab 16-31 holds the block: 8 x 12 x 12 = 1152 >= 1000 foreground voxels in its centre window, so
    # its 3 other windows are evaluated too; the other slabs skip theirs: 4 + 3 = 7 evaluated, 9 skipped.
    assert p.network.calls == 7
    row = p.report[-1]
    assert (row["windows_planned"], row["windows_evaluated"], row["windows_skipped"]) == (16, 7, 9)
    seg = logits.argmax(0)
    assert torch.equal(seg, (x[0] > 0).long())  # uncovered voxels are background, the block is found
    assert torch.isfinite(logits).all()
    # a centre window with fewer foreground voxels than min_foreground skips its slab
    strict = predictor(AdaptivePredictor, adaptation=Adaptation(window_threshold=50, min_foreground=1153))
    strict.predict_logits_from_preprocessed_data(x)
    assert strict.network.calls == 4


def test_centre_window_is_nearest_the_image_centre():
    slicers = [(slice(None), slice(z, z + 16), slice(y, y + 16), slice(0, 16)) for z in (0, 8) for y in (0, 8, 16)]
    order = centre_first_order(slicers, (24, 32, 16), slab_axis=0)
    assert [[sl[2].start for sl in slab] for slab in order] == [[8, 0, 16], [8, 0, 16]]
    assert [slab[0][1].start for slab in order] == [0, 8]


def test_small_components_are_removed():
    seg = np.zeros((10, 10, 10), np.uint8)
    seg[0:4, 0:5, 0:5] = 1  # 100 voxels: the largest of class 1
    seg[8:10, 8:10, 8:10] = 1  # 8 voxels < 10% of 100
    seg[6, 0, 0] = 2  # class 2's only component: kept (it is its own largest)
    out, removed = remove_small_components(seg, min_fraction=0.1)
    assert removed == 1 and (out == 1).sum() == 100 and (out == 2).sum() == 1
    out, removed = remove_small_components(seg, min_fraction=None, min_voxels=9)
    assert removed == 2 and (out == 2).sum() == 0 and (out == 1).sum() == 100


def test_bad_adaptation_values_raise():
    with pytest.raises(ValueError, match="coarse_step must be in"):
        Adaptation(coarse_step=1.5)
    with pytest.raises(ValueError, match="window_threshold must be"):
        Adaptation(window_threshold=0)
