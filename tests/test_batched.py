"""Batched augmentation (pgps.nnunet.loading.batched) against nnU-Net 2.8.1's own per-sample transforms.

Three kinds of checks: the constants are the ones ``get_training_transforms`` builds; given the same
parameters every operation gives nnU-Net's result sample by sample; and over many samples the drawn
parameters and the augmented outputs have nnU-Net's distributions (seeded two-sample tests that
also reject deliberately wrong distributions, so they can fail).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

pytestmark = pytest.mark.nnunet

ROT3D = (-np.pi / 6, np.pi / 6)  # nnU-Net's 3D rotation range
ROT2D = (-np.pi, np.pi)  # nnU-Net's dummy-2D rotation range
DS_SCALES = [[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]
ALPHA = 1e-3  # per test; every sample is seeded, so a pass or a failure is reproducible


def nnunet_transforms(patch, rotation=ROT3D, dummy_2d=False, ds=None, mask=None, regions=None, mirror=(0, 1, 2)):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    return nnUNetTrainer.get_training_transforms(
        patch, rotation, ds, mirror, dummy_2d, use_mask_for_norm=mask, foreground_labels=[1, 2, 3], regions=regions
    )


def make_spec(patch, rotation=ROT3D, dummy_2d=False, ds=None, **kw):
    from pgps.nnunet.loading.batched import AugmentationSpec

    return AugmentationSpec.from_transform_args(patch, rotation, ds, (0, 1, 2), dummy_2d, **kw)


def blob_labels(n, window, seed=0, labels=3):
    """Smooth random label fields 0..labels in windows (n, 1, *window), with a -1 slab (crop padding)."""
    gen = torch.Generator().manual_seed(seed)
    kernel = [5 if w >= 5 else 3 for w in window]
    noise = torch.randn(n, 1, *window, generator=gen)
    field = torch.nn.functional.avg_pool3d(noise, kernel, 1, [k // 2 for k in kernel])
    cuts = torch.linspace(-0.15, 0.15, labels)
    seg = torch.bucketize(field, cuts).to(torch.int16)
    seg[..., :2] = -1
    seg[: n // 8] = 0  # one label only (plus the pad label where the grid reaches outside)
    seg[n // 8 : n // 4] = (seg[n // 8 : n // 4] > 1).to(torch.int16)  # two labels
    return seg


# -- the constants ---------------------------------------------------------------------------------


def test_constants_are_the_ones_nnunet_builds():
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    from pgps.nnunet.loading.batched import NNUNET_DEFAULTS as D

    steps = nnunet_transforms((16, 16, 16), ds=DS_SCALES).transforms
    names = [type(t.transform if isinstance(t, RandomTransform) else t).__name__ for t in steps]
    assert names == [
        "SpatialTransform", "GaussianNoiseTransform", "GaussianBlurTransform", "MultiplicativeBrightnessTransform",
        "ContrastTransform", "SimulateLowResolutionTransform", "GammaTransform", "GammaTransform",
        "MirrorTransform", "RemoveLabelTransform", "DownsampleSegForDSTransform",
    ]  # fmt: skip
    spatial, noise, blur, bright, contrast, lowres, gamma_inv, gamma, mirror = steps[:9]
    assert (spatial.p_rotation, spatial.p_scaling, spatial.scaling) == (D["p_rotation"], D["p_scaling"], D["scaling"])
    assert spatial.p_elastic_deform == 0 and spatial.p_synchronize_scaling_across_axes == 1
    assert spatial.p_rot_per_axis == 1 and not spatial.random_crop
    assert (spatial.mode_seg, spatial.border_mode_seg, spatial.padding_value_seg) == ("bilinear", "constant", -1)
    assert (spatial.seg_tiebreak, spatial.bg_style_seg_sampling) == ("nearest", False)
    assert (spatial.mode_image, spatial.padding_mode_image, spatial.align_corners) == ("bilinear", "zeros", False)
    assert noise.apply_probability == D["p_noise"] and noise.transform.noise_variance == D["noise_sd"]
    assert noise.transform.synchronize_channels and noise.transform.p_per_channel == 1
    assert blur.apply_probability == D["p_blur"] and blur.transform.blur_sigma == D["blur_sigma"]
    assert blur.transform.p_per_channel == D["blur_p_per_channel"]
    assert not blur.transform.synchronize_axes and not blur.transform.synchronize_channels
    assert bright.apply_probability == D["p_brightness"]
    assert bright.transform.multiplier_range.contrast_range == D["brightness"]
    assert contrast.apply_probability == D["p_contrast"] and contrast.transform.preserve_range
    assert contrast.transform.contrast_range.contrast_range == D["contrast"]
    assert lowres.apply_probability == D["p_lowres"] and lowres.transform.scale == D["lowres_scale"]
    assert lowres.transform.synchronize_axes and lowres.transform.p_per_channel == D["lowres_p_per_channel"]
    assert (gamma_inv.apply_probability, gamma.apply_probability) == (D["p_gamma_inverted"], D["p_gamma"])
    for step, invert in ((gamma_inv, 1), (gamma, 0)):
        t = step.transform
        assert (t.p_invert_image, t.p_retain_stats, t.p_per_channel) == (invert, 1, 1)
        assert t.gamma.contrast_range == D["gamma"]
    assert mirror.allowed_axes == (0, 1, 2)


# -- sample by sample, given the same parameters -------------------------------------------------


def nnunet_grid(angles, scale, patch, window, dim):
    from batchgeneratorsv2.transforms.spatial.spatial import (
        _convert_my_grid_to_grid_sample_grid,
        _create_centered_identity_grid2,
        create_affine_matrix_2d,
        create_affine_matrix_3d,
    )

    if dim == 3:
        affine = create_affine_matrix_3d(angles, [scale] * 3)
    else:
        affine = create_affine_matrix_2d(angles[-1], [scale] * 2)
    grid = torch.matmul(_create_centered_identity_grid2(patch), torch.from_numpy(affine.T).float())
    return _convert_my_grid_to_grid_sample_grid(grid, window)


@pytest.mark.parametrize(("dummy_2d", "large_labels"), [(False, False), (True, False), (False, True)])
def test_spatial_transform_equals_nnunets_sample_by_sample(dummy_2d, large_labels):
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    from pgps.nnunet.loading.batched import affine_matrices, enlarged_patch_size, spatial_transform

    patch = (4, 12, 10) if dummy_2d else (8, 12, 10)
    rotation = ROT2D if dummy_2d else ROT3D
    spec = make_spec(patch, rotation, dummy_2d)
    window = enlarged_patch_size(spec)
    n = 48
    rng = np.random.default_rng(1)
    image = torch.randn(n, 2, *window, generator=torch.Generator().manual_seed(2))
    seg = blob_labels(n, window)
    if large_labels:  # beyond int8 and beyond the default uniformity flag (1024)
        seg = torch.where(seg > 0, seg + 1500, seg)
    angles, scales = rng.uniform(*rotation, (n, 3)), rng.uniform(0.7, 1.4, n)
    scales[:8] = 1.0  # rotation only
    dim = 2 if dummy_2d else 3
    ours_image, ours_seg = spatial_transform(image, seg, affine_matrices(angles, scales, dim), spec)

    plane = patch[1:] if dummy_2d else patch
    theirs = SpatialTransform(plane, 0, False, p_elastic_deform=0, p_rotation=0.2, rotation=rotation, p_scaling=0.2,
                              scaling=(0.7, 1.4), p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False,
                              border_mode_seg="constant", padding_value_seg=-1)  # fmt: skip
    reached = 0
    for i in range(n):
        img, lab = image[i].clone(), seg[i].clone()
        if dummy_2d:  # Convert3DTo2DTransform: axis 0 slices become channels
            img, lab = img.reshape(-1, *window[1:]), lab.reshape(-1, *window[1:])
        params = {"grid": nnunet_grid(angles[i], scales[i], plane, img.shape[1:], dim)}
        reached += bool(theirs._may_reach_outside(params["grid"], lab.shape[1:]))
        expected_image = theirs._apply_to_image(img, **params).reshape(ours_image[i].shape)
        expected_seg = theirs._apply_to_segmentation(lab, **params).reshape(ours_seg[i].shape)
        assert torch.equal(ours_image[i], expected_image), i
        assert torch.equal(ours_seg[i], expected_seg), i
    assert 0 < reached < n  # both label paths (with and without the padding label) were exercised


def random_batch(b=24, c=2, patch=(10, 12, 8), seed=0):
    return torch.randn(b, c, *patch, generator=torch.Generator().manual_seed(seed)) * 2 + 1


def params_for(b, c, patch=(10, 12, 8), seed=0, dummy_2d=False):
    from pgps.nnunet.loading.batched import sample_parameters

    spec = make_spec(patch, ROT2D if dummy_2d else ROT3D, dummy_2d)
    p = sample_parameters(spec, b, c, np.random.default_rng(seed))
    for name in ("blur_apply", "lowres_apply"):  # every row, to compare as many as possible
        getattr(p, name)[:] = True
    for name in ("brightness_apply", "contrast_apply", "gamma_apply", "gamma_inverted_apply", "noise_apply"):
        getattr(p, name)[:] = True
    return p


def test_intensity_transforms_equal_nnunets_sample_by_sample():
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform

    from pgps.nnunet.loading import batched

    b, c, patch = 24, 2, (10, 12, 8)
    p = params_for(b, c, patch)
    x = random_batch(b, c, patch)
    all_channels = torch.arange(c)
    f32 = torch.float32
    checks = [
        ("brightness", lambda rows: batched.multiplicative_brightness(rows, p),
         MultiplicativeBrightnessTransform(BGContrast((0.75, 1.25)), False),
         lambda i: {"apply_to_channel": all_channels, "multipliers": torch.tensor(p.brightness[i], dtype=f32)}),
        ("contrast", lambda rows: batched.contrast(rows, p), ContrastTransform(BGContrast((0.75, 1.25)), True, False),
         lambda i: {"apply_to_channel": all_channels, "multipliers": torch.tensor(p.contrast[i], dtype=f32)}),
        ("gamma inverted", lambda rows: batched.gamma(rows, p.gamma_inverted_apply, p.gamma_inverted, True),
         GammaTransform(BGContrast((0.7, 1.5)), 1, False, 1, 1),
         lambda i: {"apply_to_channel": all_channels, "retain_stats": torch.ones(c, dtype=torch.bool),
                    "invert_image": torch.ones(c, dtype=torch.bool), "gamma": torch.tensor(p.gamma_inverted[i])}),
        ("gamma", lambda rows: batched.gamma(rows, p.gamma_apply, p.gamma, False),
         GammaTransform(BGContrast((0.7, 1.5)), 0, False, 1, 1),
         lambda i: {"apply_to_channel": all_channels, "retain_stats": torch.ones(c, dtype=torch.bool),
                    "invert_image": torch.zeros(c, dtype=torch.bool), "gamma": torch.tensor(p.gamma[i])}),
        ("low resolution", lambda rows: batched.simulate_low_resolution(rows, p, patch),
         SimulateLowResolutionTransform((0.5, 1), False, True, None, p_per_channel=0.5),
         lambda i: {"apply_to_channel": all_channels, "scales": torch.tensor(p.lowres_scale[i], dtype=f32)}),
        ("blur", lambda rows: batched.gaussian_blur(rows, p, patch),
         GaussianBlurTransform((0.5, 1.0), False, False, 0.5, benchmark=True),
         lambda i: {"apply_to_channel": torch.ones(c, dtype=torch.bool), "sigmas": p.blur_sigma[i].tolist()}),
    ]  # fmt: skip
    for name, ours, theirs, params in checks:
        out = x.clone()
        ours(out.view(b * c, -1))
        expected = torch.stack([theirs._apply_to_image(x[i].clone(), **params(i)) for i in range(b)])
        tol = 1e-4 if name == "blur" else 2e-5  # blur: nnU-Net may pick an FFT convolution (documented)
        torch.testing.assert_close(out, expected, rtol=tol, atol=tol, msg=name)
        assert not torch.allclose(out, x), name  # the step did something


def test_noise_has_the_drawn_sd_per_sample():
    from pgps.nnunet.loading.batched import gaussian_noise

    b, c, patch = 64, 2, (16, 16, 16)
    p = params_for(b, c, patch)
    x = torch.zeros(b, c, int(np.prod(patch)))
    gaussian_noise(x, p)
    sd = x.std(2)  # (b, c): one sd per sample, shared by its channels (synchronize_channels=True)
    torch.testing.assert_close(sd, torch.tensor(p.noise_sd, dtype=torch.float32)[:, None].expand(b, c), rtol=0.05,
                               atol=1e-3)  # fmt: skip
    assert not torch.equal(x[:, 0], x[:, 1])  # independent noise per channel


def test_mirror_mask_labels_regions_and_deep_supervision_equal_nnunets():
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
    from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
    from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTransform
    from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform

    from pgps.nnunet.loading.batched import AugmentationParameters, RawBatch, augment

    b, patch = 16, (8, 12, 10)
    regions = [[1, 2, 3], [2, 3], 3]
    spec = make_spec(patch, ds=DS_SCALES, use_mask_for_norm=[True, False], regions=regions)
    image = random_batch(b, 2, patch)
    seg = blob_labels(b, patch, seed=3)
    flags = np.random.default_rng(4).random((b, 3)) < 0.5
    p = params_for(b, 2, patch)
    off = {k: np.zeros_like(v) for k, v in p.__dict__.items() if k.endswith("apply")}  # only the steps tested here
    off.update(spatial=np.zeros(b, bool), affine=np.zeros((0, 3, 3)), mirror=flags)
    p = AugmentationParameters(**{**p.__dict__, **off})
    empty_image, empty_seg = torch.empty(0, 2, *patch), torch.empty(0, 1, *patch, dtype=torch.int16)
    out = augment(RawBatch(image.clone(), seg.clone(), empty_image, empty_seg, p, spec))
    ds = DownsampleSegForDSTransform(DS_SCALES)
    for i in range(b):
        d = MirrorTransform((0, 1, 2)).apply({"image": image[i].clone(), "segmentation": seg[i].clone()},
                                             axes=[a for a in range(3) if flags[i, a]])  # fmt: skip
        d = MaskImageTransform([0], 0, 0)(**d)
        d = RemoveLabelTransform(-1, 0)(**d)
        d = ConvertSegmentationToRegionsTransform(regions, 0)(**d)
        d = ds(**d)
        assert torch.equal(out["data"][i], d["image"])
        for level, target in enumerate(d["segmentation"]):
            assert out["target"][level].dtype == target.dtype == torch.bool
            assert torch.equal(out["target"][level][i], target), (i, level)


# -- distributions over many samples ---------------------------------------------------------------


def nnunet_parameter_draws(n, patch=(16, 16, 16), rotation=ROT3D, dummy_2d=False, seed=0):
    """Parameters nnU-Net's own transforms draw for ``n`` samples (one channel), as arrays."""
    from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform

    np.random.seed(seed)
    torch.manual_seed(seed)
    steps = [t for t in nnunet_transforms(patch, rotation, dummy_2d).transforms
             if not isinstance(t, (Convert3DTo2DTransform, Convert2DTo3DTransform))]  # fmt: skip
    spatial, noise, blur, bright, contrast, lowres, gamma_inv, gamma, mirror = steps[:9]
    image = torch.zeros(1, *patch)  # what the intensity transforms see
    plane = image.reshape(-1, *patch[1:]) if dummy_2d else image  # what the spatial transform sees
    draws: dict[str, list] = {k: [] for k in ("spatial", "det", "a00", "a12", "noise", "noise_sd", "blur", "blur_sigma",
                                              "brightness", "contrast", "lowres", "lowres_scale", "gamma_inverted",
                                              "gamma", "mirror")}  # fmt: skip

    def applied(step):
        return step.get_parameters(image=image)["apply_transform"]

    for _ in range(n):
        affine = spatial.get_parameters(image=plane)["affine"]
        draws["spatial"].append(affine is not None)
        if affine is not None:
            draws["det"].append(np.linalg.det(affine))
            draws["a00"].append(affine[0, 0])
            draws["a12"].append(affine[1, 0] if dummy_2d else affine[1, 2])
        draws["noise"].append(applied(noise))
        draws["noise_sd"].append(noise.transform.get_parameters(image=image)["sigmas"])
        bp = blur.transform.get_parameters(image=image)
        draws["blur"].append(applied(blur) and bool(bp["apply_to_channel"][0]))  # the transform, then the channel
        if bool(bp["apply_to_channel"][0]):
            draws["blur_sigma"].append(bp["sigmas"][0])
        for name, step in (("brightness", bright), ("contrast", contrast)):
            draws[name].append((applied(step), float(step.transform.get_parameters(image=image)["multipliers"][0])))
        lp = lowres.transform.get_parameters(image=image)
        draws["lowres"].append(applied(lowres) and len(lp["apply_to_channel"]) > 0)
        if len(lp["apply_to_channel"]):
            draws["lowres_scale"].append(lp["scales"][0].tolist())
        for name, step in (("gamma_inverted", gamma_inv), ("gamma", gamma)):
            draws[name].append((applied(step), float(step.transform.get_parameters(image=image)["gamma"][0])))
        axes = mirror.get_parameters(image=image)["axes"]
        draws["mirror"].append([a in axes for a in range(3)])
    return {k: np.asarray(v) for k, v in draws.items()}


