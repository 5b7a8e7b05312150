"""A curriculum batch sampler and a patch dataset for ``torch.utils.data.DataLoader``.

:class:`CurriculumBatchSampler` runs in the training process. For every step it asks the core's
:class:`~pgps.sampling.BatchPlanner` for the global batch (the stage of the step, a case and a
forced-foreground flag per sample), keeps this process's rows (``rank`` of ``world_size``,
nnU-Net's contiguous DDP split) and yields one :class:`~pgps.sampling.VolumeRequest` per volume.
:class:`PatchDataset` (in the loader's workers) turns a request into patches: it loads the case,
draws the crop corners from the request's own generator, crops with zero padding outside the
volume and, in Progressive Resolution, resizes the crop to the patch size. :func:`collate_patches`
puts a step's patches back into the order of the global batch.

Every draw depends on ``(seed, step)`` only, so the batches are the same with any number of
workers, a resumed run continues with the batches of an uninterrupted one, and the ranks' slices
of a step together are exactly the single-process batch. The sampler and each of its iterations
keep their state the way torchdata's ``StatefulDataLoader`` reads it (``state_dict``/``load_state_dict``),
so the loader's own state, taken after any batch, resumes at the next one with any number of workers.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.functional import interpolate
from torch.utils.data import Dataset, Sampler

from pgps.sampling import BatchPlanner, VolumeRequest, class_locations, rank_rows
from pgps.schedule import Schedule

CACHE_BYTES = 256 * 2**20
"""Default budget, per process, of the cache of foreground voxel locations (computed once per case)."""


class CurriculumBatchSampler(Sampler[list[VolumeRequest]]):
    """The batches of a :class:`~pgps.Schedule`, one list of volume requests per training step.

    Give it to a ``DataLoader`` as ``batch_sampler`` with a :class:`PatchDataset` (or
    :class:`pgps.monai.CurriculumDataset`). Iterating yields the remaining steps of the current epoch
    (``len()`` of them); the next iteration continues with the next epoch, until :attr:`finished`.

    ``strategy`` is one of :data:`pgps.sampling.STRATEGIES`; ``foreground_share`` the share of
    forced-foreground patches per batch (PGPS-Performance: 0.5); ``seed`` fixes every draw. With
    ``rank`` and ``world_size`` (e.g. from ``torch.distributed``) each process gets its contiguous slice
    of every global batch (the first ``b % world_size`` ranks one patch more, as in nnU-Net's DDP).

    Resume: with torchdata's ``StatefulDataLoader`` save ``loader.state_dict()`` and give it to the new
    loader's ``load_state_dict`` (it holds this sampler's state as of the last batch the loop received, with
    any number of workers); with a plain ``DataLoader`` see :meth:`state_dict`.
    """

    def __init__(
        self,
        schedule: Schedule,
        num_cases: int,
        strategy: str = "split_crop",
        foreground_share: float = 0.5,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.planner = BatchPlanner(schedule, num_cases, strategy, foreground_share, seed)
        for i, stage in enumerate(schedule.stages):
            try:
                rank_rows(stage.batch_size, rank, world_size)
            except ValueError as exc:
                raise ValueError(f"stage {i} (patch {stage.patch_size}, batch {stage.batch_size}): {exc}") from None
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.step = 0

    @property
    def schedule(self) -> Schedule:
        return self.planner.schedule

    @property
    def epoch(self) -> int:
        """The epoch of the next step."""
        return self.step // self.schedule.iterations_per_epoch

    @property
    def finished(self) -> bool:
        return self.step >= self.planner.total_steps

    def _epoch_end(self) -> int:
        return min((self.epoch + 1) * self.schedule.iterations_per_epoch, self.planner.total_steps)

    def __len__(self) -> int:
        return max(0, self._epoch_end() - self.step)

    def __iter__(self) -> EpochIterator:
        return EpochIterator(self)

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at ``epoch`` (``DistributedSampler``'s habit); a no-op while the sampler is
        inside that epoch, e.g. right after ``load_state_dict`` restored a step in its middle."""
        ipe = self.schedule.iterations_per_epoch
        if not 0 <= epoch <= self.schedule.epochs:
            raise ValueError(f"epoch {epoch} is outside the schedule's {self.schedule.epochs} epochs")
        if self.step // ipe != epoch:
            self.step = epoch * ipe

    def requests(self, step: int) -> list[VolumeRequest]:
        """This rank's volume requests of ``step``."""
        plan = self.planner.plan(step)
        return plan.requests(rank_rows(plan.batch_size, self.rank, self.world_size))

    def state_dict(self, after: Mapping[str, Any] | None = None, *, next_step: int | None = None) -> dict[str, Any]:
        """A small JSON-serialisable dict: the planner's settings and the next step.

        The sampler's own position is the loop's with ``num_workers=0``, and what a ``StatefulDataLoader``
        saves (it asks at the right moment). A plain ``DataLoader`` with workers asks for up to
        ``prefetch_factor * num_workers`` batches ahead of the loop: then pass ``after=batch``, the last batch
        the loop trained on (a ``pgps.torch`` or ``pgps.monai`` batch: its ``pgps_step``).
        """
        if next_step is not None:
            warnings.warn(
                "state_dict(next_step=...) is deprecated: use StatefulDataLoader's loader.state_dict(), or "
                "sampler.state_dict(after=batch) with the last batch the loop trained on",
                DeprecationWarning,
                stacklevel=2,
            )
        elif after is not None:
            next_step = batch_step(after) + 1
        return {**self.planner.state(), "step": self.step if next_step is None else int(next_step)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``state["step"]``; refuses a state saved for another schedule, strategy, seed or dataset size.

        The world size may differ from the saved run's: the plan is global, each rank slices it.
        """
        self.planner.check_state(state)
        step = int(state["step"])
        if not 0 <= step <= self.planner.total_steps:
            raise ValueError(f"step {step} is outside the schedule's {self.planner.total_steps} steps")
        self.step = step


class EpochIterator(Iterator[list[VolumeRequest]]):
    """One iteration of a :class:`CurriculumBatchSampler`: the requests of the steps left in the epoch of the
    sampler's step at the first ``next()``. Its state (where that epoch ends) lets ``StatefulDataLoader`` restore
    an iteration that had ended without starting the next epoch early."""

    def __init__(self, sampler: CurriculumBatchSampler) -> None:
        self.sampler = sampler
        self.end: int | None = None

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> list[VolumeRequest]:
        sampler = self.sampler
        if self.end is None:
            if sampler.finished:
                raise RuntimeError(
                    f"the schedule's {sampler.schedule.epochs} epochs ({sampler.planner.total_steps} steps) are "
                    "done: iterate for epoch in range(schedule.epochs) (or stop when sampler.finished)"
                )
            self.end = sampler._epoch_end()
        if sampler.step >= self.end:
            raise StopIteration
        step = sampler.step
        sampler.step += 1  # counted when handed out: with 0 workers, when the loop receives the batch
        return sampler.requests(step)

    def state_dict(self) -> dict[str, int]:
        return {"end": self.sampler._epoch_end() if self.end is None else self.end}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.end = int(state["end"])


def batch_step(batch: Mapping[str, Any]) -> int:
    """The training step of a ``pgps.torch`` batch (``pgps_step``, an int) or a ``pgps.monai`` batch (one per patch)."""
    if "pgps_step" not in batch:
        raise KeyError("not a batch of pgps.torch or pgps.monai: it has no 'pgps_step'")
    steps = set(torch.as_tensor(batch["pgps_step"]).reshape(-1).tolist())
    if len(steps) != 1:
        raise ValueError(f"a batch of several steps {sorted(steps)}")
    return steps.pop()


def load_volume(image, label) -> tuple[Any, Any]:
    """``image`` as ``(C, X, Y, Z)`` and ``label`` as ``(1, X, Y, Z)`` (a channel added to 3D arrays)."""
    image = image[None] if len(image.shape) == 3 else image
    label = label[None] if len(label.shape) == 3 else label
    if len(image.shape) != 4 or len(label.shape) != 4 or label.shape[0] != 1:
        raise ValueError(f"expected an image (C, X, Y, Z) and a label (1, X, Y, Z), got {image.shape}, {label.shape}")
    if tuple(image.shape[1:]) != tuple(label.shape[1:]):
        raise ValueError(f"image {tuple(image.shape[1:])} and label {tuple(label.shape[1:])} differ in size")
    return image, label


def crop_patches(volume, corners: np.ndarray, size: Sequence[int], pad_value: float = 0, dtype=None) -> torch.Tensor:
    """Patches ``(n, C, *size)`` of ``volume`` ``(C, X, Y, Z)`` at lower ``corners`` ``(n, 3)``, ``pad_value`` outside.

    ``volume`` may be a tensor, a numpy array or any array that reads a window when sliced (memmap, zarr,
    h5py, blosc2): only the windows are read. ``dtype``: the volume's by default.
    """
    if dtype is None:
        dtype = volume.dtype if isinstance(volume, torch.Tensor) else torch.from_numpy(np.empty(0, volume.dtype)).dtype
    shape, size = tuple(volume.shape[1:]), tuple(int(s) for s in size)
    out = torch.full((len(corners), volume.shape[0], *size), pad_value, dtype=dtype)
    for j, corner in enumerate(np.asarray(corners).tolist()):
        lo = [max(c, 0) for c in corner]
        hi = [min(c + s, n) for c, s, n in zip(corner, size, shape, strict=True)]
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            continue  # entirely outside the volume: padding only
        window = volume[(slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))]
        target = (j, slice(None), *(slice(a - c, b - c) for a, b, c in zip(lo, hi, corner, strict=True)))
        out[target] = window if isinstance(window, torch.Tensor) else torch.as_tensor(np.asarray(window))
    return out


def resize_patches(image: torch.Tensor, label: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Progressive Resolution: crops ``(n, C, *crop)`` resized to ``size``, images trilinear, labels nearest."""
    return resize(image, size), resize(label, size, nearest=True)


def resize(patches: torch.Tensor, size: Sequence[int], nearest: bool = False) -> torch.Tensor:
    """Patches ``(n, C, *crop)`` resized to ``size``: trilinear (float), or nearest neighbour keeping the dtype."""
    size = tuple(int(s) for s in size)
    if tuple(patches.shape[2:]) == size:
        return patches
    if nearest:
        return interpolate(patches.float(), size, mode="nearest-exact").to(patches.dtype)
    return interpolate(patches.float(), size, mode="trilinear", align_corners=False)


class LocationCache:
    """Voxel locations of every foreground class per case, found once and kept while they fit in ``cache_bytes``
    (least recently used out first); one per process."""

    def __init__(self, cache_bytes: int = CACHE_BYTES) -> None:
        self.cache_bytes = int(cache_bytes)
        self._cases: OrderedDict[int, dict] = OrderedDict()
        self._bytes = 0

    def get(self, case: int, label) -> dict:
        """Locations of case ``case`` whose label volume is ``label`` ``(1, X, Y, Z)``."""
        hit = self._cases.get(case)
        if hit is not None:
            self._cases.move_to_end(case)
            return hit
        found = class_locations(np.asarray(label[0]))
        size = sum(v.nbytes for v in found.values())
        if size <= self.cache_bytes:
            self._cases[case] = found
            self._bytes += size
            while self._bytes > self.cache_bytes:
                _, old = self._cases.popitem(last=False)
                self._bytes -= sum(v.nbytes for v in old.values())
        return found


class PatchDataset(Dataset):
    """A dataset of volumes that answers :class:`~pgps.sampling.VolumeRequest` with patches.

    Either ``images`` and ``labels`` (sequences of arrays or tensors; images ``(X, Y, Z)`` or
    ``(C, X, Y, Z)``, integer labels ``(X, Y, Z)`` or ``(1, X, Y, Z)`` with 0 = background), or
    ``load(i) -> (image, label)`` and ``num_cases`` to load case ``i`` lazily in the worker that needs it.
    A forced-foreground patch is centred on a voxel of a class drawn uniformly among the classes
    present; the voxels of each class are found once per case and kept (at most ``cache_bytes`` per
    process, least recently used first out).

    ``transform`` (optional) runs on each patch: it gets a dict with ``image`` ``(C, *P)``, ``label``
    ``(1, *P)`` and the patch's ``pgps_*`` fields, and returns a dict with ``image`` and ``label`` (e.g. a
    ``torchvision.transforms.v2`` pipeline or a function). Before each patch torch's default generator is
    seeded from ``(seed, step, volume, row)`` (and a transform with ``set_random_state``, e.g. MONAI's, is
    seeded too), so the augmentation of every patch is the same with any number of workers or ranks and
    after a resume; the worker's own generator state is left as it was.

    ``dataset[request]`` is a dict: ``image`` float32 ``(n, C, *P)``, ``label`` int64 ``(n, 1, *P)``, and
    per patch its global batch ``pgps_row``, ``pgps_case``, ``pgps_forced`` and ``pgps_fg_fallback`` (a
    forced patch of a volume without foreground, cropped at random instead), with the ``pgps_step`` and
    ``pgps_stage`` index: the names of :mod:`pgps.monai`'s and the nnU-Net loader's batches.
    """

    def __init__(
        self,
        images: Sequence | None = None,
        labels: Sequence | None = None,
        *,
        load: Callable[[int], tuple[Any, Any]] | None = None,
        num_cases: int | None = None,
        transform: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        if load is None:
            if images is None or labels is None or len(images) != len(labels):
                raise ValueError("give images and labels of the same length, or load= and num_cases=")
            self.images, self.labels, self.num_cases = images, labels, len(images)
        else:
            if images is not None or labels is not None or num_cases is None:
                raise ValueError("with load= give num_cases= (and no images/labels)")
            self.num_cases = int(num_cases)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable (a dict of one patch in, a dict out), got {transform!r}")
        self.load = load
        self.transform = transform
        self.locations = LocationCache(cache_bytes)

    def __len__(self) -> int:
        return self.num_cases

    def case(self, index: int) -> tuple[Any, Any]:
        """Case ``index`` as ``(image (C, X, Y, Z), label (1, X, Y, Z))``."""
        image, label = self.load(index) if self.load is not None else (self.images[index], self.labels[index])
        try:
            return load_volume(image, label)
        except ValueError as exc:
            raise ValueError(f"case {index}: {exc}") from None

    def __getitem__(self, request: VolumeRequest) -> dict[str, Any]:
        if not isinstance(request, VolumeRequest):
            raise TypeError(
                f"PatchDataset is indexed by the requests of a CurriculumBatchSampler, got {type(request).__name__}; "
                f"use {COLLATE_FIX}"
            )
        image, label = self.case(request.case)
        foreground = self.locations.get(request.case, label) if any(request.forced) else {}
        corners, fell_back = request.corners(image.shape[1:], foreground)
        patches = crop_patches(image, corners, request.crop_size, 0, torch.float32)
        targets = crop_patches(label, corners, request.crop_size, 0, torch.int64)
        patches, targets = resize_patches(patches, targets, request.patch_size)
        take = list(request.take)
        part = PatchPart({
            "image": patches,
            "label": targets,
            "pgps_row": torch.as_tensor(request.taken_rows),
            "pgps_case": torch.full((len(take),), request.case, dtype=torch.int64),
            "pgps_forced": torch.as_tensor(np.asarray(request.forced)[take]),
            "pgps_fg_fallback": torch.as_tensor(fell_back),
            "pgps_step": request.step,
            "pgps_stage": request.stage_index,
        })  # fmt: skip
        if self.transform is not None:
            self._augment(request, part)
        return part

    def _augment(self, request: VolumeRequest, part: dict[str, Any]) -> None:
        """Run the transform on each patch of ``part``, seeded per patch; the results replace image and label."""
        images, labels = [], []
        for j, row in enumerate(part["pgps_row"].tolist()):
            sample = {k: v[j] if isinstance(v, torch.Tensor) else v for k, v in part.items()}
            seed = request.augmentation_seed(row)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                if hasattr(self.transform, "set_random_state"):
                    self.transform.set_random_state(seed=seed)
                out = self.transform(sample)
            if not isinstance(out, Mapping) or "image" not in out or "label" not in out:
                got = type(out).__name__
                raise TypeError(f"PatchDataset's transform must return a dict with 'image' and 'label', got {got}")
            images.append(torch.as_tensor(out["image"]))
            labels.append(torch.as_tensor(out["label"]))
        try:
            part["image"], part["label"] = torch.stack(images), torch.stack(labels)
        except RuntimeError as exc:
            raise ValueError(f"the transform gave patches of different shapes at step {request.step}: {exc}") from None


COLLATE_FIX = "DataLoader(dataset, batch_sampler=sampler, collate_fn=pgps.torch.collate_patches)"
PER_PATCH = ("image", "label", "pgps_case", "pgps_forced", "pgps_fg_fallback")
RENAMED = {"row": "pgps_row", "case": "pgps_case", "forced": "pgps_forced", "fg_fallback": "pgps_fg_fallback",
           "step": "pgps_step", "stage": "pgps_stage"}  # fmt: skip
"""The names of a ``pgps.torch`` batch's fields before they became those of ``pgps.monai`` and the nnU-Net loader."""


class PatchPart(dict):
    """One volume's patches of a step, as :class:`PatchDataset` returns them: a dict that torch's default
    collation refuses with the fix (it would stack the parts into a (volumes, patches, C, X, Y, Z) tensor, out of
    the global batch's order); :func:`collate_patches` reads its items."""

    def update(self, *args: Any, **kwargs: Any) -> None:  # what default_collate calls on a mutable mapping
        raise RuntimeError(f"PatchDataset's parts make a batch with collate_patches: {COLLATE_FIX}")


class Batch(dict):
    """A batch of :func:`collate_patches`: a plain dict, which still answers the field names of earlier versions
    (``batch["step"]``, ``batch["row"]``, ...) with a ``DeprecationWarning`` naming the new one."""

    def __missing__(self, key: Any) -> Any:
        new = RENAMED.get(key) if isinstance(key, str) else None
        if new is None or new not in self:
            raise KeyError(key)
        warnings.warn(f'batch["{key}"] is now batch["{new}"] (the name in pgps.monai too)', DeprecationWarning, 2)
        return self[new]


def collate_patches(parts: list[dict[str, Any]]) -> Batch:
    """One step's patches (one part per volume) as one batch, in the order of the global batch's rows."""
    if not parts:
        raise ValueError("a step without patches: every rank needs at least one patch per batch")
    steps = {p["pgps_step"] for p in parts}
    if len(steps) != 1:
        raise ValueError(f"patches of several steps ({sorted(steps)}) in one batch")
    rows = torch.cat([p["pgps_row"] for p in parts])
    order = torch.argsort(rows)
    batch = {k: torch.cat([p[k] for p in parts])[order] for k in PER_PATCH}
    return Batch(**batch, pgps_row=rows[order], pgps_step=parts[0]["pgps_step"], pgps_stage=parts[0]["pgps_stage"])
