"""Loss variants (pgps.nnunet.losses) against reference computations, and the learning-rate rule (pgps.lr).

References: MONAI's FocalLoss (Lin et al. 2017's formula, softmax and sigmoid forms), torch's cross-entropy
(focal with gamma 0), scipy's grey-scale morphology for the perimeter loss's soft contour (El Jurdi et al.
2021: opening minus erosion with 3-wide windows), a numpy sort for nnU-Net's TopK10, and cubes whose
contour ring is counted by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss, DC_and_topk_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from scipy import ndimage

from pgps.lr import scaled_learning_rate
from pgps.nnunet import losses
from pgps.nnunet.losses import FocalLoss, PerimeterLoss, Rebalancing, soft_contour, soft_perimeter, vary_loss


def _batch(seed: int, classes: int = 3, shape=(2, 6, 7, 5)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], classes, *shape[1:], generator=g) * 2
    target = torch.randint(0, classes, (shape[0], 1, *shape[1:]), generator=g)
    return logits, target


def test_focal_softmax_matches_monai_and_cross_entropy():
    from monai.losses import FocalLoss as MonaiFocal

    logits, target = _batch(0)
    ours = FocalLoss(gamma=2.0)(logits, target)
    # MONAI sums -(1-p)^g log(p) * onehot over classes and voxels; ours averages over voxels only
    monai = MonaiFocal(include_background=True, to_onehot_y=True, gamma=2.0, use_softmax=True, reduction="none")
    voxels = target.numel()
    torch.testing.assert_close(ours, monai(logits, target).sum() / voxels)
    # gamma 0 is the cross-entropy
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, target), ce)
    # alpha: background weighted 1 - alpha, foreground alpha (MONAI's scalar convention)
    monai_alpha = MonaiFocal(to_onehot_y=True, gamma=2.0, alpha=0.25, use_softmax=True, reduction="none")
    ours_alpha = FocalLoss(gamma=2.0, alpha=0.25)(logits, target)
    torch.testing.assert_close(ours_alpha, monai_alpha(logits, target).sum() / voxels)


def test_focal_ignores_ignore_label_voxels():
    from monai.losses import FocalLoss as MonaiFocal

    logits, target = _batch(1)
    ignore = 3
    masked = target.clone()
    masked[:, :, :2] = ignore
    valid = (masked != ignore)[:, 0]
    per_voxel = FocalLoss(gamma=2.0, reduction="none")(logits, torch.where(masked == ignore, 0, masked))
    expected = per_voxel[valid].mean()
    torch.testing.assert_close(FocalLoss(gamma=2.0, ignore_index=ignore)(logits, masked), expected)
    monai = MonaiFocal(to_onehot_y=True, gamma=2.0, use_softmax=True, ignore_index=ignore, reduction="none")
    torch.testing.assert_close(expected, monai(logits, masked).sum() / valid.sum())
    # the ignored voxels get no gradient
    logits.requires_grad_(True)
    FocalLoss(gamma=2.0, ignore_index=ignore)(logits, masked).backward()
    assert torch.all(logits.grad[:, :, :2] == 0) and logits.grad[:, :, 2:].abs().sum() > 0


def test_focal_sigmoid_matches_monai():
    from monai.losses import FocalLoss as MonaiFocal

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, 6, 4, generator=g) * 3
    regions = (torch.rand(2, 3, 5, 6, 4, generator=g) > 0.6).float()
    monai = MonaiFocal(include_background=True, gamma=2.0, use_softmax=False, reduction="mean")
    torch.testing.assert_close(FocalLoss(sigmoid=True)(logits, regions), monai(logits, regions))


def _reference_contour(p: np.ndarray) -> np.ndarray:
    """Opening minus erosion with a full 3-wide window, border voxels compared with their in-image neighbours
    only (scipy's 'nearest' mode gives the same extrema as ignoring the outside)."""
    eroded = ndimage.grey_erosion(p, size=(3,) * p.ndim, mode="nearest")
    opened = ndimage.grey_dilation(eroded, size=(3,) * p.ndim, mode="nearest")
    return np.maximum(opened - eroded, 0)


@pytest.mark.parametrize("shape", [(9, 8), (7, 6, 8)])
def test_soft_contour_matches_grey_morphology(shape):
    p = np.random.default_rng(3).random((2, 2, *shape)).astype(np.float32)
    ours = soft_contour(torch.from_numpy(p)).numpy()
    expected = np.stack([np.stack([_reference_contour(c) for c in b]) for b in p])
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)


