"""nnU-Net 2.8.1's default training augmentation, applied to a whole batch at once.

``nnUNetTrainer.get_training_transforms`` builds a per-sample pipeline (batchgeneratorsv2): a
loader calls it once per patch, so its Python and small-tensor overhead grows with the number of
patches while the voxels per batch stay fixed. PGPS-Performance's early stages have hundreds to
thousands of small patches per batch, which made the article's data path slower than CPS on MSD
Hippocampus and TotalSegmentatorV2. Here every step runs once per batch on a ``(B, C, X, Y, Z)``
tensor, on the CPU in the loader or on the training device.

What is exact and what is not (``tests/test_batched.py`` checks both):

- **Parameters.** Every random choice is drawn per sample with nnU-Net's probabilities and ranges
  (:data:`NNUNET_DEFAULTS`, read off ``get_training_transforms`` of nnU-Net 2.8.1; a test compares
  them with the transforms nnU-Net builds): spatial transform (rotation p 0.2, angles uniform in
  the planned range on every axis, or one in-plane angle for dummy-2D; scaling p 0.2, one
  uniform factor in [0.7, 1.4] for all axes; no elastic deformation), Gaussian noise (p 0.1, sd
  uniform in [0, 0.1], shared by the channels), Gaussian blur (p 0.2, each channel p 0.5, sigma
  uniform in [0.5, 1] per channel and axis), multiplicative brightness (p 0.15) and contrast
  (p 0.15, range preserved) with nnU-Net's ``BGContrast`` draw (a fair coin between [0.75, 1] and
  [1, 1.25]), low-resolution simulation (p 0.25, each channel p 0.5, scale uniform in [0.5, 1],
  one for all axes, axis 0 kept for dummy-2D), inverted gamma (p 0.1) and gamma (p 0.3), both
  ``BGContrast`` in [0.7, 1.5] with the statistics retained, mirroring (each allowed axis p 0.5).
  The draws come from the loader's own seeded generator instead of numpy's and torch's global
  ones, so a batch is not the batch nnU-Net would draw with the same seed, but every parameter
  has nnU-Net's distribution (tested over many samples with chi-square and Kolmogorov-Smirnov
  tests against the parameters nnU-Net's own transforms draw).
- **Operations.** Given the parameters, each step computes what nnU-Net's transform computes for
  that sample: the same grids and ``grid_sample`` arithmetic (image trilinear with zero padding;
  labels by the interpolated one-hot argmax with nnU-Net's float16 scores, nearest-neighbour
  tie-break and padding label -1, per sample over the labels present in it; scored only near
  label boundaries, see :func:`resample`), the same noise, brightness, contrast, gamma,
  low-resolution (samples grouped by downsampled shape) and mirroring formulas, masking, label
  removal, region conversion and deep-supervision downsampling (``nearest-exact``). Tested
  against nnU-Net's transforms sample by sample on the CPU: spatially transformed images and
  labels bit-identical, intensity steps equal to float32 rounding (on a GPU, float results may
  differ from the CPU's in the last bits). Approximated: the Gaussian blur uses the same kernels
  (size ``round_to_odd(6 sigma + 0.5)``, reflect padding) but sums the taps directly, where
  nnU-Net times direct and FFT convolution per shape and keeps the faster (differences ~1e-6).
- **Cropping.** The spatial transform needs nnU-Net's enlarged crop (``initial_patch_size``)
  only for samples it rotates or scales (about 36%); the others are cut at the centre of that
  crop, which is the crop nnU-Net's spatial transform returns for them, so the loader reads only
  the final patch for them (:class:`RawBatch`).

- **Host synchronisations.** On a GPU one batch makes at most :data:`MAX_HOST_SYNCS` (2), whatever
  its size, and none when no sample is rotated or scaled (``tests/test_host_syncs.py`` counts every
  operation that makes the host wait, with the CUDA emulation): :func:`resample` reads the label
  range of the enlarged crops, then, in one copy, the labels each label slice holds, the samples
  whose grid may reach past the window and how many points each must score; the host plans the
  label decision from them (numpy) and sends the plan back without blocking. Every other host
  array of a batch (row indices, parameters, blur kernels, grid matrices, region labels) goes to
  the device in one pinned, non-blocking copy (:func:`ship`, :func:`batch_arrays`), the sampling
  grids are built on the device, and masks are applied with ``masked_fill_``/``torch.where``,
  never by boolean indexing. The per-batch telemetry (:mod:`pgps.nnunet.telemetry`) adds none.

Cascade training (``is_cascaded``) is not supported; the trainer keeps nnU-Net's per-sample
transforms for it and for trainers that override ``get_training_transforms``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn.functional import grid_sample, interpolate, pad

NNUNET_DEFAULTS: dict[str, float | tuple[float, float]] = {
    "p_rotation": 0.2,
    "p_scaling": 0.2,
    "scaling": (0.7, 1.4),
    "p_noise": 0.1,
    "noise_sd": (0.0, 0.1),
    "p_blur": 0.2,
    "blur_p_per_channel": 0.5,
    "blur_sigma": (0.5, 1.0),
    "p_brightness": 0.15,
    "brightness": (0.75, 1.25),
    "p_contrast": 0.15,
    "contrast": (0.75, 1.25),
    "p_lowres": 0.25,
    "lowres_p_per_channel": 0.5,
    "lowres_scale": (0.5, 1.0),
    "p_gamma_inverted": 0.1,
    "p_gamma": 0.3,
    "gamma": (0.7, 1.5),
    "p_mirror_axis": 0.5,
}
"""Probabilities and ranges of ``nnUNetTrainer.get_training_transforms`` (nnU-Net 2.8.1)."""

SEG_PAD = -1
"""Label nnU-Net gives voxels outside the image (crop padding, spatial transform border)."""
SCORE_SCALE = 1000.0
"""batchgeneratorsv2's label-score scale: float16 scores collapse near-ties into exact ones."""
BLUR_TRUNCATE = 6.0
"""batchgeneratorsv2's ``blur_dimension`` kernel half-width in sigmas."""
MAX_HOST_SYNCS = 2
"""Host synchronisations of :func:`augment` per batch on a GPU, at most (see the module docstring)."""


