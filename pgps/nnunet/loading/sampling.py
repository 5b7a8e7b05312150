"""The nnU-Net training loader of every PGPS trainer: each batch is a step of the core's batch plan.

Which volume and which kind of patch every sample gets, and where it is cropped, comes from
:class:`pgps.sampling.BatchPlanner`: a step's global batch is a pure function of the run's seed and
the step (cases, forced-foreground flags, crop corners; for the batched augmentation also its
parameters), for nnU-Net's own sampling (``"nnunet"``: CPS, Efficiency, the MICCAI modes, RPSS) as for
the PGPS strategies (Split-Crop, Single-Crop, Multi-Crop, Single-Volume). The plain PyTorch and MONAI
adapters plan with the same class. A volume without foreground falls back to a random patch and is
counted (``batch["pgps_fg_fallbacks"]``). Each volume is opened once per batch; nnU-Net's blosc2 arrays
then read only the chunks that a crop touches.

**One rank's rows.** Under nnU-Net's DDP (``-num_gpus N``) every rank takes its contiguous rows of the
global batch (:func:`pgps.sampling.rank_rows`, nnU-Net's split) and opens only the volumes those rows
need; one process is rank 0 of 1. The ranks' rows of a step are disjoint and together the batch one
process trains.

**Steps, in order.** A :class:`StepQueue` holds the steps a stage's loader produces and hands the next
one to whichever process asks first (the trainer's own process, or one of nnU-Net's augmentation
workers, ``NonDetMultiThreadedAugmenter``); every batch carries its step (``batch["pgps_step"]``), and
the trainer takes the steps in order whichever worker delivers first. Workers run at most ``window``
steps ahead of the trainer, so at most ``window`` batches per rank exist at once (in production,
queued, or waiting for their turn): the trainer sets it to the workers plus nnU-Net's own cache.

Two ways to augment a batch:

- ``transforms`` (nnU-Net's per-sample pipeline): every patch is cropped at nnU-Net's enlarged
  ``initial_patch_size`` and transformed on its own, as ``nnUNetDataLoader`` does (random draws from
  the process's own generators, as in nnU-Net).
- ``augmentation`` (an :class:`~pgps.nnunet.loading.batched.AugmentationSpec`): the batched path. The
  parameters of the whole global batch are drawn from the step's own generator and each rank takes
  its rows'. Each volume is read once, as the bounding box of its patches when they cover it densely
  (else patch by patch); small patches are gathered with one index operation; only the samples the
  spatial transform rotates or scales get the enlarged crop; and :func:`~pgps.nnunet.loading.batched.augment`
  transforms the whole batch at once. Small volumes (at most 1/8 of ``cache_bytes``, 256 MiB per
  loader process by default) stay cached decompressed, which makes Single-Crop's many volumes per
  batch cheap. With ``defer_augmentation`` the loader returns the cropped
  :class:`~pgps.nnunet.loading.batched.RawBatch` (``batch["pgps_raw"]``) and :func:`finish_batch` augments it
  where training runs (the GPU).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from threadpoolctl import ThreadpoolController

from pgps.nnunet.inputs import DamagedInput, read_case
from pgps.nnunet.loading.batched import AugmentationSpec, RawBatch, augment, centre_offset, sample_parameters
from pgps.processes import end_with_parent
from pgps.sampling import BatchPlanner, StepPlan, VolumeRequest, check_strategy, rank_rows
from pgps.schedule import Schedule, Stage

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
    at every batch (``threadpool_limits`` does: 1-6 ms, a fifth of a batch at the first PGPS stages)."""
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=1, user_api=None)


