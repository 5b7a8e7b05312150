"""Synthetic 3D segmentation datasets in nnU-Net v2's raw format (the embedded default of SPEC section 5).

A :class:`SynthConfig` holds the knobs: cases, volume shape (and per-case jitter), foreground
classes, object sizes (semi-axis ranges in voxels per class, which set the foreground share and the
class imbalance), objects per class, intensity contrast and noise, object shapes, and
*orientation-defined classes* (same shape and intensity; the class is the band of the volume along
one axis the object lies in, so mirroring augmentation destroys the cue).

Case ``i`` comes from ``numpy.random.default_rng([seed, i])`` alone: it is reproducible without the
other cases, and the same config gives identical arrays. Arrays are in the axis order nnU-Net reads
them (SimpleITK's array order, i.e. z, y, x of the file); ``shape`` and ``spacing`` use that order.
Only numpy is imported here; SimpleITK (writing) and tqdm (progress) are imported when used.

Typical use::

    from pgps.data.synth import PRESETS, class_statistics, generate_dataset, make_case
    image, label = make_case(PRESETS["lesions"], 0)        # float32 and uint8 arrays, no disk
    generate_dataset(PRESETS["lesions"], "raw", 501, "SynthLesions")   # raw/Dataset501_SynthLesions
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgps.io import atomic_directory
from pgps.progress import progress as progress_of
from pgps.sizes import AXES, Size, as_size

SHAPES = ("ellipsoid", "blob", "mixed")
"""Object shapes: randomly oriented ellipsoids, smooth blobs (ellipsoids with a low-order angular
perturbation of the surface), or a fair coin between the two per object."""

FILE_ENDING = ".nii.gz"
PLACEMENT_ATTEMPTS = 30
"""Positions tried per object before it is painted over background only (overlap allowed)."""


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """The knobs of a synthetic dataset. Lengths are in voxels, in array axis order.

    ``radii`` gives each foreground class a ``(min, max)`` range for the three semi-axes of its
    objects (each drawn uniformly); class ``c`` uses ``radii[(c - 1) % len(radii)]``, so one pair
    serves every class. ``objects_per_class`` is the inclusive range of objects drawn per class and
    case. Class ``c`` has mean intensity ``contrast * c`` over a background of 0 (``contrast`` for
    every class when ``distinct_intensity`` is off or classes are orientation-defined), plus
    Gaussian noise of sd ``noise_sd``.

    With ``orientation`` the axis ``orientation_axis`` is cut into ``num_classes`` mirror-symmetric
    bands ``[ceil(b*W/K), floor((b+1)*W/K))`` and every object of class ``b + 1`` lies wholly in
    band ``b``: for two classes, class 1 ("left") fills only indices ``< W // 2`` and class 2
    ("right") only indices ``>= ceil(W / 2)``. "Left" means low array indices, not patient left.
    Mirroring along that axis swaps the classes. Orientation classes need a single radius range.

    ``difficulty`` is the range of a per-case *image* difficulty ``d`` (:func:`case_difficulty`: uniform in
    ``[low, high]``, drawn from the seed and the case index alone, so training and test cases share one
    distribution). A case at ``d`` has its class contrast multiplied by ``1 - (1 - hard_contrast) d``
    (fainter objects over the same noise) and its noiseless image blurred by a Gaussian of sd
    ``d * hard_blur`` voxels before the noise is added (soft boundaries, as partial volume and motion
    give). The label stays the sharp object. With :class:`LabelNoise` ``iso_spread``, the annotators of
    the noisy label sets outline each object at their own level of that blurred boundary, so that they
    disagree where, and as much as, the image is ambiguous (:func:`make_label_sets`). ``(0, 0)`` (the
    default) leaves every case exactly as without the knob.
    """

    num_cases: int = 12
    shape: Size = (64, 64, 64)
    shape_jitter: tuple[int, int, int] | int = (0, 0, 0)
    num_classes: int = 2
    radii: tuple[tuple[float, float], ...] = ((6.0, 10.0),)
    objects_per_class: tuple[int, int] = (1, 1)
    contrast: float = 2.0
    noise_sd: float = 1.0
    distinct_intensity: bool = True
    shapes: str = "ellipsoid"
    blob_amplitude: float = 0.3
    orientation: bool = False
    orientation_axis: int = 2
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    class_names: tuple[str, ...] | None = None
    difficulty: tuple[float, float] = (0.0, 0.0)
    hard_contrast: float = 0.5
    hard_blur: float = 1.5

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _check_int("num_cases", self.num_cases, 1)
        set_(self, "shape", as_size("shape", self.shape))
        jitter = self.shape_jitter
        jitter = (jitter,) * AXES if isinstance(jitter, int) and not isinstance(jitter, bool) else tuple(jitter)
        if len(jitter) != AXES:
            raise ValueError(f"shape_jitter must have {AXES} axes, got {jitter!r}")
        for axis, (j, s) in enumerate(zip(jitter, self.shape, strict=True)):
            _check_int(f"shape_jitter axis {axis}", j, 0)
            if j >= s:
                raise ValueError(f"shape_jitter axis {axis} (= {j}) must be smaller than shape axis {axis} (= {s})")
        set_(self, "shape_jitter", tuple(int(j) for j in jitter))
        _check_int("num_classes", self.num_classes, 1)
        if self.num_classes > 255:
            raise ValueError(f"num_classes must be at most 255 (uint8 labels), got {self.num_classes}")
        set_(self, "radii", _as_radii(self.radii))
        lo, hi = self.objects_per_class
        _check_int("objects_per_class min", lo, 0)
        _check_int("objects_per_class max", hi, max(1, lo))
        set_(self, "objects_per_class", (int(lo), int(hi)))
        if not math.isfinite(self.contrast):
            raise ValueError(f"contrast must be finite, got {self.contrast}")
        if not (math.isfinite(self.noise_sd) and self.noise_sd >= 0):
            raise ValueError(f"noise_sd must be >= 0, got {self.noise_sd}")
        if self.shapes not in SHAPES:
            raise ValueError(f"shapes must be one of {', '.join(SHAPES)}, got {self.shapes!r}")
        if not 0 <= self.blob_amplitude < 1:
            raise ValueError(f"blob_amplitude must be in [0, 1), got {self.blob_amplitude}")
        if self.orientation_axis not in range(AXES):
            raise ValueError(f"orientation_axis must be 0, 1 or 2, got {self.orientation_axis}")
        if self.orientation and len(self.radii) != 1:
            raise ValueError("orientation classes must share one radius range (give radii a single (min, max))")
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != AXES or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be {AXES} positive numbers, got {self.spacing!r}")
        set_(self, "spacing", spacing)
        _check_int("seed", self.seed, 0)
        if self.class_names is not None:
            names = tuple(str(n) for n in self.class_names)
            if len(names) != self.num_classes or len(set(names)) != len(names) or "background" in names:
                raise ValueError(
                    f"class_names must be {self.num_classes} distinct names other than 'background', got {names!r}"
                )
            set_(self, "class_names", names)
        lo, hi = (float(v) for v in self.difficulty)
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"difficulty must be a range 0 <= low <= high <= 1, got {self.difficulty!r}")
        set_(self, "difficulty", (lo, hi))
        if not (math.isfinite(self.hard_contrast) and 0 < self.hard_contrast <= 1):
            raise ValueError(f"hard_contrast must be in (0, 1], got {self.hard_contrast}")
        if not (math.isfinite(self.hard_blur) and self.hard_blur >= 0):
            raise ValueError(f"hard_blur must be >= 0 voxels, got {self.hard_blur}")
        self._check_objects_fit()

    def _check_objects_fit(self) -> None:
        for c in range(1, self.num_classes + 1):
            ext = _extent(self.radii_of(c)[1], self._max_amplitude)
            for axis in range(AXES):
                lo, hi = self.shape[axis] - self.shape_jitter[axis], self.shape[axis] + self.shape_jitter[axis]
                for size in range(lo, hi + 1) if self.orientation and axis == self.orientation_axis else (lo,):
                    start, stop = self.band(c, axis, size)
                    if stop - start < 2 * ext + 1:
                        where = f"class {c}'s band [{start}, {stop})" if stop - start < size else "the volume"
                        raise ValueError(
                            f"shape axis {axis}: objects of class {c} (radius up to {self.radii_of(c)[1]:g}, extent "
                            f"{2 * ext + 1} voxels) do not fit in {where} of a {size}-voxel axis; "
                            "enlarge the shape or shrink the radii"
                        )

    @property
    def _max_amplitude(self) -> float:
        return self.blob_amplitude if self.shapes != "ellipsoid" else 0.0

    def radii_of(self, c: int) -> tuple[float, float]:
        """Semi-axis range ``(min, max)`` in voxels of foreground class ``c`` (1-based)."""
        return self.radii[(c - 1) % len(self.radii)]

    def mean_intensity(self, c: int) -> float:
        """Mean intensity of class ``c`` (0 = background)."""
        if c == 0:
            return 0.0
        return self.contrast * (c if self.distinct_intensity and not self.orientation else 1)

    @property
    def labels(self) -> dict[str, int]:
        """nnU-Net's ``labels`` mapping: ``{"background": 0, name_1: 1, ...}``."""
        if self.class_names is not None:
            names = self.class_names
        elif self.orientation and self.num_classes == 2:
            names = ("left", "right")
        else:
            names = tuple(f"class_{c}" for c in range(1, self.num_classes + 1))
        return {"background": 0, **{n: c for c, n in enumerate(names, start=1)}}

    def band(self, c: int, axis: int, size: int) -> tuple[int, int]:
        """Index range ``[start, stop)`` along ``axis`` where objects of class ``c`` may lie."""
        if not self.orientation or axis != self.orientation_axis:
            return 0, size
        k, b = self.num_classes, c - 1
        return -((-b * size) // k), ((b + 1) * size) // k

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable knobs (see :meth:`from_dict`)."""
        return {k: _lists(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthConfig:
        d = dict(d)
        d["radii"] = tuple(tuple(r) for r in d.get("radii", cls.radii))
        for key in ("shape", "shape_jitter", "objects_per_class", "spacing", "difficulty"):
            if key in d:
                d[key] = tuple(d[key])
        if d.get("class_names") is not None:
            d["class_names"] = tuple(d["class_names"])
        return cls(**d)


def _lists(value: Any) -> Any:
    return [_lists(v) for v in value] if isinstance(value, tuple) else value


def _as_radii(value: Any) -> tuple[tuple[float, float], ...]:
    """``radii`` as ``((min, max), ...)``; a single ``(min, max)`` pair is accepted too."""
    try:
        pairs = list(value)
        if len(pairs) == 2 and all(isinstance(v, (int, float, np.number)) for v in pairs):
            pairs = [pairs]
        radii = tuple((float(lo), float(hi)) for lo, hi in pairs)
    except (TypeError, ValueError):
        raise ValueError(f"radii must be (min, max) pairs of semi-axes in voxels, got {value!r}") from None
    if not radii:
        raise ValueError("radii needs at least one (min, max) range")
    for c, (lo, hi) in enumerate(radii):
        if not (math.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"radii[{c}] must satisfy 0 < min <= max, got ({lo:g}, {hi:g})")
    return radii


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _extent(radius: float, amplitude: float) -> int:
    """Half-width in voxels of the box that holds an object of largest semi-axis ``radius``."""
    return math.ceil(radius * (1 + amplitude))


PRESETS: dict[str, SynthConfig] = {
    "organs": SynthConfig(
        num_cases=16,
        shape=(60, 60, 60),
        shape_jitter=(4, 4, 4),
        num_classes=4,
        radii=((10.0, 14.0), (9.0, 13.0), (8.0, 12.0), (7.0, 11.0)),
        objects_per_class=(1, 1),
        contrast=1.5,
        noise_sd=1.0,
        shapes="blob",
        class_names=("organ_1", "organ_2", "organ_3", "organ_4"),
    ),
    "lesions": SynthConfig(
        num_cases=20,
        shape=(60, 60, 60),
        shape_jitter=(4, 4, 4),
        num_classes=1,
        radii=((2.0, 4.5),),
        objects_per_class=(2, 6),
        contrast=1.25,
        noise_sd=1.0,
        shapes="mixed",
        class_names=("lesion",),
    ),
    "orientation": SynthConfig(
        num_cases=12,
        shape=(60, 60, 60),
        shape_jitter=(4, 4, 4),
        num_classes=2,
        radii=((5.0, 9.0),),
        objects_per_class=(1, 2),
        contrast=2.0,
        noise_sd=1.0,
        shapes="blob",
        orientation=True,
        orientation_axis=2,
    ),
    "imbalance": SynthConfig(
        num_cases=30,
        shape=(48, 48, 48),
        shape_jitter=(0, 0, 0),
        num_classes=1,
        radii=((3.0, 5.0),),
        objects_per_class=(1, 3),
        contrast=1.5,
        noise_sd=1.0,
        shapes="mixed",
        class_names=("lesion",),
    ),
}
"""Small presets that nnU-Net plans, preprocesses and trains on a 2-core CPU in minutes. Volumes are
56-64 voxels per axis (60 +- 4), so the median stays at most 64 and nnU-Net plans a 64^3 patch (a
median above 64 would round the patch up to 80); ``imbalance`` (the synthetic study's family, see
:func:`with_foreground_share`) has fixed 48^3 volumes. :data:`PRESET_DESCRIPTIONS` gives each
preset's measured class balance."""

PRESET_DESCRIPTIONS: dict[str, str] = {
    "organs": "balanced multi-organ-like: 16 cases, 4 blob organs of decreasing size (semi-axes 7-14 voxels), "
    "class means 1.5/3/4.5/6 over noise sd 1; measured foreground share 8.99% "
    "(classes 3.22%, 2.72%, 1.78%, 1.26%)",
    "lesions": "imbalanced lesion-like: 20 cases, 2-6 small lesions (ellipsoids or blobs, semi-axes 2-4.5 voxels) "
    "of one class, mean 1.25 over noise sd 1; measured foreground share 0.25% (classes 0.25%)",
    "orientation": "left/right classes for the mirroring experiment: 12 cases, 1-2 identical blobs per class "
    "(semi-axes 5-9 voxels, mean 2 over noise sd 1), class 1 in the low half of axis 2, class 2 in the high "
    "half; measured foreground share 2.10% (classes 0.97%, 1.14%)",
    "imbalance": "the synthetic study's family: 30 cases of 48^3 voxels, 1-3 lesions (ellipsoids or blobs, "
    "semi-axes 3-5 voxels) of one class, mean 1.5 over noise sd 1; --foreground-share scales the lesions to any "
    "share from one voxel per lesion up to the largest that fit; measured foreground share 0.50% (classes 0.50%)",
}
"""What each preset holds; the shares are means over its cases measured with :func:`class_statistics`
(``tests/test_synth.py`` re-measures them)."""


def preset(name: str, **overrides: Any) -> SynthConfig:
    """The preset ``name`` with some knobs replaced (validated again)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


# -- a dataset family parameterised by its foreground share --------------------------------

SHARE_TOLERANCE = 0.02
"""Default relative tolerance of :func:`with_foreground_share` (2% of the target share)."""


def scale_radii(config: SynthConfig, factor: float) -> SynthConfig:
    """``config`` with every semi-axis range multiplied by ``factor`` (validated again: the objects must fit)."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"radius factor must be a positive number, got {factor!r}")
    return dataclasses.replace(config, radii=tuple((lo * factor, hi * factor) for lo, hi in config.radii))


def measured_foreground_share(config: SynthConfig) -> float:
    """Mean foreground-voxel share over the config's cases (:func:`class_statistics` of their labels)."""
    labels = (make_label(config, i) for i in range(config.num_cases))
    return class_statistics(labels, config.num_classes).foreground_share


def with_foreground_share(
    config: SynthConfig, share: float, *, tolerance: float = SHARE_TOLERANCE, max_steps: int = 40
) -> SynthConfig:
    """``config`` with its objects scaled so that its *measured* foreground share hits ``share``.

    Every semi-axis range is multiplied by one factor (their ratios, the number of objects, the
    shapes, contrast, noise, volume and cases stay as they are). The factor is searched until
    :func:`measured_foreground_share` (which generates every case's label) is within ``tolerance``
    (relative) of ``share``: each step assumes the share grows with the cube of the factor and falls
    back to bisection of the bracket measured so far. Raises ``ValueError`` when ``share`` lies
    outside what the volume allows (below one voxel per object, or above the largest objects that
    fit), naming the reachable range.
    """
    if isinstance(share, bool) or not (isinstance(share, (int, float)) and 0 < share < 1):
        raise ValueError(f"foreground share must be a number in (0, 1), got {share!r}")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance!r}")

    def fits(factor: float) -> bool:
        try:
            scale_radii(config, factor)
        except ValueError:
            return False
        return True

    smallest = 0.5 / max(hi for _, hi in config.radii)  # every semi-axis at half a voxel: one voxel per object
    if not fits(smallest):
        raise ValueError("the objects of this configuration do not fit in its volume")
    largest = smallest
    while fits(2 * largest):
        largest *= 2
    top = 2 * largest
    for _ in range(20):  # close in on the largest factor whose objects still fit
        middle = math.sqrt(largest * top)
        largest, top = (middle, top) if fits(middle) else (largest, middle)

    low = high = None  # measured factors whose share is below / above the target
    factor, best = min(max(1.0, smallest), largest), (math.inf, 1.0)
    for _ in range(max_steps):
        measured = measured_foreground_share(scale_radii(config, factor))
        error = abs(measured / share - 1)
        best = min(best, (error, factor))
        if error <= tolerance:
            return scale_radii(config, factor)
        if (measured < share and factor >= largest) or (measured > share and factor <= smallest):
            raise ValueError(
                f"foreground share {share:.4%} is out of reach for this configuration: "
                f"{'the largest objects that fit give' if measured < share else 'objects of one voxel give'} "
                f"{measured:.4%}; change the volume or the number of objects"
            )
        low, high = (factor, high) if measured < share else (low, factor)
        bottom, top = low if low is not None else smallest, high if high is not None else largest
        guess = factor * (share / measured) ** (1 / 3) if measured > 0 else top
        if guess >= top:  # try the reachable end once, then bisect
            factor = top if high is None else math.sqrt(bottom * top)
        elif guess <= bottom:
            factor = bottom if low is None else math.sqrt(bottom * top)
        else:
            factor = guess
    raise ValueError(
        f"no radius factor gives a foreground share within {tolerance:.0%} of {share:.4%} (closest: factor "
        f"{best[1]:.4g}, {best[0]:.1%} off); raise the tolerance or the number of cases"
    )