def our_parameter_draws(n, patch=(16, 16, 16), rotation=ROT3D, dummy_2d=False, seed=0):
    from pgps.nnunet.loading.batched import sample_parameters

    p = sample_parameters(make_spec(patch, rotation, dummy_2d), n, 1, np.random.default_rng(seed))
    a = p.affine
    return {
        "spatial": p.spatial, "det": np.linalg.det(a), "a00": a[:, 0, 0], "a12": a[:, 1, 0] if dummy_2d else a[:, 1, 2],
        "noise": p.noise_apply, "noise_sd": p.noise_sd, "blur": p.blur_apply[:, 0],
        "blur_sigma": p.blur_sigma[:, 0][p.blur_apply[:, 0]],
        "brightness": np.stack([p.brightness_apply, p.brightness[:, 0]], 1),
        "contrast": np.stack([p.contrast_apply, p.contrast[:, 0]], 1), "lowres": p.lowres_apply[:, 0],
        "lowres_scale": p.lowres_scale[:, 0][p.lowres_apply[:, 0]],
        "gamma_inverted": np.stack([p.gamma_inverted_apply, p.gamma_inverted[:, 0]], 1),
        "gamma": np.stack([p.gamma_apply, p.gamma[:, 0]], 1), "mirror": p.mirror,
    }  # fmt: skip