class StepQueue:
    """The steps one stage's loader produces, handed out in order to whichever process asks first.

    A worker process (:meth:`claim` with ``wait=True``) takes a step only while it is fewer than
    ``window`` steps ahead of the next one the trainer takes (:meth:`taken`), and otherwise waits; the
    trainer's own process (no workers) takes the next step at once. The counters live in shared memory,
    so nnU-Net's workers, started after the queue, share them.
    """

    def __init__(self, steps: Sequence[int], window: int = 1) -> None:
        self.steps = np.asarray(steps, dtype=np.int64)
        if len(self.steps) and np.any(np.diff(self.steps) <= 0):
            raise ValueError("the steps of a loader must increase")
        if int(window) < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = int(window)
        context = multiprocessing.get_context()  # batchgenerators starts its workers with the default one
        self._claimed = context.Value("q", 0)  # index of the next step to hand out (with a lock)
        self._needed = context.RawValue("q", 0)  # index of the next step the trainer takes
        self._closed = context.RawValue("b", 0)

    def __len__(self) -> int:
        return len(self.steps)

    def claim(self, wait: bool = False, parent: int | None = None, poll_s: float = 0.002) -> int | None:
        """The next step to produce. ``wait``: in a worker, wait while the window is full (``None`` once the
        queue is closed, or when the process ``parent`` is gone); otherwise raise when no step is left."""
        while True:
            with self._claimed.get_lock():
                index = self._claimed.value
                if index < len(self.steps) and (not wait or index < self._needed.value + self.window):
                    self._claimed.value = index + 1
                    return int(self.steps[index])
            if not wait:
                raise RuntimeError(f"this loader has produced all its {len(self.steps)} steps")
            if self._closed.value or (parent is not None and os.getppid() != parent):  # closed, or the trainer died
                return None
            time.sleep(poll_s)

    def taken(self, step: int) -> None:
        """The trainer has taken ``step``: workers may now run up to ``window`` steps past it."""
        self._needed.value = int(np.searchsorted(self.steps, step)) + 1

    def close(self) -> None:
        """Release the waiting workers (before the augmenter is finished)."""
        self._closed.value = 1