# -- generation ----------------------------------------------------------------------------


DIFFICULTY_STREAM = 2_000_003
"""Third word of the generator key of a case's difficulty draw (``default_rng([seed, index, DIFFICULTY_STREAM])``),
apart from the case's own stream so that the knob leaves the objects and the noise where they were."""


def case_difficulty(config: SynthConfig, index: int) -> float:
    """The image difficulty ``d`` of case ``index`` (see :class:`SynthConfig` ``difficulty``): uniform in the
    range, from ``default_rng([seed, index, DIFFICULTY_STREAM])`` alone; the low end when the range is a point."""
    _check_int("index", index, 0)
    lo, hi = config.difficulty
    if hi == lo:
        return lo
    return float(lo + (hi - lo) * np.random.default_rng([config.seed, index, DIFFICULTY_STREAM]).random())


def case_blur(config: SynthConfig, index: int) -> float:
    """Gaussian sd in voxels of case ``index``'s blur: ``difficulty * hard_blur``."""
    return case_difficulty(config, index) * config.hard_blur


def gaussian_blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    """``volume`` (float64) smoothed by a separable Gaussian of sd ``sigma`` voxels, truncated at
    ``int(3 sigma + 0.5)`` voxels and with the edge values repeated outside (as
    ``scipy.ndimage.gaussian_filter(volume, sigma, mode="nearest", truncate=3)``, numpy only); ``sigma`` 0
    returns a copy."""
    out = np.array(volume, dtype=np.float64)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"blur sd must be >= 0 voxels, got {sigma}")
    radius = int(3 * sigma + 0.5)
    if sigma == 0 or radius == 0:
        return out
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    weights /= weights.sum()
    for axis in range(out.ndim):
        pad = [(radius, radius) if a == axis else (0, 0) for a in range(out.ndim)]
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(weights))
    return out