def test_perimeter_of_binary_shapes_counted_by_hand():
    cube = torch.zeros(1, 1, 10, 10, 10)
    cube[..., 2:7, 3:8, 1:6] = 1  # a 5^3 cube: its inner boundary ring holds 5^3 - 3^3 voxels
    assert soft_perimeter(cube).item() == 5**3 - 3**3
    square = torch.zeros(1, 1, 9, 9)
    square[..., 1:5, 2:6] = 1  # a 4x4 square: 16 - 4 pixels on its border
    assert soft_perimeter(square).item() == 4 * 4 - 2 * 2


def test_perimeter_loss_matches_reference():
    logits, target = _batch(4, classes=3, shape=(2, 8, 9, 7))
    ours = PerimeterLoss()(logits, target)
    p = torch.softmax(logits, 1).numpy()
    onehot = np.eye(3, dtype=np.float32)[target[:, 0].numpy()].transpose(0, 4, 1, 2, 3)
    squared = [
        sum((_reference_contour(p[b, k]).sum() - _reference_contour(onehot[b, k]).sum()) ** 2 for k in (1, 2))
        for b in range(2)
    ]
    expected = np.mean(squared) / (8 * 9 * 7)
    np.testing.assert_allclose(ours.item(), expected, rtol=1e-5)
    # a perfect prediction of the perimeters costs nothing
    perfect = torch.where(torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3) > 0, 50.0, -50.0)
    assert PerimeterLoss()(perfect, target).item() == pytest.approx(0, abs=1e-6)


def test_topk10_is_nnunets_and_averages_the_hardest_tenth():
    logits, target = _batch(5)
    compound = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, 1, 1,
                              dice_class=MemoryEfficientSoftDiceLoss)  # fmt: skip
    ours = vary_loss(compound, "dice_topk10", has_regions=False, ignore_label=None, batch_dice=True, is_ddp=False)
    assert isinstance(ours, DC_and_topk_loss) and ours.ce.k == 10
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0], reduction="none").flatten().numpy()
    hardest = np.sort(ce)[::-1][: int(ce.size * 10 / 100)]
    expected = ours.dc(logits, target).item() + hardest.mean()
    assert ours(logits, target).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="region"):
        vary_loss(compound, "dice_topk10", has_regions=True, ignore_label=None, batch_dice=True, is_ddp=False)


def _default(ignore_label=None, regions=False):
    """nnU-Net's default loss as nnUNetTrainer._build_loss makes it, with deep supervision over 3 outputs."""
    dice = {"batch_dice": True, "smooth": 1e-5, "do_bg": regions, "ddp": False}
    if regions:
        inner = DC_and_BCE_loss({}, dice, use_ignore_label=ignore_label is not None)
    else:
        inner = DC_and_CE_loss(dice, {}, 1, 1, ignore_label=ignore_label, dice_class=MemoryEfficientSoftDiceLoss)
    return DeepSupervisionWrapper(inner, [4 / 7, 2 / 7, 1 / 7])