def same_rate(a: np.ndarray, b: np.ndarray) -> float:
    """p-value of a chi-square test that two Bernoulli samples have the same rate."""
    table = [[a.sum(), len(a) - a.sum()], [b.sum(), len(b) - b.sum()]]
    return stats.chi2_contingency(table)[1]


def same_distribution(a: np.ndarray, b: np.ndarray) -> float:
    return stats.ks_2samp(np.ravel(a), np.ravel(b)).pvalue


@pytest.mark.parametrize("dummy_2d", [False, True])
def test_parameters_have_nnunets_distribution(dummy_2d):
    n = 4000
    patch = (4, 16, 16) if dummy_2d else (16, 16, 16)
    rotation = ROT2D if dummy_2d else ROT3D
    theirs = nnunet_parameter_draws(n, patch, rotation, dummy_2d, seed=11)
    ours = our_parameter_draws(n, patch, rotation, dummy_2d, seed=12)
    for key in ("spatial", "noise", "blur", "lowres"):
        assert same_rate(theirs[key], ours[key]) > ALPHA, key
    for key in ("brightness", "contrast", "gamma_inverted", "gamma"):
        assert same_rate(theirs[key][:, 0], ours[key][:, 0]) > ALPHA, key
        assert same_distribution(theirs[key][:, 1], ours[key][:, 1]) > ALPHA, key
    for axis in range(3):
        assert same_rate(theirs["mirror"][:, axis], ours["mirror"][:, axis]) > ALPHA, axis
    for key in ("det", "a00", "a12", "noise_sd", "blur_sigma", "lowres_scale"):
        a, b = theirs[key], ours[key]
        if key == "lowres_scale":  # one scale for all axes (but axis 0 for dummy-2D, which keeps its resolution)
            for scales in (a, b):
                assert np.all(scales[:, 1] == scales[:, 2])
                assert np.all(scales[:, 0] == 1) if dummy_2d else np.all(scales[:, 0] == scales[:, 2])
            a, b = a[:, 2], b[:, 2]
        for axis in range(a.shape[1] if a.ndim > 1 else 1):  # per axis: the values of one sample are not independent
            assert same_distribution(a[:, axis] if a.ndim > 1 else a, b[:, axis] if b.ndim > 1 else b) > ALPHA, key
    # the same tests reject distributions that are slightly off (so they can fail)
    uniform_gamma = np.random.default_rng(0).uniform(0.7, 1.5, n)
    assert same_distribution(theirs["gamma"][:, 1], uniform_gamma) < ALPHA
    assert same_rate(theirs["spatial"], np.random.default_rng(0).random(n) < 0.40) < ALPHA
    wider = np.random.default_rng(0).uniform(0.45, 1.0, len(theirs["lowres_scale"]))
    assert same_distribution(theirs["lowres_scale"][:, 2], wider) < ALPHA