def make_case(config: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Case ``index`` of ``config``: ``(image float32, label uint8)``, both of the case's shape.

    Drawn from ``numpy.random.default_rng([config.seed, index])`` only, so any case can be made
    alone. Objects of each class (class 1 first) are placed without overlap when one of
    :data:`PLACEMENT_ATTEMPTS` random positions allows it, else painted over background only.
    The case's image difficulty (:func:`case_difficulty`) lowers the contrast and blurs the
    noiseless image; the noise is the same draw at every difficulty.
    """
    rng, label = _draw_label(config, index)
    d = case_difficulty(config, index)
    scale = 1 - (1 - config.hard_contrast) * d
    means = np.array([config.mean_intensity(c) * scale for c in range(config.num_classes + 1)], dtype=np.float64)
    clean = gaussian_blur(means[label], d * config.hard_blur) if d * config.hard_blur > 0 else means[label]
    image = clean + rng.normal(0.0, config.noise_sd, size=label.shape) if config.noise_sd else clean
    return image.astype(np.float32), label


def make_label(config: SynthConfig, index: int) -> np.ndarray:
    """The label of :func:`make_case` ``(config, index)`` alone (the same array, without drawing the image)."""
    return _draw_label(config, index)[1]


def _draw_label(config: SynthConfig, index: int) -> tuple[np.random.Generator, np.ndarray]:
    """The case's generator (positioned where the image's noise is drawn) and its label."""
    _check_int("index", index, 0)
    rng = np.random.default_rng([config.seed, index])
    shape = tuple(int(s + rng.integers(-j, j + 1)) for s, j in zip(config.shape, config.shape_jitter, strict=True))
    label = np.zeros(shape, dtype=np.uint8)
    for c in range(1, config.num_classes + 1):
        lo, hi = config.objects_per_class
        for _ in range(int(rng.integers(lo, hi + 1))):
            _place_object(rng, config, label, c)
    return rng, label


def _place_object(rng: np.random.Generator, config: SynthConfig, label: np.ndarray, c: int) -> None:
    mask = _object_mask(rng, config, c)
    ext = mask.shape[0] // 2
    bands = [config.band(c, axis, label.shape[axis]) for axis in range(AXES)]
    for attempt in range(PLACEMENT_ATTEMPTS):
        centre = [int(rng.integers(start + ext, stop - ext)) for start, stop in bands]
        box = tuple(slice(p - ext, p + ext + 1) for p in centre)
        region = label[box]
        if not region[mask].any() or attempt == PLACEMENT_ATTEMPTS - 1:
            region[mask & (region == 0)] = c
            return


def _object_mask(rng: np.random.Generator, config: SynthConfig, c: int) -> np.ndarray:
    """Boolean cube of side ``2 * ext + 1`` holding one object centred in it."""
    rmin, rmax = config.radii_of(c)
    semi_axes = rng.uniform(rmin, rmax, size=AXES)
    rotation = _random_rotation(rng)
    blob = config.shapes == "blob" or (config.shapes == "mixed" and rng.random() < 0.5)
    amplitude = config.blob_amplitude if blob else 0.0
    ext = _extent(float(semi_axes.max()), amplitude)
    o = np.arange(-ext, ext + 1, dtype=np.float64)
    d = (o[:, None, None], o[None, :, None], o[None, None, :])
    # coordinates in the object's frame, scaled to the unit sphere (elementwise, no BLAS: bit-reproducible)
    p = [sum(d[i] * rotation[i, j] for i in range(AXES)) / semi_axes[j] for j in range(AXES)]
    rho = np.sqrt(p[0] ** 2 + p[1] ** 2 + p[2] ** 2)
    if not blob:
        return rho <= 1.0
    n = [pj / np.maximum(rho, 1e-12) for pj in p]
    # low-order angular perturbation of the surface: Legendre P1, P2, P2, P3, P3 along random directions
    orders = (1, 2, 2, 3, 3)
    coeffs = rng.uniform(-1.0, 1.0, size=len(orders))
    g = np.zeros_like(rho)
    for order, coeff in zip(orders, coeffs, strict=True):
        u = _unit_vector(rng)
        x = n[0] * u[0] + n[1] * u[1] + n[2] * u[2]
        g += coeff * (x if order == 1 else 1.5 * x**2 - 0.5 if order == 2 else 2.5 * x**3 - 1.5 * x)
    g /= np.abs(coeffs).sum()
    return rho <= 1.0 + amplitude * g


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=AXES)
    return v / np.sqrt((v**2).sum())


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3x3 rotation from a random unit quaternion."""
    w, x, y, z = _unit_quaternion(rng)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _unit_quaternion(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return q / np.sqrt((q**2).sum())


# -- label sets with known, graded corruption ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelNoise:
    """``count`` noisy label sets per case, corrupted at a known, graded level (CDL-UNet-like pseudo-labels).

    Case ``i`` of ``n`` gets a difficulty level from ``levels``: the ``n`` values
    ``linspace(levels[0], levels[1], n)`` shuffled by the seed (so every level occurs once and the
    case order says nothing). Label set ``k`` of that case is corrupted at ``level * factors[k]``
    (default: ``linspace(1, 0.5, count)``, the last set the least corrupted, like a reference
    model's prediction). Corruption at level ``x`` in [0, 1], per foreground class present:

    - the class mask moves by ``x * max_shift`` voxels in a random direction (rounded per axis);
    - with probability ``x * swap`` it takes another foreground class's label (off by default);
    - a share ``x * scatter`` of its voxels, drawn at random, is moved to random places of the
      volume (the class loses them where it was and gains as many false positives elsewhere).

    Scatter makes the expected Dice between two sets of a class ``(1 - x s)^2`` whatever the object's
    size, so that the level, not the anatomy, sets the agreement; the shift adds boundary errors.
    Level 0 copies the label. Set ``k`` of case ``i`` is drawn from
    ``default_rng([seed, i, 1000 + k])`` only.

    Disagreement that comes from the image (``iso_spread`` > 0, for a config with a per-case image
    difficulty): before any corruption, annotator ``k`` outlines each class at its own iso-level ``t_k``
    (:attr:`iso_levels`, from ``0.5 - iso_spread``, generous, to ``0.5 + iso_spread``, strict) of the
    class mask blurred as the case's image is (:func:`case_blur`). A sharp image (blur 0) gives every
    annotator the true outline; the more blur, the farther apart their outlines (about
    ``blur * |z(t_j) - z(t_k)|`` voxels for a flat boundary, ``z`` the standard normal quantile). With
    ``levels`` (0, 0) this is the only disagreement.
    """

    count: int = 3
    levels: tuple[float, float] = (0.0, 1.0)
    factors: tuple[float, ...] | None = None
    max_shift: float = 3.0
    swap: float = 0.0
    scatter: float = 0.5
    iso_spread: float = 0.0

    def __post_init__(self) -> None:
        _check_int("label set count", self.count, 2)
        lo, hi = (float(v) for v in self.levels)
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"corruption levels must satisfy 0 <= low <= high <= 1, got {self.levels!r}")
        object.__setattr__(self, "levels", (lo, hi))
        factors = self.factors if self.factors is not None else tuple(np.linspace(1.0, 0.5, self.count).tolist())
        factors = tuple(float(f) for f in factors)
        if len(factors) != self.count or not all(0 <= f <= 1 for f in factors):
            raise ValueError(f"factors must be {self.count} numbers in [0, 1], got {self.factors!r}")
        object.__setattr__(self, "factors", factors)
        for name in ("max_shift", "swap", "scatter"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0) or (name != "max_shift" and value > 1):
                raise ValueError(f"{name} must be a number >= 0 (swap and scatter at most 1), got {value}")
        if not (math.isfinite(self.iso_spread) and 0 <= self.iso_spread < 0.5):
            raise ValueError(f"iso_spread must be in [0, 0.5), got {self.iso_spread}")

    @property
    def iso_levels(self) -> tuple[float, ...]:
        """Annotator ``k``'s iso-level: ``0.5 + iso_spread * u_k``, ``u`` = ``linspace(-1, 1, count)`` ordered by
        distance from 0, farthest first (3 sets: 0.5 - s, 0.5 + s, 0.5: the last set the most central, as the
        least corrupted set comes last)."""
        u = np.linspace(-1.0, 1.0, self.count)
        return tuple(float(0.5 + self.iso_spread * v) for v in u[np.argsort(-np.abs(u), kind="stable")])

    def case_levels(self, num_cases: int, seed: int) -> list[float]:
        """The difficulty level of every case (graded, shuffled by ``seed``)."""
        levels = np.linspace(self.levels[0], self.levels[1], num_cases)
        return [float(v) for v in levels[np.random.default_rng([seed, 999_983]).permutation(num_cases)]]

    def to_dict(self) -> dict[str, Any]:
        return {k: _lists(v) for k, v in dataclasses.asdict(self).items()}


