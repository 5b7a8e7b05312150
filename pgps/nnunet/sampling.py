"""Batch construction for large small-patch batches (journal Appendix A), as an nnU-Net loader.

Which volume and which kind of patch every sample gets, and where it is cropped, is planned by the
framework-free :mod:`pgps.sampling` (Split-Crop, Single-Crop, Multi-Crop, Single-Volume; forced
foreground by nnU-Net's last-``share`` rule; class-uniform foreground centres), drawn from this
loader's one seeded generator; the plain PyTorch and MONAI adapters call the same functions. A
volume without foreground falls back to a random patch and is counted
(``batch["pgps_fg_fallbacks"]``). Each volume is opened once per batch; nnU-Net's blosc2 arrays
then read only the chunks that a crop touches.

Two ways to augment a batch:

- ``transforms`` (nnU-Net's per-sample pipeline): every patch is cropped at nnU-Net's enlarged
  ``initial_patch_size`` and transformed on its own, as ``nnUNetDataLoader`` does.
- ``augmentation`` (an :class:`~pgps.nnunet.batched.AugmentationSpec`): the batched path. All
  crop corners of a volume are drawn in one go; each volume is read once, as the bounding box of
  its patches when they cover it densely (else patch by patch); small patches are gathered with
  one index operation; only the samples the spatial transform rotates or scales get the enlarged
  crop; and :func:`~pgps.nnunet.batched.augment` transforms the whole batch at once. Small
  volumes (at most 1/8 of ``cache_bytes``, 256 MiB per loader process by default) stay cached
  decompressed, which makes Single-Crop's many volumes per batch cheap. With
  ``defer_augmentation`` the loader returns the cropped :class:`~pgps.nnunet.batched.RawBatch`
  (``batch["pgps_raw"]``) and :func:`finish_batch` augments it where training runs (the GPU).

Worker processes (nnU-Net's ``NonDetMultiThreadedAugmenter``) each get their own generator,
derived from the seed and the worker's id, so that workers never produce the same batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from threadpoolctl import ThreadpoolController, threadpool_limits

from pgps import sampling as plans
from pgps.nnunet.batched import AugmentationSpec, RawBatch, augment, centre_offset, sample_parameters
from pgps.sampling import check_strategy, forced_foreground

DENSE_READ = 4.0
"""Read a volume's patches as one bounding box when it holds at most this many times their voxels."""
CACHE_BYTES = 256 * 2**20
"""Default budget of the batched loader's cache of small decompressed volumes, per loader process."""
PADDED_REGION = 2**21
"""Boxes of at most this many voxels are read padded (every patch then lies inside); larger ones clipped
to the volume, so that a large volume is neither filled nor copied a second time."""
SMALL_PATCH = 16**3
"""Patches of at most this many voxels are gathered at once from a strided view of all windows
(``unfold``), larger ones copied one by one; per voxel on this project's 2-core CPU: 1.6 vs 9 ns at
8^3, 1.1 vs 2.6 at 12^3, 0.8 vs 1.1 at 16^3, 0.6 vs 0.4 at 24^3."""

_THREADPOOLS: list[ThreadpoolController] = []


def _one_thread():
    """Limit BLAS/OpenMP pools to one thread, as nnU-Net's loader does, without rescanning the libraries
    at every batch (``threadpool_limits`` does: ~1 ms)."""
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=1, user_api=None)