@dataclasses.dataclass(frozen=True)
class AugmentationSpec:
    """What ``get_training_transforms`` is given: the final patch, rotation range, mirror axes, ...

    ``patch_size`` is the network input (3 axes). ``deep_supervision_scales`` as nnU-Net's
    ``_get_deep_supervision_scales`` returns them (``None``: one target). ``mask_channels`` are the
    image channels set to 0 where the label is -1 (``use_mask_for_norm``). ``regions`` (with the
    ignore label appended, as nnU-Net does) turn the label into boolean region channels.
    """

    patch_size: tuple[int, int, int]
    rotation: tuple[float, float]
    mirror_axes: tuple[int, ...]
    dummy_2d: bool
    deep_supervision_scales: tuple[tuple[float, ...], ...] | None = None
    mask_channels: tuple[int, ...] = ()
    regions: tuple[tuple[int, ...], ...] | None = None

    @classmethod
    def from_transform_args(
        cls,
        patch_size: Sequence[int],
        rotation_for_DA: Sequence[float] | float,
        deep_supervision_scales: Sequence | None,
        mirror_axes: Sequence[int] | None,
        do_dummy_2d_data_aug: bool,
        use_mask_for_norm: Sequence[bool] | None = None,
        is_cascaded: bool = False,
        foreground_labels: Sequence[int] | None = None,
        regions: Sequence | None = None,
        ignore_label: int | None = None,
    ) -> AugmentationSpec:
        """The spec for the arguments of ``nnUNetTrainer.get_training_transforms`` (same names)."""
        if is_cascaded:
            raise NotImplementedError("batched augmentation does not support cascade training")
        if len(patch_size) != 3:
            raise ValueError(f"batched augmentation needs a 3D patch size, got {tuple(patch_size)}")
        if isinstance(rotation_for_DA, (int, float)):
            rotation_for_DA = (float(rotation_for_DA), float(rotation_for_DA))
        scales = None
        if deep_supervision_scales is not None:
            scales = tuple(
                tuple(float(v) for v in s) if isinstance(s, (list, tuple, np.ndarray)) else (float(s),) * 3
                for s in deep_supervision_scales
            )
        region_list = None
        if regions is not None:
            full = list(regions) + ([ignore_label] if ignore_label is not None else [])
            region_list = tuple(tuple(int(v) for v in r) if isinstance(r, (list, tuple)) else (int(r),) for r in full)
        return cls(
            patch_size=tuple(int(p) for p in patch_size),
            rotation=(float(rotation_for_DA[0]), float(rotation_for_DA[1])),
            mirror_axes=tuple(int(a) for a in mirror_axes or ()),
            dummy_2d=bool(do_dummy_2d_data_aug),
            deep_supervision_scales=scales,
            mask_channels=tuple(i for i, m in enumerate(use_mask_for_norm or ()) if m),
            regions=region_list,
        )


@dataclasses.dataclass
class AugmentationParameters:
    """Per-sample draws for one batch of ``B`` samples with ``C`` image channels (numpy arrays).

    ``spatial`` (B,) marks samples the spatial transform rotates or scales; ``affine`` (S, d, d)
    holds their matrices (S = ``spatial.sum()``, d = 3, or 2 for dummy-2D). Row-wise arrays
    ``(B, C)`` give per-channel choices and values; ``*_apply`` are booleans. ``mirror`` (B, 3)
    flags the flipped axes. ``noise_seed`` seeds the Gaussian noise.
    """

    spatial: np.ndarray
    angles: np.ndarray
    scales: np.ndarray
    affine: np.ndarray
    noise_apply: np.ndarray
    noise_sd: np.ndarray
    blur_apply: np.ndarray
    blur_sigma: np.ndarray
    brightness_apply: np.ndarray
    brightness: np.ndarray
    contrast_apply: np.ndarray
    contrast: np.ndarray
    lowres_apply: np.ndarray
    lowres_scale: np.ndarray
    gamma_inverted_apply: np.ndarray
    gamma_inverted: np.ndarray
    gamma_apply: np.ndarray
    gamma: np.ndarray
    mirror: np.ndarray
    noise_seed: int

    def take(self, rows: np.ndarray) -> AugmentationParameters:
        """The draws of ``rows`` of the batch: one rank's share of a global batch's parameters.

        Every row keeps its own draws; the noise seed is the batch's for the rows from 0 (one process)
        and another one, fixed by the first row, for a rank's later slice (its noise fields differ from
        the other ranks').
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == len(self.spatial) and np.array_equal(rows, np.arange(len(rows))):
            return self
        spatial_row = np.cumsum(self.spatial) - 1  # row of each spatial sample in ``affine``
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "affine":
                value = value[spatial_row[rows[self.spatial[rows]]]]
            elif field.name == "noise_seed":
                first = int(rows[0]) if len(rows) else 0
                value = int(np.random.SeedSequence([value, first]).generate_state(1, np.uint64)[0] >> np.uint64(2))
            else:
                value = value[rows]
            out[field.name] = value
        return AugmentationParameters(**out)


def _bg_contrast(rng: np.random.Generator, value_range: tuple[float, float], size) -> np.ndarray:
    """batchgeneratorsv2's ``BGContrast``: a fair coin between [lo, 1] and [max(lo, 1), hi] (when lo < 1)."""
    lo, hi = value_range
    below = rng.random(size) < 0.5
    low = rng.uniform(lo, 1.0, size)
    high = rng.uniform(max(lo, 1.0), hi, size)
    return np.where(below & (lo < 1), low, high)


def affine_matrices(angles: np.ndarray, scales: np.ndarray, dim: int) -> np.ndarray:
    """batchgeneratorsv2's ``create_affine_matrix_3d`` (Rz Ry Rx S) or ``_2d`` (R S), for many samples.

    ``angles`` (n, 3) in radians (for 2D the last one is used), ``scales`` (n,) one factor for all
    axes. Returns (n, dim, dim) float64.
    """
    n = len(scales)
    s = np.zeros((n, dim, dim))
    for d in range(dim):
        s[:, d, d] = scales
    if dim == 2:
        a = angles[:, -1]
        r = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], -2)
        return r @ s
    x, y, z = angles[:, 0], angles[:, 1], angles[:, 2]
    one, zero = np.ones(n), np.zeros(n)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, np.cos(x), -np.sin(x)], -1),
                   np.stack([zero, np.sin(x), np.cos(x)], -1)], -2)  # fmt: skip
    ry = np.stack([np.stack([np.cos(y), zero, np.sin(y)], -1), np.stack([zero, one, zero], -1),
                   np.stack([-np.sin(y), zero, np.cos(y)], -1)], -2)  # fmt: skip
    rz = np.stack([np.stack([np.cos(z), -np.sin(z), zero], -1), np.stack([np.sin(z), np.cos(z), zero], -1),
                   np.stack([zero, zero, one], -1)], -2)  # fmt: skip
    return rz @ ry @ rx @ s