def corrupt_label(label: np.ndarray, level: float, rng: np.random.Generator, noise: LabelNoise,
                  num_classes: int) -> np.ndarray:  # fmt: skip
    """A copy of ``label`` corrupted at ``level`` (see :class:`LabelNoise`); classes stay within ``1..num_classes``."""
    out = np.zeros_like(label)
    present = [int(c) for c in np.unique(label) if c > 0]
    for c in present:
        direction = _unit_vector(rng)
        shift = np.rint(direction * level * noise.max_shift).astype(int).tolist()
        target = c
        if num_classes > 1 and rng.random() < level * noise.swap:
            target = int(rng.choice([k for k in range(1, num_classes + 1) if k != c]))
        moved = np.flatnonzero(_shifted(label == c, shift) & (out == 0))
        scattered = math.floor(level * noise.scatter * len(moved) + 0.5)
        out.reshape(-1)[moved] = target
        if scattered:
            out.reshape(-1)[rng.choice(moved, size=scattered, replace=False)] = 0
            out.reshape(-1)[rng.integers(0, label.size, size=scattered)] = target
    return out


def _shifted(mask: np.ndarray, shift: Sequence[int]) -> np.ndarray:
    """``mask`` moved by ``shift`` voxels per axis, zero-filled (no wrap-around)."""
    out = np.zeros_like(mask)
    src, dst = [], []
    for s, n in zip(shift, mask.shape, strict=True):
        s = max(-n, min(n, s))
        src.append(slice(max(0, -s), n - max(0, s)))
        dst.append(slice(max(0, s), n - max(0, -s)))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def annotate_blurred(label: np.ndarray, sigma: float, iso_level: float, num_classes: int) -> np.ndarray:
    """An annotator's outline of ``label`` on an image blurred by ``sigma`` voxels: each class where its blurred
    mask reaches ``iso_level`` (where two classes do, the one whose blurred mask is larger)."""
    if sigma <= 0:
        return label.copy()
    out = np.zeros_like(label)
    best = np.full(label.shape, iso_level, dtype=np.float64)
    for c in range(1, num_classes + 1):
        if not (label == c).any():
            continue
        soft = gaussian_blur(label == c, sigma)
        take = (soft >= best) & ((out == 0) | (soft > best))
        out[take] = c
        best[take] = soft[take]
    return out