@pytest.mark.parametrize("variant", ["dice_focal", "dice_perimeter"])
def test_variants_keep_nnunets_dice_and_deep_supervision(variant):
    default = _default(ignore_label=3)
    loss = vary_loss(default, variant, has_regions=False, ignore_label=3, batch_dice=True, is_ddp=False)
    assert isinstance(loss, DeepSupervisionWrapper) and loss.weight_factors == default.weight_factors
    assert loss.loss.dc is default.loss.dc and loss.loss.ignore_label == 3
    term = {"dice_focal": FocalLoss, "dice_perimeter": PerimeterLoss}[variant]
    assert isinstance(loss.loss.ce, term)
    outputs, targets = zip(*[_batch(10 + i, shape=(2, 8 // 2**i, 8 // 2**i, 8 // 2**i)) for i in range(3)],
                           strict=True)  # fmt: skip
    wd, wt = loss.loss.weight_dice, loss.loss.weight_ce
    expected = sum(
        w * (wd * loss.loss.dc(o, t) + wt * loss.loss.ce(o, t[:, 0]))
        for w, o, t in zip(default.weight_factors, outputs, targets, strict=True)
    )
    torch.testing.assert_close(loss(list(outputs), list(targets)), expected)


def test_region_variants_use_sigmoids():
    focal = vary_loss(_default(ignore_label=9, regions=True), "dice_focal", has_regions=True, ignore_label=9,
                      batch_dice=True, is_ddp=False)  # fmt: skip
    assert focal.loss.ce.sigmoid and focal.loss.ce.reduction == "none"  # DC_and_BCE_loss masks ignored voxels
    perim = vary_loss(_default(regions=True), "dice_perimeter", has_regions=True, ignore_label=None,
                      batch_dice=True, is_ddp=False)  # fmt: skip
    assert perim.loss.ce.sigmoid
    with pytest.raises(ValueError, match="ignore label"):
        vary_loss(_default(ignore_label=9, regions=True), "dice_perimeter", has_regions=True, ignore_label=9,
                  batch_dice=True, is_ddp=False)  # fmt: skip
    with pytest.raises(ValueError, match="loss_variant must be one of"):
        vary_loss(_default(), "dice_boundary", has_regions=False, ignore_label=None, batch_dice=True, is_ddp=False)


def test_rebalancing_follows_the_authors_steal_weight_schedule():
    # their scheduler: weights start at (1, 0.01); each epoch 0.01 moves from Dice (kept >= 0.1) to the perimeter
    dice, perim = 1.0, 0.01
    schedule = Rebalancing()
    for epoch in range(200):
        assert schedule.weights(epoch, 200) == pytest.approx((dice, perim))
        dice, perim = max(0.1, dice - 0.01), perim + 0.01
    # a 1000-epoch run takes the same weights at the same fraction of training
    assert schedule.weights(500, 1000) == pytest.approx(schedule.weights(100, 200))
    loss = vary_loss(_default(), "dice_perimeter", has_regions=False, ignore_label=None, batch_dice=True, is_ddp=False)
    assert losses.loss_weights_for_epoch(loss, 450, 1000) == pytest.approx((0.1, 0.91))
    assert (loss.loss.weight_dice, loss.loss.weight_ce) == pytest.approx((0.1, 0.91))
    assert losses.loss_weights_for_epoch(_default(), 3, 10) is None


def test_learning_rate_rules():
    assert scaled_learning_rate(0.01, 16) == 0.01  # off by default
    assert scaled_learning_rate(0.01, 16, 2, "linear") == pytest.approx(0.08)
    assert scaled_learning_rate(0.01, 16, 2, "sqrt") == pytest.approx(0.01 * math.sqrt(8))
    assert scaled_learning_rate(0.01, 2, 2, "sqrt") == 0.01
    with pytest.raises(ValueError, match="rule must be one of"):
        scaled_learning_rate(0.01, 16, 2, "cubic")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        scaled_learning_rate(0.01, 0, 2, "linear")


def test_variant_names_resolve_to_classes():
    from pgps.nnunet import variants

    cls = variants.trainer_class("nnUNetTrainer_PGPS_Performance_NoMirroring_10pct_DiceFocal_LRsqrt")
    assert issubclass(cls, variants.nnUNetTrainer_PGPS_Performance_NoMirroring_10pct)
    assert (cls.loss_variant, cls.lr_scaling, cls.training_length) == ("dice_focal", "sqrt", 0.10)
    assert variants.nnUNetTrainer_PGPS_CPS_DicePerim is variants.trainer_class("nnUNetTrainer_PGPS_CPS_DicePerim")
    assert variants.split_variant_name("nnUNetTrainer_PGPS_UNETR_CPS_LRlinear") == (
        "nnUNetTrainer_PGPS_UNETR_CPS", "dice_ce", "linear",
    )  # fmt: skip
    import pickle

    assert pickle.loads(pickle.dumps(cls)) is cls
    for bad in ("nnUNetTrainer_PGPS_Nope_DiceFocal", "nnUNetTrainer_PGPS_CPS_LRsqrt_DiceFocal"):
        with pytest.raises(ValueError, match="not a pgps trainer"):
            variants.split_variant_name(bad)
        assert not hasattr(variants, bad)


def test_the_trainers_focal_alpha_reaches_the_focal_term_and_only_it():
    """A trainer's ``focal_alpha`` (pgps.nnunet.trainer) weights the focal term as MONAI's scalar alpha does; it is
    refused for the other losses instead of being ignored."""
    default = _default(ignore_label=None)
    weighted = vary_loss(default, "dice_focal", has_regions=False, ignore_label=None, batch_dice=True, is_ddp=False,
                         focal_alpha=0.25)  # fmt: skip
    logits, target = _batch(3)
    torch.testing.assert_close(weighted.loss.ce(logits, target[:, 0]), FocalLoss(alpha=0.25)(logits, target))
    plain = vary_loss(_default(ignore_label=None), "dice_focal", has_regions=False, ignore_label=None,
                      batch_dice=True, is_ddp=False)  # fmt: skip
    assert plain.loss.ce.alpha is None
    with pytest.raises(ValueError, match="focal_alpha applies to the dice_focal loss, not to dice_topk10"):
        vary_loss(_default(), "dice_topk10", has_regions=False, ignore_label=None, batch_dice=True, is_ddp=False,
                  focal_alpha=0.25)  # fmt: skip