def augmented_statistics(data: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per-sample summaries of augmented output: (n, 9) = mean, sd, 5%/95% quantiles, three axis gradients
    of the image (sensitive to rotation and mirroring), foreground share and label-0 share at the centre.

    Rounded to 1e-4: a third of the samples keep the input's statistics exactly, and float32 rounding
    differences (1e-8) would otherwise split that atom and dominate a KS test."""
    x = data[:, 0].reshape(len(data), -1)
    grads = [data[:, 0].mean(dim=tuple(d for d in (1, 2, 3) if d != a)) for a in (1, 2, 3)]
    slopes = [(g[:, g.shape[1] // 2 :].mean(1) - g[:, : g.shape[1] // 2].mean(1)) for g in grads]
    seg = target[:, 0]
    centre = seg[:, seg.shape[1] // 2, seg.shape[2] // 2, seg.shape[3] // 2]
    return torch.stack([x.mean(1), x.std(1), x.quantile(0.05, 1), x.quantile(0.95, 1), *slopes,
                     (seg > 0).float().mean((1, 2, 3)), (centre == 0).float()], 1).numpy().round(4)  # fmt: skip


def nnunet_outputs(image, seg, n, seed, p_rotation=None):
    np.random.seed(seed)
    torch.manual_seed(seed)
    transforms = nnunet_transforms(PATCH)
    if p_rotation is not None:
        transforms.transforms[0].p_rotation = p_rotation
    data, target = [], []
    for _ in range(n):
        out = transforms(image=image.clone(), segmentation=seg.clone())
        data.append(out["image"])
        target.append(out["segmentation"])
    return torch.stack(data), torch.stack(target)


PATCH = (12, 12, 12)


def test_augmented_outputs_have_nnunets_distribution():
    """The whole pipeline on one fixed crop, many times: nnU-Net per sample vs the batched path."""
    from pgps.nnunet.loading.batched import RawBatch, augment, centre_offset, enlarged_patch_size, sample_parameters

    spec = make_spec(PATCH)
    window = enlarged_patch_size(spec)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, w) for w in window], indexing="ij"))
    image = (grid[0] + 0.5 * grid[1] ** 2 - 0.3 * grid[2])[None].float()  # asymmetric along every axis
    seg = ((grid**2).sum(0) < 0.5).to(torch.int16)[None] + (grid[0] > 0.4).to(torch.int16)[None]
    seg[:, :, -2:] = -1
    n = 1500
    theirs = augmented_statistics(*nnunet_outputs(image, seg, n, seed=5))
    p = sample_parameters(spec, n, 1, np.random.default_rng(6))
    o = centre_offset(window, PATCH)
    centre = (slice(None), *(slice(a, a + s) for a, s in zip(o, PATCH, strict=True)))
    s = int(p.spatial.sum())
    raw = RawBatch(image=image[centre].expand(n, -1, -1, -1, -1).clone(),
                   seg=seg[centre].expand(n, -1, -1, -1, -1).clone(),
                   big_image=image.expand(s, -1, -1, -1, -1).clone(), big_seg=seg.expand(s, -1, -1, -1, -1).clone(),
                   params=p, spec=spec)  # fmt: skip
    out = augment(raw)
    ours = augmented_statistics(out["data"], out["target"])
    for j in range(ours.shape[1]):
        assert same_distribution(theirs[:, j], ours[:, j]) > ALPHA, j
    # power: nnU-Net with rotations twice as often is told apart by the same statistics
    rotated = augmented_statistics(*nnunet_outputs(image, seg, n, seed=7, p_rotation=0.4))
    assert min(same_distribution(rotated[:, j], ours[:, j]) for j in range(ours.shape[1])) < ALPHA