def make_label_sets(config: SynthConfig, noise: LabelNoise, index: int, level: float) -> list[np.ndarray]:
    """The ``noise.count`` label sets of case ``index``: each annotator's outline of the case's image (see
    :class:`LabelNoise` ``iso_spread``), corrupted at ``level`` times the set's factor."""
    label = make_label(config, index)
    sigma = case_blur(config, index) if noise.iso_spread else 0.0
    rngs = [np.random.default_rng([config.seed, index, 1000 + k]) for k in range(noise.count)]
    sets = []
    for f, t, rng in zip(noise.factors, noise.iso_levels, rngs, strict=True):
        outline = annotate_blurred(label, sigma, t, config.num_classes) if sigma > 0 else label
        sets.append(corrupt_label(outline, level * f, rng, noise, config.num_classes))
    return sets


# -- statistics ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClassStatistics:
    """Class balance of a set of label volumes; every share is a mean over cases, in [0, 1].

    ``voxel_share[c]`` is label ``c``'s share of a case's voxels (index 0 = background);
    ``case_share[c - 1]`` is the share of cases that contain foreground class ``c``;
    ``present_classes`` is the mean share of the foreground classes present in a case.
    """

    num_cases: int
    num_classes: int
    voxel_share: tuple[float, ...]
    case_share: tuple[float, ...]
    present_classes: float

    @property
    def foreground_share(self) -> float:
        """Mean share of foreground voxels per case."""
        return float(sum(self.voxel_share[1:]))

    @property
    def smallest_class_share(self) -> float:
        """Voxel share of the rarest foreground class (the article's class-imbalance measure)."""
        return float(min(self.voxel_share[1:]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_cases": self.num_cases,
            "num_classes": self.num_classes,
            "foreground_share": self.foreground_share,
            "voxel_share": list(self.voxel_share),
            "case_share": list(self.case_share),
            "present_classes": self.present_classes,
        }


def class_statistics(labels: np.ndarray | Iterable[np.ndarray], num_classes: int) -> ClassStatistics:
    """Per-class voxel share and presence over label volumes with values ``0..num_classes``.

    ``labels`` is one volume (3D), a stack of volumes (4D) or any iterable of volumes (shapes may
    differ). Raises ``ValueError`` on an empty set or on label values outside ``0..num_classes``.
    """
    _check_int("num_classes", num_classes, 1)
    volumes = [labels] if isinstance(labels, np.ndarray) and labels.ndim == AXES else labels
    counts = []
    for i, volume in enumerate(volumes):
        volume = np.asarray(volume)
        if volume.ndim != AXES or volume.size == 0:
            raise ValueError(f"label volume {i} must be a non-empty 3D array, got shape {volume.shape}")
        if not np.issubdtype(volume.dtype, np.integer):
            raise ValueError(f"label volume {i} must hold integers, got dtype {volume.dtype}")
        lo, hi = int(volume.min()), int(volume.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(f"label volume {i} has values {lo}..{hi}, outside 0..{num_classes}")
        counts.append(np.bincount(volume.ravel(), minlength=num_classes + 1))
    if not counts:
        raise ValueError("class_statistics needs at least one label volume")
    return _statistics_from_counts(counts)


def _statistics_from_counts(counts: Sequence[np.ndarray]) -> ClassStatistics:
    """Statistics from per-case voxel counts of labels ``0..K``."""
    shares = np.array([c / c.sum() for c in counts])
    present = shares[:, 1:] > 0
    return ClassStatistics(
        num_cases=len(counts),
        num_classes=shares.shape[1] - 1,
        voxel_share=tuple(float(v) for v in shares.mean(axis=0)),
        case_share=tuple(float(v) for v in present.mean(axis=0)),
        present_classes=float(present.mean()),
    )


# -- nnU-Net raw format --------------------------------------------------------------------


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_Name`` after checking the id (1..999) and the name (letters, digits, ``_``, ``-``)."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, (int, np.integer)) or not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be an integer in 1..999, got {dataset_id!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name or ""):
        raise ValueError(
            f"dataset name must be letters, digits, '_' or '-' (starting with a letter/digit), got {name!r}"
        )
    return f"Dataset{int(dataset_id):03d}_{name}"


def case_identifiers(num_cases: int) -> list[str]:
    """``case_000``, ``case_001``, ... (wider numbers from 1000 cases on)."""
    width = max(3, len(str(num_cases - 1)))
    return [f"case_{i:0{width}d}" for i in range(num_cases)]


def dataset_json(config: SynthConfig, name: str, statistics: ClassStatistics | None = None) -> dict[str, Any]:
    """nnU-Net v2's ``dataset.json``; the knobs (and measured class balance) go under ``pgps_synth``."""
    provenance: dict[str, Any] = {"config": config.to_dict()}
    if statistics is not None:
        provenance["statistics"] = statistics.to_dict()
    return {
        "name": name,
        "description": "synthetic 3D segmentation dataset generated by pgps.data.synth",
        "channel_names": {"0": "zscore"},
        "labels": config.labels,
        "numTraining": config.num_cases,
        "file_ending": FILE_ENDING,
        "pgps_synth": provenance,
    }


def configure(name: str, foreground_share: float | None = None, **overrides: Any) -> SynthConfig:
    """Preset ``name`` with ``overrides`` (``None`` values are ignored, as a command line's unset options): another
    ``num_classes`` drops the preset's class names; ``foreground_share`` then rescales the objects
    (:func:`with_foreground_share`)."""
    base = preset(name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("num_classes", base.num_classes) != base.num_classes:
        overrides["class_names"] = None
    config = preset(name, **overrides)
    return config if foreground_share is None else with_foreground_share(config, foreground_share)


def label_noise(
    count: int | None = None,
    levels: Sequence[float] | None = None,
    factors: Sequence[float] | None = None,
    iso_spread: float | None = None,
) -> LabelNoise | None:
    """The noisy label sets asked for (``None`` when none of the four is given): ``count`` sets (default: as many
    as ``factors``, else 3) corrupted between ``levels`` (default 0 to 1) times ``factors`` per set, outlined at
    iso-levels ``0.5 +- iso_spread`` of the case's blur (default 0)."""
    if count is None and not levels and not factors and iso_spread is None:
        return None
    return LabelNoise(
        count=count if count is not None else len(factors or ()) or 3,
        levels=tuple(levels or (0.0, 1.0)),
        factors=tuple(factors) if factors else None,
        iso_spread=iso_spread or 0.0,
    )


def describe(
    preset_name: str,
    config: SynthConfig,
    statistics: Mapping[str, Any],
    noise: LabelNoise | None = None,
    test_cases: int = 0,
) -> list[str]:
    """The summary lines of a dataset written from preset ``preset_name``: shape, spacing, seed, classes, foreground
    shares, label sets."""
    lo = [s - j for s, j in zip(config.shape, config.shape_jitter, strict=True)]
    hi = [s + j for s, j in zip(config.shape, config.shape_jitter, strict=True)]
    shape = "x".join(map(str, config.shape))
    if any(config.shape_jitter):
        shape += f" (cases {'x'.join(map(str, lo))} to {'x'.join(map(str, hi))})"
    spacing = "x".join(f"{v:g}" for v in config.spacing)
    classes = f"{config.num_classes} foreground class{'es' if config.num_classes != 1 else ''}"
    lines = [
        f"preset {preset_name}: {config.num_cases} cases, shape {shape}, spacing {spacing}, seed {config.seed}, "
        + classes
        + (f" by band along axis {config.orientation_axis}" if config.orientation else ""),
        f"foreground share {statistics['foreground_share']:.3%} per case; "
        f"share of foreground classes present per case {statistics['present_classes']:.0%}",
    ]
    width = max(len(n) for n in config.labels)
    lines.append(f"label  {'name'.ljust(width)}  voxel share  cases with it")
    for label_name, c in config.labels.items():
        cases = "" if c == 0 else f"{round(statistics['case_share'][c - 1] * config.num_cases)}/{config.num_cases}"
        lines.append(f"{c:>5}  {label_name.ljust(width)}  {statistics['voxel_share'][c]:>11.3%}  {cases:>13}")
    if config.difficulty != (0.0, 0.0):
        lines.append(
            f"image difficulty per case uniform in {config.difficulty[0]:g}..{config.difficulty[1]:g}: contrast x "
            f"{config.hard_contrast:g} and blur sd {config.hard_blur:g} voxels at difficulty 1"
        )
    if noise:
        factors = ", ".join(f"{f:g}" for f in noise.factors)
        lines.append(
            f"{noise.count} noisy label sets per case in labelSets/set_1..set_{noise.count}: case levels "
            f"{noise.levels[0]:g}..{noise.levels[1]:g}, set factors {factors}"
            + (f", outlines at iso-levels 0.5 +- {noise.iso_spread:g} of the blur" if noise.iso_spread else "")
        )
    if test_cases:
        lines.append(f"{test_cases} test cases in imagesTs/labelsTs")
    return lines


def generate_dataset(
    config: SynthConfig,
    out_dir: str | os.PathLike[str],
    dataset_id: int,
    name: str,
    *,
    overwrite: bool = False,
    progress: bool | None = False,
    label_noise: LabelNoise | None = None,
    test_cases: int = 0,
) -> Path:
    """Write ``out_dir/DatasetXXX_Name/{imagesTr,labelsTr,dataset.json}`` and return that folder.

    Images are ``case_XXX_0000.nii.gz`` (float32), labels ``case_XXX.nii.gz`` (uint8), both with
    ``config.spacing``, identity direction and zero origin. The dataset is written to a hidden
    sibling folder and renamed into place, so a half-written dataset never looks complete. Raises
    ``ValueError`` when the target holds files and ``overwrite`` is off, or when ``out_dir`` holds
    another dataset with the same id. ``progress`` shows a tqdm bar on stderr (``None``: only when
    stderr is a terminal). The knobs and the measured :class:`ClassStatistics` are kept in
    ``dataset.json`` under ``pgps_synth``.

    With ``label_noise``, ``labelSets/set_<k>/case_XXX.nii.gz`` (k = 1..count) hold the noisy label
    sets of every training case (:class:`LabelNoise`) and ``pgps_synth.label_noise`` records the
    knobs and each case's level; ``labelsTr`` stays clean (the ground truth). ``test_cases`` more
    cases (indices after the training ones) go to ``imagesTs``/``labelsTs`` with clean labels. With an
    image difficulty range, ``pgps_synth.case_difficulty`` gives every case's (training and test).
    """
    _check_int("test_cases", test_cases, 0)
    folder_name = dataset_folder_name(dataset_id, name)
    out_dir = Path(out_dir)
    target = out_dir / folder_name
    if out_dir.is_dir():
        clashes = sorted(p.name for p in out_dir.glob(f"Dataset{int(dataset_id):03d}_*") if p.name != folder_name)
        if clashes:
            raise ValueError(f"{out_dir} already holds {', '.join(clashes)} with dataset id {int(dataset_id):03d}")
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ValueError(f"{target} exists and is not empty (pass overwrite=True / --overwrite to replace it)")

    import SimpleITK as sitk

    with atomic_directory(target) as partial:
        (partial / "imagesTr").mkdir()
        (partial / "labelsTr").mkdir()
        counts = []
        identifiers = case_identifiers(config.num_cases + test_cases)
        levels = label_noise.case_levels(config.num_cases, config.seed) if label_noise else []
        total = config.num_cases + test_cases
        for index in progress_of(range(total), folder_name, enabled=progress, unit="case"):
            image, label = make_case(config, index)
            split = "Tr" if index < config.num_cases else "Ts"
            if split == "Ts" and index == config.num_cases:
                (partial / "imagesTs").mkdir()
                (partial / "labelsTs").mkdir()
            _write(sitk, image, config.spacing, partial / f"images{split}" / f"{identifiers[index]}_0000{FILE_ENDING}")
            _write(sitk, label, config.spacing, partial / f"labels{split}" / f"{identifiers[index]}{FILE_ENDING}")
            if split == "Ts":
                continue
            counts.append(np.bincount(label.ravel(), minlength=config.num_classes + 1))
            if label_noise:
                for k, noisy in enumerate(make_label_sets(config, label_noise, index, levels[index]), start=1):
                    folder = partial / "labelSets" / f"set_{k}"
                    folder.mkdir(parents=True, exist_ok=True)
                    _write(sitk, noisy, config.spacing, folder / f"{identifiers[index]}{FILE_ENDING}")
        meta = dataset_json(config, name, _statistics_from_counts(counts))
        if label_noise:
            meta["pgps_synth"]["label_noise"] = {
                **label_noise.to_dict(),
                "case_levels": dict(zip(identifiers, levels, strict=False)),
            }
        if test_cases:
            meta["pgps_synth"]["test_cases"] = test_cases
        if config.difficulty != (0.0, 0.0):
            meta["pgps_synth"]["case_difficulty"] = {c: case_difficulty(config, i) for i, c in enumerate(identifiers)}
        with open(partial / "dataset.json", "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
    return target


def _write(sitk: Any, array: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing)])  # SimpleITK orders axes x, y, z
    sitk.WriteImage(image, str(path), useCompression=True)