class PGPSDataLoader(nnUNetDataLoader):
    """``nnUNetDataLoader`` with the PGPS batch strategies and a seeded, checkpointable generator.

    ``patch_size`` is the (enlarged) crop before the spatial transform and ``final_patch_size``
    the network input, exactly as in ``nnUNetDataLoader``. Give either ``transforms`` (nnU-Net's
    per-sample pipeline) or ``augmentation`` (the batched path; see the module docstring).
    """

    def __init__(
        self,
        data,
        batch_size: int,
        patch_size: Sequence[int],
        final_patch_size: Sequence[int],
        label_manager,
        *,
        strategy: str = "split_crop",
        foreground_share: float = 0.5,
        seed: int | Sequence[int] = 0,
        transforms=None,
        augmentation: AugmentationSpec | None = None,
        defer_augmentation: bool = False,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        check_strategy(strategy, batch_size, len(data.identifiers))
        if not 0 <= foreground_share <= 1:
            raise ValueError(f"foreground_share must be in [0, 1], got {foreground_share}")
        if transforms is not None and augmentation is not None:
            raise ValueError("give either per-sample transforms or a batched augmentation spec, not both")
        if augmentation is not None and tuple(augmentation.patch_size) != tuple(final_patch_size):
            raise ValueError(
                f"the augmentation is for patch {augmentation.patch_size}, the loader's final patch is "
                f"{tuple(final_patch_size)}"
            )
        super().__init__(
            data,
            batch_size,
            patch_size,
            final_patch_size,
            label_manager,
            oversample_foreground_percent=foreground_share,
            transforms=transforms,
        )
        self.strategy = strategy
        self.seed = list(seed) if isinstance(seed, Sequence) else [int(seed)]
        self.rng = np.random.default_rng(self.seed)
        self.forced = forced_foreground(batch_size, foreground_share)
        self.augmentation = augmentation
        self.defer_augmentation = defer_augmentation
        self.last_parameters = None  # augmentation parameters of the last batched batch (benchmarks, debugging)
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self._cached_bytes = 0

    def set_thread_id(self, thread_id: int) -> None:
        """Called in each worker process: give the worker a generator of its own."""
        super().set_thread_id(thread_id)
        self.rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(int(thread_id),)))

    # -- which volume and which kind of patch for every sample (pgps.sampling) ----------------------
    def plan_batch(self) -> list[tuple[str, bool]]:
        """``(case identifier, forced foreground)`` for every sample of the next batch."""
        cases = plans.plan_cases(self.rng, self.strategy, len(self.indices), self.forced)
        return [(self.indices[i], bool(f)) for i, f in zip(cases.tolist(), self.forced, strict=True)]

    # -- where to crop (pgps.sampling) ---------------------------------------------------------------
    def _bounds(self, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        return plans.crop_bounds(shape, self.patch_size, self.need_to_pad)

    def _locations(self, class_locations: dict | None) -> tuple[list, np.ndarray | None]:
        """nnU-Net's ``class_locations`` (rows ``(channel, x, y, z)``) as the core's foreground and annotated voxels."""
        locations = class_locations or {}
        voxels = {k: np.asarray(v)[:, 1:] if len(v) else () for k, v in locations.items()}
        foreground = [v for k, v in voxels.items() if k != self.annotated_classes_key]
        return foreground, voxels.get(self.annotated_classes_key, ()) if self.has_ignore else None

    def crop_box(self, shape: Sequence[int], force_fg: bool, class_locations: dict | None) -> tuple[list, bool]:
        """Lower corner of the crop (``self.patch_size``) and whether a foreground patch fell back to random."""
        corner, fell_back = plans.crop_box(
            self.rng, self._bounds(shape), self.patch_size, force_fg, *self._locations(class_locations)
        )
        return corner.tolist(), fell_back

    def crop_corners(
        self, shape: Sequence[int], force_fg: np.ndarray, class_locations: dict | None
    ) -> tuple[np.ndarray, int]:
        """:meth:`crop_box` for many patches of one volume at once: corners (n, 3) and the fallback count."""
        return plans.crop_corners(
            self.rng, self._bounds(shape), self.patch_size, force_fg, *self._locations(class_locations)
        )

    # -- the batch -------------------------------------------------------------------------------
    def generate_train_batch(self) -> dict:
        if self.augmentation is not None:
            return self._batched_batch()
        plan = self.plan_batch()
        cases = {key: self._data.load_case(key) for key in dict.fromkeys(k for k, _ in plan)}
        data_all = seg_all = None
        fallbacks = 0
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            for j, (key, force_fg) in enumerate(plan):
                data, seg, seg_prev, properties = cases[key]
                corner, fell_back = self.crop_box(data.shape[1:], force_fg, properties.get("class_locations"))
                fallbacks += fell_back
                bbox = [[c, c + p] for c, p in zip(corner, self.patch_size, strict=True)]
                image = torch.from_numpy(crop_and_pad_nd(data, bbox, 0)).float()
                target = torch.from_numpy(crop_and_pad_nd(seg, bbox, -1, cast_cropped_to=np.int16)).to(torch.int16)
                if seg_prev is not None:
                    prev = crop_and_pad_nd(seg_prev, bbox, -1, cast_cropped_to=np.int16)
                    target = torch.cat((target, torch.from_numpy(prev).to(torch.int16)[None]), dim=0)
                if self.transforms is not None:
                    out = self.transforms(image=image, segmentation=target)
                    image, target = out["image"], out["segmentation"]
                if data_all is None:
                    data_all = torch.empty((self.batch_size, *image.shape), dtype=torch.float32)
                    if isinstance(target, list):
                        seg_all = [torch.empty((self.batch_size, *t.shape), dtype=t.dtype) for t in target]
                    else:
                        seg_all = torch.empty((self.batch_size, *target.shape), dtype=target.dtype)
                data_all[j] = image
                if isinstance(target, list):
                    for level, t in enumerate(target):
                        seg_all[level][j] = t
                else:
                    seg_all[j] = target
        return {"data": data_all, "target": seg_all, "keys": [k for k, _ in plan], "pgps_fg_fallbacks": fallbacks}

    def _load_case(self, key: str) -> tuple:
        """``load_case`` with an LRU cache of small decompressed volumes (at most ``cache_bytes`` in all).

        A volume is kept when image and labels take at most an eighth of the budget, so large volumes
        (read patch by patch from blosc2) never push the small ones out; 0 switches the cache off.
        """
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        case = self._data.load_case(key)
        data, seg, seg_prev, properties = case
        size = math.prod(data.shape) * data.dtype.itemsize + math.prod(seg.shape) * seg.dtype.itemsize
        if seg_prev is not None or size > self.cache_bytes // 8:
            return case
        case = (np.asarray(data[:]), np.asarray(seg[:]), None, properties)
        self._cache[key] = case
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes:
            _, (d, g, _, _) = self._cache.popitem(last=False)
            self._cached_bytes -= d.nbytes + g.nbytes
        return case

    def _batched_batch(self) -> dict:
        """Crop every patch with vectorised reads and gathers, then augment the batch at once."""
        plan = self.plan_batch()
        keys = [k for k, _ in plan]
        forced = np.array([f for _, f in plan], dtype=bool)
        rows_of: dict[str, list[int]] = {}
        for j, key in enumerate(keys):
            rows_of.setdefault(key, []).append(j)
        rows_of = {key: np.asarray(rows) for key, rows in rows_of.items()}
        cases = {key: self._load_case(key) for key in rows_of}
        first = cases[keys[0]]
        if first[2] is not None:
            raise NotImplementedError("the batched loader does not support cascade training (previous-stage labels)")
        channels, seg_channels = first[0].shape[0], first[1].shape[0]
        spec, b = self.augmentation, self.batch_size
        window, patch = tuple(int(v) for v in self.patch_size), tuple(int(v) for v in self.final_patch_size)
        with torch.no_grad(), _one_thread():
            params = self.last_parameters = sample_parameters(spec, b, channels, self.rng)
            corners = np.empty((b, 3), dtype=np.int64)
            fallbacks = 0
            for key, (data, _, _, properties) in cases.items():
                rows = rows_of[key]
                corners[rows], fell_back = self.crop_corners(
                    data.shape[1:], forced[rows], properties.get("class_locations")
                )
                fallbacks += fell_back
            spatial = params.spatial
            slot = np.cumsum(spatial) - 1  # row of each spatial sample in the enlarged-crop tensors
            image = torch.empty((b, channels, *patch), dtype=torch.float32)
            seg = torch.empty((b, seg_channels, *patch), dtype=torch.int16)
            big_image = torch.empty((int(spatial.sum()), channels, *window), dtype=torch.float32)
            big_seg = torch.empty((int(spatial.sum()), seg_channels, *window), dtype=torch.int16)
            offset = centre_offset(window, patch)
            for key, (data, seg_source, _, _) in cases.items():
                rows = rows_of[key]
                moved, still = rows[spatial[rows]], rows[~spatial[rows]]
                requests = [(corners[still] + offset, patch, image, seg, still), (corners[moved], window, big_image,
                            big_seg, slot[moved])]  # fmt: skip
                read_patches(data, seg_source, [r for r in requests if len(r[4])])
            raw = RawBatch(image=image, seg=seg, big_image=big_image, big_seg=big_seg, params=params, spec=spec)
            batch = {"keys": keys, "pgps_fg_fallbacks": fallbacks}
            if self.defer_augmentation:  # a plain dict, so that the augmenter pins its tensors
                return {**batch, "pgps_raw": {f.name: getattr(raw, f.name) for f in dataclasses.fields(raw)}}
            return {**augment(raw), **batch}


def finish_batch(batch: dict, device: torch.device | str) -> dict:
    """Augment a deferred batch (``batch["pgps_raw"]``) on ``device``; other batches pass through."""
    raw = batch.get("pgps_raw")
    if raw is None:
        return batch
    out = {k: v for k, v in batch.items() if k != "pgps_raw"}
    with torch.no_grad():
        return {**out, **augment(RawBatch(**raw), device)}


def read_patches(data, seg, requests: list[tuple]) -> None:
    """Copy patches of one volume into batch tensors, padding outside the volume as nnU-Net does (0 / -1).

    ``data`` (C, X, Y, Z) and ``seg`` (Cs, X, Y, Z) are arrays or lazily read blosc2 arrays; each
    request is ``(corners (n, 3), size (3,), image_out, seg_out, out_rows (n,))``. The union
    bounding box of all patches is read once when it holds at most :data:`DENSE_READ` times their
    voxels; otherwise (few patches in a large volume, or a single patch) each patch is read on its own.
    """
    lo = np.min([c.min(0) for c, *_ in requests], axis=0)
    hi = np.max([(c + np.asarray(size)).max(0) for c, size, *_ in requests], axis=0)
    box_voxels = int(np.prod(hi - lo))
    patch_voxels = sum(len(c) * int(np.prod(size)) for c, size, *_ in requests)
    if box_voxels > DENSE_READ * patch_voxels or sum(len(c) for c, *_ in requests) == 1:
        for corners, size, image_out, seg_out, out_rows in requests:
            for corner, row in zip(corners.tolist(), out_rows.tolist(), strict=True):
                copy_window(data, corner, size, image_out[row], 0)
                copy_window(seg, corner, size, seg_out[row], -1)
        return
    if box_voxels <= PADDED_REGION:  # small: one padded box, every patch inside it
        start, stop = lo, hi
        regions = [torch.empty((data.shape[0], *(hi - lo).tolist()), dtype=torch.float32),
                   torch.empty((seg.shape[0], *(hi - lo).tolist()), dtype=torch.int16)]  # fmt: skip
        copy_window(data, lo.tolist(), (hi - lo).tolist(), regions[0], 0)
        copy_window(seg, lo.tolist(), (hi - lo).tolist(), regions[1], -1)
    else:  # one read of the box clipped to the volume; patches reaching past it are padded one by one
        shape = np.asarray(data.shape[1:])
        start, stop = np.maximum(lo, 0), np.minimum(hi, shape)
        box = tuple(slice(a, b) for a, b in zip(start.tolist(), stop.tolist(), strict=True))
        arrays = (np.asarray(data[(slice(None), *box)], dtype=np.float32),
                  np.asarray(seg[(slice(None), *box)]).astype(np.int16, copy=False))  # fmt: skip
        regions = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    for corners, size, image_out, seg_out, out_rows in requests:
        local = corners - start
        inside = ((local >= 0) & (local + np.asarray(size) <= stop - start)).all(1)
        for j in np.flatnonzero(~inside).tolist():  # patches that reach past the region: padded one by one
            copy_window(regions[0], local[j].tolist(), size, image_out[out_rows[j]], 0)
            copy_window(regions[1], local[j].tolist(), size, seg_out[out_rows[j]], -1)
        local, rows = local[inside], out_rows[inside]
        if not len(rows):
            continue
        if int(np.prod(size)) <= SMALL_PATCH:  # many small patches: one gather from the view of all windows
            at = torch.from_numpy(np.ascontiguousarray(local.T))
            index = torch.from_numpy(rows)
            for source, out in zip(regions, (image_out, seg_out), strict=True):
                windows = source.unfold(1, size[0], 1).unfold(2, size[1], 1).unfold(3, size[2], 1)
                out.index_copy_(0, index, windows[:, at[0], at[1], at[2]].transpose(0, 1))
            continue
        for (x, y, z), row in zip(local.tolist(), rows.tolist(), strict=True):
            window = (slice(None), slice(x, x + size[0]), slice(y, y + size[1]), slice(z, z + size[2]))
            image_out[row] = regions[0][window]
            seg_out[row] = regions[1][window]


def copy_window(source, corner: Sequence[int], size: Sequence[int], out: torch.Tensor, pad_value: int) -> None:
    """``out`` (C, *size) = the window of ``source`` (C, X, Y, Z) at ``corner``, ``pad_value`` outside it.

    The same crop as ``acvl_utils``' ``crop_and_pad_nd`` (nnU-Net's loader) without its intermediate
    padded copy; ``source`` may be a tensor, a numpy or a blosc2 array (only the window is read).
    """
    shape = source.shape[1:]
    src, dst = [slice(None)], [slice(None)]
    for axis, (c, s, n) in enumerate(zip(corner, size, shape, strict=True)):
        a, b = max(c, 0), min(c + s, n)
        if b <= a:
            out.fill_(pad_value)
            return
        before, after = a - c, b - c
        if before:  # pad only the slabs outside the volume
            out[(slice(None),) * (axis + 1) + (slice(0, before),)] = pad_value
        if after < s:
            out[(slice(None),) * (axis + 1) + (slice(after, s),)] = pad_value
        src.append(slice(a, b))
        dst.append(slice(before, after))
    window = source[tuple(src)]
    if not isinstance(window, torch.Tensor):
        window = torch.from_numpy(np.asarray(window).astype(torch_to_numpy(out.dtype), copy=False))
    out[tuple(dst)] = window


def torch_to_numpy(dtype: torch.dtype) -> type:
    return {torch.float32: np.float32, torch.int16: np.int16}[dtype]