def sample_parameters(
    spec: AugmentationSpec, batch_size: int, channels: int, rng: np.random.Generator
) -> AugmentationParameters:
    """Draw every augmentation parameter of a batch with nnU-Net's probabilities and ranges."""
    d = NNUNET_DEFAULTS
    b, c = int(batch_size), int(channels)

    def chance(p: float, size=b) -> np.ndarray:
        return rng.random(size) < p

    rotate, scale = chance(d["p_rotation"]), chance(d["p_scaling"])
    angles = np.where(rotate[:, None], rng.uniform(*spec.rotation, (b, 3)), 0.0)
    scales = np.where(scale, rng.uniform(*d["scaling"], b), 1.0)
    spatial = rotate | scale
    dim = 2 if spec.dummy_2d else 3
    affine = affine_matrices(angles[spatial], scales[spatial], dim)
    lowres_scale = np.repeat(rng.uniform(*d["lowres_scale"], (b, c))[..., None], 3, axis=-1)
    if spec.dummy_2d:
        lowres_scale[..., 0] = 1.0
    mirror = np.zeros((b, 3), bool)
    for axis in spec.mirror_axes:
        mirror[:, axis] = chance(d["p_mirror_axis"])
    return AugmentationParameters(
        spatial=spatial,
        angles=angles,
        scales=scales,
        affine=affine,
        noise_apply=chance(d["p_noise"]),
        noise_sd=rng.uniform(*d["noise_sd"], b),
        blur_apply=chance(d["p_blur"])[:, None] & chance(d["blur_p_per_channel"], (b, c)),
        blur_sigma=rng.uniform(*d["blur_sigma"], (b, c, 3)),
        brightness_apply=chance(d["p_brightness"]),
        brightness=_bg_contrast(rng, d["brightness"], (b, c)),
        contrast_apply=chance(d["p_contrast"]),
        contrast=_bg_contrast(rng, d["contrast"], (b, c)),
        lowres_apply=chance(d["p_lowres"])[:, None] & chance(d["lowres_p_per_channel"], (b, c)),
        lowres_scale=lowres_scale,
        gamma_inverted_apply=chance(d["p_gamma_inverted"]),
        gamma_inverted=_bg_contrast(rng, d["gamma"], (b, c)),
        gamma_apply=chance(d["p_gamma"]),
        gamma=_bg_contrast(rng, d["gamma"], (b, c)),
        mirror=mirror,
        noise_seed=int(rng.integers(2**62)),
    )


@dataclasses.dataclass
class RawBatch:
    """A cropped, not yet augmented batch.

    ``image`` (B, C, *P) float32 and ``seg`` (B, Cs, *P) int16 hold the final-size crops of the
    samples without a spatial transform (rows of spatial samples are overwritten);
    ``big_image`` (S, C, *I) and ``big_seg`` (S, Cs, *I) hold the enlarged crops of the S spatial
    samples in batch order. Crops are padded with 0 (image) and -1 (labels), as nnU-Net pads them.
    ``spec`` and ``params`` say how to augment it (:func:`augment`).
    """

    image: torch.Tensor
    seg: torch.Tensor
    big_image: torch.Tensor
    big_seg: torch.Tensor
    params: AugmentationParameters
    spec: AugmentationSpec

    def to(self, device: torch.device | str) -> RawBatch:
        move = {f: getattr(self, f).to(device, non_blocking=True) for f in ("image", "seg", "big_image", "big_seg")}
        return dataclasses.replace(self, **move)


# -- one copy of a batch's host arrays to the device --------------------------------------------------