class PlannedDataLoader(nnUNetDataLoader):
    """``nnUNetDataLoader`` for one curriculum stage: every batch is a step of a :class:`~pgps.sampling.BatchPlanner`.

    ``data`` holds the planner's cases in order (``planner.num_cases`` identifiers); ``patch_size`` is the
    (enlarged) crop before the spatial transform and ``final_patch_size`` the network input, as in
    ``nnUNetDataLoader``. ``steps`` hands out the steps (default: the stage's steps from ``start``);
    ``rank`` of ``world_size`` selects the rows this process trains. Give either ``transforms`` (nnU-Net's
    per-sample pipeline) or ``augmentation`` (the batched path; see the module docstring).

    Each batch holds nnU-Net's ``data``, ``target`` and ``keys`` for this rank's rows, and ``pgps_step``,
    ``pgps_rows`` (global rows), ``pgps_forced``, ``pgps_corners`` (crop lower corners, at ``patch_size``)
    and ``pgps_fg_fallbacks``.
    """

    def __init__(
        self,
        data,
        planner: BatchPlanner,
        stage_index: int,
        patch_size: Sequence[int],
        final_patch_size: Sequence[int],
        label_manager,
        *,
        steps: StepQueue | None = None,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        transforms=None,
        augmentation: AugmentationSpec | None = None,
        defer_augmentation: bool = False,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        if planner.num_cases != len(data.identifiers):
            raise ValueError(
                f"the planner draws from {planner.num_cases} cases, the dataset has {len(data.identifiers)}"
            )
        stage = planner.schedule.stages[stage_index]
        check_strategy(planner.strategy, stage.batch_size, planner.num_cases)
        if transforms is not None and augmentation is not None:
            raise ValueError("give either per-sample transforms or a batched augmentation spec, not both")
        if augmentation is not None and tuple(augmentation.patch_size) != tuple(final_patch_size):
            raise ValueError(
                f"the augmentation is for patch {augmentation.patch_size}, the loader's final patch is "
                f"{tuple(final_patch_size)}"
            )
        rows = rank_rows(stage.batch_size, rank, world_size)
        super().__init__(
            data,
            len(rows),
            patch_size,
            final_patch_size,
            label_manager,
            oversample_foreground_percent=planner.foreground_share,
            transforms=transforms,
        )
        self.planner, self.stage_index = planner, int(stage_index)
        self.rank, self.world_size = int(rank), int(world_size)
        self.steps = steps if steps is not None else StepQueue(planner.stage_steps(stage_index, start))
        self.augmentation = augmentation
        self.defer_augmentation = defer_augmentation
        self.last_parameters = None  # augmentation parameters of the last batched batch (benchmarks, debugging)
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self._cached_bytes = 0
        self._worker: int | None = None  # in a worker process: the pid of the trainer's process

    @classmethod
    def constant(
        cls,
        data,
        batch_size: int,
        patch_size: Sequence[int],
        final_patch_size: Sequence[int],
        label_manager,
        *,
        strategy: str = "split_crop",
        foreground_share: float = 0.5,
        seed: int = 0,
        steps: int = 10**6,
        **kwargs,
    ) -> PlannedDataLoader:
        """A loader of one fixed batch and patch size for ``steps`` steps (nnU-Net's own loop, benchmarks)."""
        patch = tuple(int(p) for p in final_patch_size)
        stage = Stage(patch_size=patch, batch_size=int(batch_size), epochs=1)
        schedule = Schedule("cps", patch, int(batch_size), patch, (stage,), iterations_per_epoch=int(steps))
        planner = BatchPlanner(schedule, len(data.identifiers), strategy, foreground_share, seed)
        return cls(data, planner, 0, patch_size, final_patch_size, label_manager, **kwargs)

    def set_thread_id(self, thread_id: int) -> None:
        """Called in each worker process: its steps are claimed from the shared queue, waiting for the trainer; on
        Linux the kernel ends the worker when the trainer's process dies (a SIGKILL, an OOM kill)."""
        super().set_thread_id(thread_id)
        self._worker = os.getppid()  # the trainer's process: a worker stops waiting for steps when it is gone
        end_with_parent(self._worker)

    # -- the step's plan, this rank's rows ------------------------------------------------------------
    def plan(self, step: int) -> tuple[StepPlan, np.ndarray, list[VolumeRequest]]:
        """The global batch of ``step``, this rank's rows and the volume requests of those rows."""
        plan = self.planner.plan(step)
        if plan.stage_index != self.stage_index:
            raise RuntimeError(
                f"step {step} trains stage {plan.stage_index}, not this loader's stage {self.stage_index}"
            )
        rows = plan.rank_rows(self.rank, self.world_size)
        return plan, rows, plan.requests(rows)

    def _locations(self, class_locations: dict | None) -> tuple[list, np.ndarray | None]:
        """nnU-Net's ``class_locations`` (rows ``(channel, x, y, z)``) as the core's foreground and annotated voxels."""
        locations = class_locations or {}
        voxels = {k: np.asarray(v)[:, 1:] if len(v) else () for k, v in locations.items()}
        foreground = [v for k, v in voxels.items() if k != self.annotated_classes_key]
        return foreground, voxels.get(self.annotated_classes_key, ()) if self.has_ignore else None

    def corners(self, request: VolumeRequest, shape: Sequence[int], class_locations: dict | None):
        """Lower corners of ``request``'s patches (crop ``self.patch_size``, nnU-Net's padding) and their fallbacks."""
        foreground, annotated = self._locations(class_locations)
        return request.corners(
            shape, foreground, window=self.patch_size, need_to_pad=self.need_to_pad, annotated=annotated
        )

    # -- the batch -------------------------------------------------------------------------------
    def generate_train_batch(self) -> dict:
        try:
            return self._generate_train_batch()
        except DamagedInput as exc:
            if self._worker is None:
                raise
            # in a worker: the trainer raises it (StageLoader.take), instead of a worker's traceback and death
            return {"pgps_step": None, "pgps_damaged": [exc.path, exc.what]}

    def _generate_train_batch(self) -> dict:
        step = self.steps.claim(wait=self._worker is not None, parent=self._worker)
        if step is None:  # the queue was closed while this worker waited: nothing more to produce
            return {"pgps_step": None}
        plan, rows, requests = self.plan(step)
        if self.augmentation is not None:
            batch = self._batched_batch(plan, rows, requests)
        else:
            batch = self._per_sample_batch(rows, requests)
        return {**batch, "pgps_step": step, "pgps_rows": rows.tolist(), "pgps_forced": plan.forced[rows].tolist()}

    def _per_sample_batch(self, rows: np.ndarray, requests: list[VolumeRequest]) -> dict:
        """nnU-Net's per-sample crops and transforms, for this rank's rows."""
        first = int(rows[0])
        keys: list[str] = [""] * len(rows)
        corners = np.empty((len(rows), 3), dtype=np.int64)
        data_all = seg_all = None
        fallbacks = 0
        with torch.no_grad(), _one_thread():
            for request in requests:
                key = self.indices[request.case]
                data, seg, seg_prev, properties = read_case(self._data, key)
                found, fell_back = self.corners(request, data.shape[1:], properties.get("class_locations"))
                fallbacks += int(fell_back.sum())
                for corner, row in zip(found.tolist(), request.taken_rows.tolist(), strict=True):
                    j = row - first
                    keys[j], corners[j] = key, corner
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
                        data_all = torch.empty((len(rows), *image.shape), dtype=torch.float32)
                        if isinstance(target, list):
                            seg_all = [torch.empty((len(rows), *t.shape), dtype=t.dtype) for t in target]
                        else:
                            seg_all = torch.empty((len(rows), *target.shape), dtype=target.dtype)
                    data_all[j] = image
                    if isinstance(target, list):
                        for level, t in enumerate(target):
                            seg_all[level][j] = t
                    else:
                        seg_all[j] = target
        return {"data": data_all, "target": seg_all, "keys": keys, "pgps_fg_fallbacks": fallbacks,
                "pgps_corners": corners.tolist()}  # fmt: skip

    def _load_case(self, key: str) -> tuple:
        """``load_case`` with an LRU cache of small decompressed volumes (at most ``cache_bytes`` in all).

        A volume is kept when image and labels take at most an eighth of the budget, so large volumes
        (read patch by patch from blosc2) never push the small ones out; 0 switches the cache off.
        """
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        case = read_case(self._data, key)
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

    def _batched_batch(self, plan: StepPlan, rows: np.ndarray, requests: list[VolumeRequest]) -> dict:
        """Crop this rank's patches with vectorised reads and gathers, then augment them at once."""
        first, b = int(rows[0]), len(rows)
        cases = {request.slot: self._load_case(self.indices[request.case]) for request in requests}
        if any(case[2] is not None for case in cases.values()):
            raise NotImplementedError("the batched loader does not support cascade training (previous-stage labels)")
        channels, seg_channels = next(iter(cases.values()))[0].shape[0], next(iter(cases.values()))[1].shape[0]
        spec = self.augmentation
        window, patch = tuple(int(v) for v in self.patch_size), tuple(int(v) for v in self.final_patch_size)
        keys: list[str] = [""] * b
        local: dict[int, np.ndarray] = {}
        with torch.no_grad(), _one_thread():
            drawn = sample_parameters(spec, plan.batch_size, channels, self.planner.augmentation_generator(plan.step))
            params = self.last_parameters = drawn.take(rows)
            corners = np.empty((b, 3), dtype=np.int64)
            fallbacks = 0
            for request in requests:
                data, _, _, properties = cases[request.slot]
                at = local[request.slot] = request.taken_rows - first
                corners[at], fell_back = self.corners(request, data.shape[1:], properties.get("class_locations"))
                fallbacks += int(fell_back.sum())
                for j in at.tolist():
                    keys[j] = self.indices[request.case]
            spatial = params.spatial
            slot = np.cumsum(spatial) - 1  # row of each spatial sample in the enlarged-crop tensors
            image = torch.empty((b, channels, *patch), dtype=torch.float32)
            seg = torch.empty((b, seg_channels, *patch), dtype=torch.int16)
            big_image = torch.empty((int(spatial.sum()), channels, *window), dtype=torch.float32)
            big_seg = torch.empty((int(spatial.sum()), seg_channels, *window), dtype=torch.int16)
            offset = centre_offset(window, patch)
            for request in requests:
                data, seg_source, _, _ = cases[request.slot]
                at = local[request.slot]
                moved, still = at[spatial[at]], at[~spatial[at]]
                reads = [(corners[still] + offset, patch, image, seg, still), (corners[moved], window, big_image,
                         big_seg, slot[moved])]  # fmt: skip
                read_patches(data, seg_source, [r for r in reads if len(r[4])])
            raw = RawBatch(image=image, seg=seg, big_image=big_image, big_seg=big_seg, params=params, spec=spec)
            batch = {"keys": keys, "pgps_fg_fallbacks": fallbacks, "pgps_corners": corners.tolist()}
            if self.defer_augmentation:  # a plain dict, so that the augmenter pins its tensors
                return {**batch, "pgps_raw": {f.name: getattr(raw, f.name) for f in dataclasses.fields(raw)}}
            return {**augment(raw), **batch}


class ValidationDataLoader(nnUNetDataLoader):
    """nnU-Net's own loader (the trainers' per-epoch validation batches), whose workers end with the trainer."""

    def set_thread_id(self, thread_id: int) -> None:
        super().set_thread_id(thread_id)
        end_with_parent(os.getppid())


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