def ship(arrays: dict[str, np.ndarray], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Host arrays on ``device``, in one copy: packed into one pinned buffer and copied without blocking on a
    GPU (no host synchronisation), as they are (no copy) on the CPU. Each keeps its dtype and shape."""
    device = torch.device(device)
    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    if device.type == "cpu":
        return {name: torch.from_numpy(a) for name, a in arrays.items()}
    starts, size = {}, 0
    for name, a in arrays.items():
        starts[name] = size
        size += -(-a.nbytes // 8) * 8  # 8-byte aligned, so that every part views as its dtype
    packed = np.zeros(size, np.uint8)
    for name, a in arrays.items():
        packed[starts[name] : starts[name] + a.nbytes] = a.reshape(-1).view(np.uint8)
    host = torch.from_numpy(packed)
    moved = (host.pin_memory() if device.type == "cuda" else host).to(device, non_blocking=True)
    out = {}
    for name, a in arrays.items():
        dtype = torch.from_numpy(a[:0]).dtype
        out[name] = moved[starts[name] : starts[name] + a.nbytes].view(dtype).view(a.shape)
    return out


def _shipped(on_device: dict[str, torch.Tensor] | None, arrays, device: torch.device) -> dict[str, torch.Tensor]:
    """A step's device arrays: those :func:`augment` shipped for the batch, or the step's own (``arrays()``)."""
    return on_device if on_device is not None else ship(arrays(), device)


# -- spatial transform ---------------------------------------------------------------------------


def _identity_grid(size: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """batchgeneratorsv2's centred identity grid (*size, len(size)) in voxels."""
    space = [torch.linspace((1 - s) / 2, (s - 1) / 2, s, device=device) for s in size]
    return torch.stack(torch.meshgrid(space, indexing="ij"), -1)


def grid_arrays(affine: np.ndarray, window: Sequence[int]) -> dict[str, np.ndarray]:
    """What :func:`sampling_grids` needs from the host: the transposed affines (n, d, d) and half the window (d,),
    float32."""
    return {
        "grid_matrices": np.swapaxes(affine, 1, 2).astype(np.float32),
        "grid_scale": np.array([w / 2 for w in window], dtype=np.float32),
    }


def sampling_grids(matrices: torch.Tensor, scale: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """``grid_sample`` grids (n, *patch, d) that map each output voxel into a crop, on the matrices' device.

    As batchgeneratorsv2's SpatialTransform: the centred identity grid of the patch, times the
    transposed affine (``matrices``, :func:`grid_arrays`), centred in the window, divided by half the
    window (``scale``), axes reversed. On the CPU with nnU-Net's arithmetic (``matmul``); on other
    devices as three multiply-adds (no TF32 matmul where a caller enables it).
    """
    dim = len(patch)
    base = _identity_grid(patch, matrices.device).float().reshape(-1, dim)
    if matrices.device.type == "cpu":
        grid = torch.matmul(base[None], matrices)
    else:
        grid = base[None, :, 0, None] * matrices[:, None, 0]
        for i in range(1, dim):
            grid += base[None, :, i, None] * matrices[:, None, i]
    grid = grid.reshape(len(matrices), *patch, dim)
    grid /= scale
    return torch.flip(grid, (-1,))


STACK_ELEMENTS = 2**23
"""Most float32 elements (32 MiB, glibc's largest size it recycles instead of mapping fresh pages) of the
image-plus-one-hot input :func:`resample` samples in one ``grid_sample`` call; larger windows are sampled
label by label with one reused indicator buffer, as nnU-Net does."""


def _may_reach_outside(grid: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """Per sample: can a bilinear kernel reach past the window (batchgeneratorsv2's cheap test)?"""
    bound = float(np.min(1 - 1 / np.asarray(window[::-1], dtype=float)))
    flat = grid.reshape(len(grid), -1)  # amin and amax: far faster than aminmax or abs on the CPU
    return ~((-flat.amin(1) <= bound) & (flat.amax(1) <= bound))


def resample(image: torch.Tensor, seg: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and labels resampled as batchgeneratorsv2's SpatialTransform does with nnU-Net's settings.

    ``image`` (n, C, *window) float32, ``seg`` (n, K, *window) integer labels (K label slices per
    sample: label channels, or label channels times axis-0 slices for dummy-2D), ``grid`` (n, *patch, d).
    The image is interpolated (trilinear/bilinear, zero padding). nnU-Net gives each label slice the
    label whose interpolated one-hot score (x1000, in float16) is highest among the labels present in
    it, plus the padding label -1 where a kernel may reach past the window (its indicator is 1
    outside); with two labels the higher one wins where its score passes 500; ties go to the
    nearest-neighbour label when it is among the tied ones, else to the lowest label.

    The same labels, with less work: where the nearest voxel's 3x3x3 neighbourhood holds one label
    (outside the window counting as -1), all eight interpolation corners hold it, its score is the
    whole weight and every other score is 0, so that label is the result. One nearest-neighbour
    ``grid_sample`` of the labels (with that flag folded in) settles those points; the scores are
    computed, with nnU-Net's arithmetic, only at the others (near label boundaries). Returns
    (n, C, *patch) and (n, K, *patch) in ``seg``'s dtype.

    Two host synchronisations, whatever ``n``: the label range, then, in one copy, the labels of
    each slice, the samples that may reach outside and their numbers of boundary points (the shapes
    of the scoring); what the host derives from them goes back in one non-blocking copy (:func:`ship`).
    """
    n, k = len(seg), seg.shape[1]
    window, patch = tuple(seg.shape[2:]), tuple(grid.shape[1:-1])
    image_out = grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    reach = _may_reach_outside(grid, window)
    flat = seg.reshape(n * k, -1)
    low, high = flat.amin(1), flat.amax(1)
    floor, top = torch.stack([low.min(), high.max()]).tolist()  # host sync 1: the label range
    floor = min(SEG_PAD, floor)
    present = _labels_present(flat, low, high, reach.repeat_interleave(k), floor, top)
    codes, flag = _label_code(seg, top)
    code = grid_sample(codes, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    boundary = (code < flag).view(n, k, -1).any(1)  # (n, V): points scored (not uniform in some slice)
    nearest = torch.where(code == 0, SEG_PAD, torch.remainder(code, flag) - CODE_SHIFT).to(seg.dtype)
    counts = boundary.sum(1, dtype=torch.int32)
    host = torch.cat([present.view(-1).int(), reach.int(), counts]).cpu().numpy()  # host sync 2
    labels = present.shape[1]
    present_h, reach_h = host[: n * k * labels].reshape(n * k, labels) > 0, host[n * k * labels : -n] > 0
    arrays, parts = _decision_plan(present_h, reach_h, host[-n:], k, math.prod(window), floor)
    rules = ship(arrays, seg.device)
    out = nearest.clone().view(n, k, -1)
    out.view(n * k, -1)[rules["single"]] = rules["single_label"].to(seg.dtype)[:, None]
    for part in parts:  # samples that need the same labels are scored together
        rule = {name: rules[part.key + name] for name in (*_PART_ARRAYS, "samples")}
        _score_boundary(seg, grid, reach, boundary, nearest, out, part, rule)
    return image_out, out.view(n, k, *patch)


CODE_SHIFT = 3
"""Label code of :func:`_label_code`: label + 3 > 0 (grid_sample pads with 0, the outside)."""
CODE_UNIFORM = 1024
"""Added (or the next power of two above the largest code) to the code of voxels whose 3x3x3
neighbourhood holds one label; codes stay exact in float32 for any int16 label."""


def _label_code(seg: torch.Tensor, top: int) -> tuple[torch.Tensor, int]:
    """``label + 3``, plus ``flag`` where the voxel's neighbourhood (3 per spatial axis, -1 outside) holds one
    label; ``flag`` a power of two above every ``label + 3`` (``top``: the largest label)."""
    flag = max(CODE_UNIFORM, 1 << (top + CODE_SHIFT).bit_length())
    code = seg.float().add_(CODE_SHIFT)
    small = seg.to(torch.int8) if top < 127 else seg  # int8 min/max are 4x faster than int16
    lo = hi = pad(small, [1, 1] * (seg.dim() - 2), value=SEG_PAD)
    for axis in range(2, seg.dim()):  # separable 3-neighbourhood minimum and maximum
        size = lo.shape[axis] - 2
        lo = torch.minimum(torch.minimum(lo.narrow(axis, 0, size), lo.narrow(axis, 1, size)), lo.narrow(axis, 2, size))
        hi = torch.maximum(torch.maximum(hi.narrow(axis, 0, size), hi.narrow(axis, 1, size)), hi.narrow(axis, 2, size))
    return code.add_(lo == hi, alpha=flag), flag


def _labels_present(flat, low, high, reach, floor: int, top: int) -> torch.Tensor:
    """Which labels ``floor..top`` each row of ``flat`` (m, V) holds, the pad label added where ``reach``:
    (m, L) bool. ``low``, ``high``: each row's smallest and largest label (only labels between are looked for)."""
    rows = torch.arange(len(flat), device=flat.device)
    present = torch.zeros((len(flat), top - floor + 1), dtype=torch.bool, device=flat.device)
    present[rows, low.long() - floor] = True
    present[rows, high.long() - floor] = True
    for label in range(floor + 1, top):
        present[:, label - floor] |= (low < label) & (high > label) & (flat == label).any(1)
    present[:, SEG_PAD - floor] |= reach
    return present


@dataclasses.dataclass(frozen=True)
class _Part:
    """Host facts of samples scored together (they need the same labels); its device arrays are ``key`` + name."""

    key: str
    samples: np.ndarray  # sample rows
    points: int  # most points one sample scores
    hits: int  # points all samples score
    labels: list[int]  # the labels scored
    pad_label: bool  # some sample may reach outside (the pad label's indicator changes)
    many: np.ndarray  # label slices (sample-major) with three or more labels
    floor: int  # the smallest label of the batch (``lookup`` holds ``label - floor``)


def _last_column(present: np.ndarray) -> np.ndarray:
    """Column of the highest present label per row of ``present`` (m, L)."""
    return present.shape[1] - 1 - present[:, ::-1].argmax(1)


def _decision_plan(present, reach, counts, k: int, volume: int, floor: int) -> tuple[dict, list[_Part]]:
    """The host's side of the label decision (numpy, from the device's ``present`` (n K, L), ``reach`` (n,) and
    points to score per sample ``counts`` (n,)): the slices that hold one label and the parts to score."""
    n = len(reach)
    count = present.sum(1)
    single = np.flatnonzero(count == 1)
    arrays = {"single": single, "single_label": present[single].argmax(1) + floor}
    # scores needed: every present label of a slice with three or more labels, the higher one of two
    scored = present & (count >= 3)[:, None]
    two = np.flatnonzero(count == 2)
    scored[two, _last_column(present[two])] = True
    needed = scored.reshape(n, k, -1)
    todo = np.flatnonzero(needed.any(2).any(1))
    parts: list[_Part] = []
    if not len(todo):
        return arrays, parts
    groups, group_of = np.unique(needed[todo].any(1), axis=0, return_inverse=True)
    for g, columns in enumerate(groups):
        members = todo[group_of.reshape(-1) == g]
        step = max(1, STACK_ELEMENTS // (k * int(columns.sum()) * volume))
        for start in range(0, len(members), step):
            samples = members[start : start + step]
            if not counts[samples].any():
                continue
            key = f"part{len(parts)}_"
            items = (samples[:, None] * k + np.arange(k)).reshape(-1)
            rule = _part_arrays(present[items], columns, floor)
            arrays.update({key + name: value for name, value in rule.items()}, **{key + "samples": samples})
            parts.append(_Part(key, samples, int(counts[samples].max()), int(counts[samples].sum()),
                               (np.flatnonzero(columns) + floor).tolist(), bool(reach[samples].any()), rule["many"],
                               floor))  # fmt: skip
    return arrays, parts


_PART_ARRAYS = ("one", "one_label", "two", "two_high", "two_low", "two_column", "many", "many_absent", "lookup", "used")


def _part_arrays(present: np.ndarray, columns: np.ndarray, floor: int) -> dict[str, np.ndarray]:
    """What :func:`_decide` needs for slices with labels ``present`` (m, L) scored on the labels ``columns`` (L,)."""
    count = present.sum(1)
    one, two, many = np.flatnonzero(count == 1), np.flatnonzero(count == 2), np.flatnonzero(count >= 3)
    high, low = _last_column(present[two]), present[two].argmax(1)
    used = np.flatnonzero(columns)
    lookup = np.zeros(len(columns), np.int64)
    lookup[used] = np.arange(len(used))
    return {
        "one": one, "one_label": present[one].argmax(1) + floor, "two": two, "two_high": high + floor,
        "two_low": low + floor, "two_column": (np.cumsum(columns) - 1)[high], "many": many,
        "many_absent": ~present[many][:, columns], "lookup": lookup, "used": used + floor,
    }  # fmt: skip


def _score_boundary(seg, grid, reach, boundary, nearest, out, part: _Part, rule: dict) -> None:
    """nnU-Net's label decision at the non-uniform points of ``part``'s samples, written into ``out`` (n, K, V).
    ``rule``: the part's device arrays (its ``samples`` and those of :func:`_part_arrays`)."""
    k, d = seg.shape[1], grid.shape[-1]
    samples = rule["samples"]
    p, m = len(part.samples), part.points
    flat = boundary[samples]  # (p, V): points to score, any slice
    hits = torch.nonzero_static(flat, size=part.hits)  # its size known on the host: no sync
    counts = flat.sum(1)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(part.hits, device=hits.device) - start[hits[:, 0]]
    # padding entries repeat some point: scored exactly like the others, so writing them twice is harmless
    points = hits[start.clamp(max=part.hits - 1), 1][:, None].repeat(1, m)
    points[hits[:, 0], rank] = hits[:, 1]
    sub_grid = _take(grid, samples, part.samples).reshape(p, -1, d).gather(1, points[..., None].expand(-1, -1, d))
    sub_grid = sub_grid.view(p, m, *([1] * (d - 1)), d)
    scores = _label_scores(_take(seg, samples, part.samples), sub_grid, reach[samples], part).view(p * k, -1, m)
    near = nearest[samples].view(p, k, -1).gather(2, points[:, None, :].expand(-1, k, -1))
    decided = _decide(scores, rule, part, near.reshape(-1, m), (m,))
    out[samples[:, None, None], torch.arange(k, device=samples.device)[None, :, None], points[:, None, :]] = (
        decided.view(p, k, m)
    )


def _label_scores(seg, grid, reach, part: _Part) -> torch.Tensor:
    """Float16-rounded scores (n K, L, *points) of ``part.labels`` at the grid points, nnU-Net's arithmetic.

    Small windows: the scaled one-hot channels of all labels in one ``grid_sample`` call (the same numbers
    per channel as separate calls); large ones: label by label into one reused indicator buffer."""
    n, k = len(seg), seg.shape[1]
    window = seg.shape[2:]
    points = grid.shape[1:-1]
    labels = part.labels
    scores = torch.empty((n, k, len(labels), *points), dtype=torch.float32, device=seg.device)
    outside = reach.float().view(-1, *([1] * (seg.dim() - 1)))  # 1 for the samples that may reach outside
    if n * k * len(labels) * math.prod(window) <= STACK_ELEMENTS:
        one_hot = torch.empty((n, k, len(labels), *window), dtype=torch.float32, device=seg.device)
        for j, label in enumerate(labels):
            torch.eq(seg, label, out=one_hot[:, :, j])
            if label == SEG_PAD and part.pad_label:
                one_hot[:, :, j] -= outside  # the pad label's indicator minus 1: zero padding then means 1
        sampled = grid_sample(one_hot.mul_(SCORE_SCALE).view(n, -1, *window), grid, "bilinear", "zeros", False)
        scores.view(n, -1, *points).copy_(sampled)
    else:
        indicator = torch.empty(seg.shape, dtype=torch.float32, device=seg.device)
        for j, label in enumerate(labels):
            torch.eq(seg, label, out=indicator)
            if label == SEG_PAD and part.pad_label:
                indicator -= outside
            scores[:, :, j] = grid_sample(indicator.mul_(SCORE_SCALE), grid, "bilinear", "zeros", False)
    if SEG_PAD in labels and part.pad_label:
        column = scores[:, :, labels.index(SEG_PAD)]
        column.copy_(torch.where(reach.view(-1, *([1] * (column.dim() - 1))), column + SCORE_SCALE, column))
    return _as_float16(scores.view(n * k, len(labels), *points))


def _take(t: torch.Tensor, rows: torch.Tensor, host: np.ndarray) -> torch.Tensor:
    """``t[rows]``, as a view (no copy of large windows) when ``rows`` (``host`` on the host) is a contiguous
    ascending range."""
    if len(host) and int(host[-1]) - int(host[0]) + 1 == len(host):
        return t[int(host[0]) : int(host[-1]) + 1]
    return t[rows]


def _as_float16(scores: torch.Tensor) -> torch.Tensor:
    """Scores rounded to float16, as nnU-Net keeps them (near-ties become ties), held in float32 (faster to compare)."""
    return scores.copy_(scores.half())


def _decide(scores, rule: dict, part: _Part, near, patch) -> torch.Tensor:
    """The label (int16) of every point of m slices (``patch``: the point layout).

    ``scores`` (m, U, *patch): float16-rounded scores of the labels ``part.labels``; ``rule``: the slices'
    arrays (:func:`_part_arrays`) on the device; ``near`` (m, *patch): the nearest-neighbour labels.
    """
    column = (-1, *([1] * len(patch)))
    out = torch.empty((len(near), *patch), dtype=torch.int16, device=near.device)
    one, two, many = rule["one"], rule["two"], rule["many"]
    if len(one):
        out[one] = rule["one_label"].to(out.dtype).view(column)
    if len(two):  # batchgeneratorsv2's two-label rule: the higher label where its score passes half the scale
        score = scores[two, rule["two_column"]]
        result = torch.where(score > SCORE_SCALE / 2, rule["two_high"].view(column), rule["two_low"].view(column))
        out[two] = torch.where(score == SCORE_SCALE / 2, near[two], result.to(out.dtype))  # ties: the nearest
    if len(many):  # running argmax in ascending label order, ties kept by the lower label
        mask = rule["many_absent"].view(len(many), -1, *([1] * len(patch)))
        s = _take(scores, many, part.many).masked_fill_(mask, float("-inf"))  # scores are not needed afterwards
        best, arg = s.max(1)
        near_label = near[many]
        near_score = s.gather(1, rule["lookup"][near_label.long() - part.floor].unsqueeze(1))[:, 0]
        out[many] = torch.where(near_score == best, near_label, rule["used"][arg].to(out.dtype))
    return out


def spatial_transform(
    big_image: torch.Tensor,
    big_seg: torch.Tensor,
    affine: np.ndarray,
    spec: AugmentationSpec,
    on_device: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate/scale the enlarged crops (n, C, *I) into (n, C, *P), dummy-2D slice by slice along axis 0.

    ``on_device``: the batch's shipped arrays (:func:`augment`), else the grid's are shipped here."""
    n = len(big_image)
    window = big_image.shape[2:]
    patch, plane = (spec.patch_size[1:], window[1:]) if spec.dummy_2d else (spec.patch_size, window)
    d = _shipped(on_device, lambda: grid_arrays(affine, plane), big_image.device)
    grid = sampling_grids(d["grid_matrices"], d["grid_scale"], patch)
    if spec.dummy_2d:
        image, seg = resample(big_image.reshape(n, -1, *plane), big_seg.reshape(n, -1, *plane), grid)
        return (image.reshape(n, big_image.shape[1], window[0], *patch),
                seg.reshape(n, big_seg.shape[1], window[0], *patch))  # fmt: skip
    return resample(big_image, big_seg, grid)


# -- intensity transforms (rows = (sample, channel) pairs) -----------------------------------------


def _noise_arrays(p: AugmentationParameters) -> dict[str, np.ndarray]:
    rows = np.flatnonzero(p.noise_apply)
    return {"noise_rows": rows, "noise_sd": p.noise_sd[rows].astype(np.float32)}


def gaussian_noise(x: torch.Tensor, p: AugmentationParameters, on_device: dict | None = None) -> None:
    """Add N(0, sd^2) noise to every channel of the chosen samples (one sd per sample). ``x``: (B, C, V)."""
    rows = np.flatnonzero(p.noise_apply)
    if not len(rows):
        return
    d = _shipped(on_device, lambda: _noise_arrays(p), x.device)
    gen = torch.Generator(device=x.device).manual_seed(p.noise_seed)
    noise = torch.randn((len(rows), *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
    noise *= d["noise_sd"].view(-1, 1, 1)
    x.index_add_(0, d["noise_rows"], noise)


def blur_kernels(sigma: np.ndarray) -> np.ndarray:
    """batchgeneratorsv2's Gaussian kernels, size ``round_to_odd(6 sigma + 0.5)``, centred in a common width.

    ``sigma`` (r,) in voxels; returns (r, 2 h + 1) float32, h the largest half-width (zero taps outside
    each kernel's own size).
    """
    sizes = kernel_sizes(sigma)
    half = int(sizes.max()) // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    pdf = np.exp(-0.5 * (x[None] / sigma[:, None]) ** 2) * (np.abs(x[None]) <= (sizes[:, None] - 1) / 2)
    return (pdf / pdf.sum(1, keepdims=True)).astype(np.float32)


def kernel_sizes(sigma: np.ndarray) -> np.ndarray:
    """batchgeneratorsv2's ``_compute_kernel_size(sigma, truncate=6)``: ``6 sigma + 0.5`` to the nearest odd
    integer (Python's ``round``, half to even, then one step towards the unrounded value)."""
    n = np.asarray(sigma, dtype=np.float64) * BLUR_TRUNCATE + 0.5
    rounded = np.round(n)
    odd = rounded % 2 == 1
    return np.where(odd, rounded, np.where(n - rounded >= 0, rounded + 1, rounded - 1)).astype(np.int64)


def _blur_arrays(p: AugmentationParameters) -> dict[str, np.ndarray]:
    rows = np.flatnonzero(p.blur_apply.reshape(-1))
    if not len(rows):
        return {}
    sigma = p.blur_sigma.reshape(-1, 3)[rows]
    return {"blur_rows": rows, **{f"blur_kernels{axis}": blur_kernels(sigma[:, axis]) for axis in range(3)}}


def gaussian_blur(x: torch.Tensor, p: AugmentationParameters, spatial: Sequence[int], on_device=None) -> None:
    """Separable Gaussian blur (reflect padding) of the chosen (sample, channel) rows. ``x``: (B*C, V)."""
    rows = np.flatnonzero(p.blur_apply.reshape(-1))
    if not len(rows):
        return
    d = _shipped(on_device, lambda: _blur_arrays(p), x.device)
    idx = d["blur_rows"]
    sub = x.index_select(0, idx).view(len(rows), 1, *spatial)
    for axis in range(3):
        kernels = d[f"blur_kernels{axis}"]
        half = kernels.shape[1] // 2
        widths = [0, 0, 0, 0, 0, 0]
        widths[2 * (2 - axis)] = widths[2 * (2 - axis) + 1] = half
        padded = pad(sub, widths, mode="reflect")
        out = torch.zeros_like(sub)
        view = (-1, 1, 1, 1, 1)
        for tap in range(2 * half + 1):
            out += kernels[:, tap].view(view) * padded.narrow(axis + 2, tap, spatial[axis])
        sub = out
    x.index_copy_(0, idx, sub.view(len(rows), -1))


def _row_arrays(name: str, apply: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """The rows (sample, channel) of the samples ``apply`` (B,) chooses and their ``values`` (B, C) as float32."""
    rows = np.flatnonzero(np.repeat(apply, values.shape[1]))
    return {f"{name}_rows": rows, f"{name}_values": np.asarray(values.reshape(-1), dtype=np.float32)[rows, None]}


def multiplicative_brightness(x: torch.Tensor, p: AugmentationParameters, on_device=None) -> None:
    """Multiply each channel of the chosen samples by its factor. ``x``: (B*C, V)."""
    if p.brightness_apply.any():
        d = _shipped(on_device, lambda: _row_arrays("brightness", p.brightness_apply, p.brightness), x.device)
        idx = d["brightness_rows"]
        x.index_copy_(0, idx, x.index_select(0, idx) * d["brightness_values"])


def contrast(x: torch.Tensor, p: AugmentationParameters, on_device=None) -> None:
    """``(x - mean) * factor + mean``, clamped to the channel's former range. ``x``: (B*C, V)."""
    if not p.contrast_apply.any():
        return
    d = _shipped(on_device, lambda: _row_arrays("contrast", p.contrast_apply, p.contrast), x.device)
    idx = d["contrast_rows"]
    sub = x.index_select(0, idx)
    mean = sub.mean(1, keepdim=True)
    lo, hi = sub.amin(1, keepdim=True), sub.amax(1, keepdim=True)
    sub = ((sub - mean) * d["contrast_values"] + mean).clamp_(lo, hi)
    x.index_copy_(0, idx, sub)


def _lowres_groups(p: AugmentationParameters, spatial: Sequence[int]) -> tuple[list[list[int]], list[np.ndarray]]:
    """The downsampled shapes of the chosen rows and the rows of each shape."""
    rows = np.flatnonzero(p.lowres_apply.reshape(-1))
    # nnU-Net: round(size * float32 scale), Python's round (half to even) as np.round
    scales = p.lowres_scale.reshape(-1, 3)[rows].astype(np.float32).astype(np.float64)
    shapes = np.round(np.asarray(spatial, dtype=np.float64) * scales).astype(np.int64)
    unique, group = np.unique(shapes, axis=0, return_inverse=True)
    return unique.tolist(), [rows[group.reshape(-1) == g] for g in range(len(unique))]


def simulate_low_resolution(x: torch.Tensor, p: AugmentationParameters, spatial: Sequence[int], on_device=None) -> None:
    """Downsample (nearest-exact) and upsample (trilinear) the chosen rows, grouped by downsampled shape."""
    if not p.lowres_apply.any():
        return
    shapes, members = _lowres_groups(p, spatial)
    d = _shipped(on_device, lambda: {f"lowres_rows{g}": rows for g, rows in enumerate(members)}, x.device)
    for g, shape in enumerate(shapes):
        idx = d[f"lowres_rows{g}"]
        sub = x.index_select(0, idx).view(len(members[g]), 1, *spatial)
        low = interpolate(sub, shape, mode="nearest-exact")
        x.index_copy_(0, idx, interpolate(low, tuple(spatial), mode="trilinear").view(len(members[g]), -1))


def gamma(x: torch.Tensor, apply: np.ndarray, values: np.ndarray, invert: bool, on_device=None) -> None:
    """Gamma on the min-max normalised channel, statistics retained, optionally on the inverted image."""
    if not apply.any():
        return
    name = "gamma_inverted" if invert else "gamma"
    d = _shipped(on_device, lambda: _row_arrays(name, apply, values), x.device)
    eps = 1e-7
    idx = d[f"{name}_rows"]
    sub = x.index_select(0, idx)
    if invert:
        sub.mul_(-1)
    mean, std = sub.mean(1, keepdim=True), sub.std(1, keepdim=True)
    lo, hi = sub.amin(1, keepdim=True), sub.amax(1, keepdim=True)
    span = hi - lo
    sub = ((sub - lo) / span.clamp(min=eps)).pow_(d[f"{name}_values"]).mul_(span).add_(lo)
    now_mean, now_std = sub.mean(1, keepdim=True), sub.std(1, keepdim=True)
    sub = (sub - now_mean).mul_(std / now_std.clamp(min=eps)).add_(mean)
    if invert:
        sub.mul_(-1)
    x.index_copy_(0, idx, sub)


def _mirror_arrays(flags: np.ndarray) -> dict[str, np.ndarray]:
    codes = flags @ np.array([1, 2, 4])
    return {f"mirror_rows{code}": np.flatnonzero(codes == code) for code in np.unique(codes) if code}


def mirror(image: torch.Tensor, seg: torch.Tensor, flags: np.ndarray, on_device=None) -> None:
    """Flip each sample along its flagged axes (``flags`` (B, 3)), grouped by axis combination."""
    codes = flags @ np.array([1, 2, 4])
    d = _shipped(on_device, lambda: _mirror_arrays(flags), image.device)
    for code in np.unique(codes):
        if code == 0:
            continue
        dims = [a + 2 for a in range(3) if code & (1 << a)]
        idx = d[f"mirror_rows{code}"]
        image.index_copy_(0, idx, image.index_select(0, idx).flip(dims))
        seg.index_copy_(0, idx, seg.index_select(0, idx).flip(dims))


def downsample_for_deep_supervision(seg: torch.Tensor, scales) -> list[torch.Tensor]:
    """One target per deep-supervision scale (``nearest-exact``), as DownsampleSegForDSTransform."""
    out, as_float = [], None
    for s in scales:
        if all(v == 1 for v in s):
            out.append(seg)
            continue
        shape = [round(n * v) for n, v in zip(seg.shape[2:], s, strict=True)]
        if as_float is None:
            as_float = seg.float()
        out.append(interpolate(as_float, shape, mode="nearest-exact").to(seg.dtype))
    return out


def batch_arrays(raw: RawBatch) -> dict[str, np.ndarray]:
    """Every host array the augmentation of ``raw`` needs on the device (indices, parameters, kernels,
    grid matrices, region labels), for one :func:`ship`."""
    p, spec = raw.params, raw.spec
    spatial = raw.image.shape[2:]
    window = raw.big_image.shape[3:] if spec.dummy_2d else raw.big_image.shape[2:]
    lowres = _lowres_groups(p, spatial)[1] if p.lowres_apply.any() else []
    return {
        "spatial_rows": np.flatnonzero(p.spatial), **grid_arrays(p.affine, window), **_noise_arrays(p),
        **_blur_arrays(p), **_row_arrays("brightness", p.brightness_apply, p.brightness),
        **_row_arrays("contrast", p.contrast_apply, p.contrast), **{f"lowres_rows{g}": r for g, r in enumerate(lowres)},
        **_row_arrays("gamma_inverted", p.gamma_inverted_apply, p.gamma_inverted),
        **_row_arrays("gamma", p.gamma_apply, p.gamma), **_mirror_arrays(p.mirror),
        **{f"region{i}": np.asarray(r, dtype=np.int64) for i, r in enumerate(spec.regions or ())},
    }  # fmt: skip


def augment(raw: RawBatch, device: torch.device | str | None = None) -> dict:
    """Apply nnU-Net's training augmentation to a :class:`RawBatch`: ``{"data", "target"}``.

    ``data`` (B, C, *P) float32; ``target`` (B, Cs, *P) int16 labels (bool region channels with
    regions), or one such tensor per deep-supervision scale. Runs on ``device`` (default: where
    the batch is). The batch's host arrays go to the device in one non-blocking copy (:func:`ship`);
    host synchronisations: the two of :func:`resample` where the batch has spatial samples, else none.
    """
    if device is not None:
        raw = raw.to(device)
    p, spec = raw.params, raw.spec
    image, seg = raw.image, raw.seg
    d = ship(batch_arrays(raw), image.device)
    if p.spatial.any():
        moved_image, moved_seg = spatial_transform(raw.big_image, raw.big_seg, p.affine, spec, d)
        image.index_copy_(0, d["spatial_rows"], moved_image)
        seg.index_copy_(0, d["spatial_rows"], moved_seg)
    b, c = image.shape[:2]
    spatial = image.shape[2:]
    per_sample = image.view(b, c, -1)
    rows = image.view(b * c, -1)
    gaussian_noise(per_sample, p, d)
    gaussian_blur(rows, p, spatial, d)
    multiplicative_brightness(rows, p, d)
    contrast(rows, p, d)
    simulate_low_resolution(rows, p, spatial, d)
    gamma(rows, p.gamma_inverted_apply, p.gamma_inverted, True, d)
    gamma(rows, p.gamma_apply, p.gamma, False, d)
    if p.mirror.any():
        mirror(image, seg, p.mirror, d)
    outside = seg[:, 0] < 0
    for channel in spec.mask_channels:
        image[:, channel].masked_fill_(outside, 0)
    seg.masked_fill_(seg == SEG_PAD, 0)
    if spec.regions is not None:
        target = torch.stack([torch.isin(seg[:, 0], d[f"region{i}"]) for i in range(len(spec.regions))], 1)
    else:
        target = seg
    if spec.deep_supervision_scales is not None:
        target = downsample_for_deep_supervision(target, spec.deep_supervision_scales)
    return {"data": image, "target": target}


def enlarged_patch_size(spec: AugmentationSpec) -> tuple[int, int, int]:
    """nnU-Net's ``initial_patch_size`` for the spec (the crop its spatial transform starts from)."""
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size

    size = get_patch_size(spec.patch_size, spec.rotation, spec.rotation, spec.rotation, (0.85, 1.25))
    if spec.dummy_2d:
        size[0] = spec.patch_size[0]
    return tuple(int(s) for s in size)


def centre_offset(window: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """Where nnU-Net's spatial transform cuts an untransformed patch out of the enlarged crop (per axis)."""
    return np.array([math.floor(w / 2) - p // 2 for w, p in zip(window, patch, strict=True)])
