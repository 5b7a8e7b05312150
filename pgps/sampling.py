"""Batch plans (journal Appendix A): which case, which kind of patch and where to crop, for every sample.

Framework-free (numpy only): the nnU-Net loader (:mod:`pgps.nnunet.loading.sampling`) and the plain
PyTorch / MONAI adapters (:mod:`pgps.torch`, :mod:`pgps.monai`) all draw their batches here.

Strategies, for a batch of ``b`` patches with a fixed foreground share (50% by default):

- ``split_crop`` (PGPS-Performance's default): two volumes; every foreground patch comes from
  one, every random patch from the other.
- ``single_crop``: ``b`` distinct volumes, one patch each (nnU-Net's own scheme).
- ``multi_crop``: two volumes, each giving half of the foreground and half of the random patches.
- ``single_volume``: every patch from one volume.
- ``nnunet``: nnU-Net's own sampling (``nnUNetDataLoader``): ``b`` volumes drawn uniformly with
  replacement, one patch each, and a forced patch's lower corner clamped only from below (nnU-Net
  lets it reach past the padded volume); the trainers that keep nnU-Net's sampling (CPS,
  Efficiency, the MICCAI modes, RPSS) plan with it.

Sample ``j`` is a forced-foreground patch when ``j >= round(b * (1 - share))``, nnU-Net's rule
(or, with ``probabilistic_oversampling``, nnU-Net's other rule: each sample with probability ``share``).
A foreground patch picks a class uniformly among the foreground classes present in the volume,
then a voxel of that class uniformly, and centres the patch there, clamped to the padded volume;
a random patch is uniform over the valid positions. A forced patch from a volume without
foreground falls back to a random patch (the functions count these fallbacks).

Every draw takes a ``numpy.random.Generator``. The nnU-Net loader passes its one sequential
generator. :class:`BatchPlanner` instead derives a generator per step (the cases) and per step
and volume (the crop corners) from a seed, so that any step's batch is a pure function of
``(seed, step)``: the same on every process, resumable from the step alone, and cut into
per-rank slices (:func:`rank_rows`, nnU-Net's DDP split) whose union is the single-process batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from pgps.curriculum import check_same_schedule
from pgps.schedule import Schedule, Stage

VOLUMES_NEEDED = {"split_crop": 2, "multi_crop": 2, "single_volume": 1, "single_crop": None, "nnunet": 1}
STRATEGIES = tuple(VOLUMES_NEEDED)
AUGMENTATION_STREAM = 2**31 - 1
"""Stream of :func:`generator` for the augmentation parameters of a whole step (a batch's volumes use slots
``0 .. b - 1``, far below it)."""
FORCED_STREAM = 2**31 - 2
"""Stream of :func:`generator` for the forced-foreground flags under probabilistic oversampling."""


def check_strategy(strategy: str, batch_size: int, num_cases: int) -> None:
    """Raise ``ValueError`` when ``strategy`` is unknown or cannot build a batch of ``batch_size``."""
    if strategy not in VOLUMES_NEEDED:
        raise ValueError(f"unknown batch sampling strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    needed = batch_size if strategy == "single_crop" else VOLUMES_NEEDED[strategy]
    if needed > num_cases:
        raise ValueError(
            f"the {strategy} strategy needs {needed} distinct training cases for a batch of {batch_size} "
            f"patches, but the training split has only {num_cases}"
        )


def forced_foreground(batch_size: int, share: float) -> np.ndarray:
    """Which samples of a batch must contain foreground (nnU-Net's last-``share`` rule)."""
    return np.arange(batch_size) >= round(batch_size * (1 - share))


def plan_cases(rng: np.random.Generator, strategy: str, num_cases: int, forced: np.ndarray) -> np.ndarray:
    """The case index (``0 <= i < num_cases``) of every sample of a batch whose forced flags are ``forced``."""
    b = len(forced)
    if strategy == "single_crop":
        return rng.choice(num_cases, size=b, replace=False)
    if strategy == "single_volume":
        return np.full(b, rng.integers(num_cases))
    if strategy == "nnunet":  # nnUNetDataLoader.get_indices: uniform, with replacement
        return rng.integers(num_cases, size=b)
    first, second = rng.choice(num_cases, size=2, replace=False)
    forced = np.asarray(forced, dtype=bool)
    if strategy == "split_crop":
        return np.where(forced, second, first)
    if strategy != "multi_crop":
        raise ValueError(f"unknown batch sampling strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    # multi_crop: alternate the volumes within the random and within the foreground samples
    seen = np.zeros(b, dtype=np.int64)
    for flag in (False, True):
        rows = np.flatnonzero(forced == flag)
        seen[rows] = np.arange(len(rows))
    return np.where(seen % 2 == 0, first, second)


def rank_rows(batch_size: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Rows of a global batch of ``batch_size`` that ``rank`` of ``world_size`` processes takes.

    Contiguous slices, the first ``batch_size % world_size`` ranks one sample more: the split of
    nnU-Net's DDP training (``_set_batch_size_and_oversample``), so a rank's foreground share follows
    the global rule. Every rank needs at least one sample.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of world_size {world_size}")
    if batch_size < world_size:
        raise ValueError(f"a batch of {batch_size} patches cannot be split over {world_size} processes")
    share, extra = divmod(batch_size, world_size)
    start = rank * share + min(rank, extra)
    return np.arange(start, start + share + (rank < extra))


# -- where to crop ---------------------------------------------------------------------------------
def crop_bounds(
    shape: Sequence[int], patch_size: Sequence[int], need_to_pad: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest lower corner of a ``patch_size`` crop of a volume of ``shape`` (inclusive).

    The volume is padded by ``need_to_pad`` (half before, half after, nnU-Net's convention) and at
    least to the patch size, so corners may be negative or reach past the volume.
    """
    patch, shape = np.asarray(patch_size), np.asarray(shape)
    need = np.maximum(0 if need_to_pad is None else np.asarray(need_to_pad), patch - shape)
    lower = -(need // 2)
    upper = shape + need // 2 + need % 2 - patch
    return lower, upper


def _eligible(forced: bool, foreground: Sequence, annotated) -> list:
    """Location arrays a patch may be centred on (empty: a uniform random patch)."""
    if forced:
        return [locations for locations in foreground if len(locations) > 0]
    if annotated is not None and len(annotated):  # ignore label: random patches still need annotated voxels
        return [annotated]
    return []


def crop_box(
    rng: np.random.Generator,
    bounds: tuple[np.ndarray, np.ndarray],
    patch_size: Sequence[int],
    forced: bool,
    foreground: Sequence = (),
    annotated=None,
    clamp_upper: bool = True,
) -> tuple[np.ndarray, bool]:
    """Lower corner of one crop and whether a forced patch fell back to a random one.

    ``bounds`` come from :func:`crop_bounds`. ``foreground`` holds one array of voxel coordinates
    ``(n_k, 3)`` per foreground class in a fixed order (empty arrays for absent classes);
    ``annotated`` the annotated voxels when the dataset has an ignore label (random patches are then
    centred on one of them), else ``None``. ``clamp_upper=False``: a centred patch is only kept from
    below the lowest corner (nnU-Net's ``get_bbox``).
    """
    lower, upper = bounds
    eligible = _eligible(forced, foreground, annotated)
    if not eligible:
        return rng.integers(lower, upper + 1), forced
    select = eligible[rng.integers(len(eligible))]
    voxel = np.asarray(select[rng.integers(len(select))])
    return np.clip(voxel - np.asarray(patch_size) // 2, lower, upper if clamp_upper else None), False


def crop_corners(
    rng: np.random.Generator,
    bounds: tuple[np.ndarray, np.ndarray],
    patch_size: Sequence[int],
    forced: np.ndarray,
    foreground: Sequence = (),
    annotated=None,
    clamp_upper: bool = True,
) -> tuple[np.ndarray, int]:
    """:func:`crop_box` for many patches of one volume at once: corners ``(n, 3)`` and the fallback count.

    Same distribution per patch: a forced patch picks a class uniformly among the eligible ones, then
    one of its voxels uniformly, and is centred there (clamped); others are uniform.
    """
    forced = np.asarray(forced, dtype=bool)
    if len(forced) == 1:  # one patch (Single-Crop): the scalar path is 3x faster
        corner, fell_back = crop_box(rng, bounds, patch_size, bool(forced[0]), foreground, annotated, clamp_upper)
        return np.array([corner], dtype=np.int64), int(fell_back)
    lower, upper = bounds
    n = len(forced)
    corners = np.empty((n, len(lower)), dtype=np.int64)
    located = np.zeros(n, dtype=bool)
    half = np.asarray(patch_size) // 2
    for flag in (True, False):
        rows = np.flatnonzero(forced == flag)
        eligible = _eligible(flag, foreground, annotated)
        if not len(rows) or not eligible:
            continue
        chosen = rng.integers(len(eligible), size=len(rows))
        for i, select in enumerate(eligible):
            picked = rows[chosen == i]
            if len(picked):
                voxels = np.asarray(select[rng.integers(len(select), size=len(picked))])
                corners[picked] = np.clip(voxels - half, lower, upper if clamp_upper else None)
        located[rows] = True
    free = np.flatnonzero(~located)
    corners[free] = rng.integers(lower, upper + 1, size=(len(free), len(lower)))
    return corners, int((forced & ~located).sum())


class VoxelLocations:
    """The voxels of one class as flat indices into a volume of ``shape``; indexing gives coordinates.

    ``locations[i]`` is one voxel ``(3,)``, ``locations[array]`` several ``(n, 3)``: what
    :func:`crop_box` and :func:`crop_corners` read, without holding ``(n, 3)`` coordinates for every voxel.
    """

    def __init__(self, flat: np.ndarray, shape: Sequence[int]) -> None:
        self.flat = np.asarray(flat)
        self.shape = tuple(int(s) for s in shape)

    def __len__(self) -> int:
        return len(self.flat)

    def __getitem__(self, index) -> np.ndarray:
        return np.stack(np.unravel_index(self.flat[index], self.shape), axis=-1)

    @property
    def nbytes(self) -> int:
        return self.flat.nbytes


def class_locations(label: np.ndarray, classes: Sequence[int] | None = None) -> dict[int, VoxelLocations]:
    """Voxels of every foreground class (``label > 0``) of a label volume ``(X, Y, Z)`` (or ``(1, X, Y, Z)``).

    ``classes`` fixes the keys (absent classes get no voxels); by default the classes present.
    """
    label = np.asarray(label)
    if label.ndim == 4:
        if label.shape[0] != 1:
            raise ValueError(f"a label volume has one channel, got shape {label.shape}")
        label = label[0]
    flat = label.reshape(-1)
    index = np.flatnonzero(flat > 0)
    if flat.size < 2**31:
        index = index.astype(np.int32)
    values = flat[index]
    keys = np.unique(values).tolist() if classes is None else [int(c) for c in classes]
    return {int(c): VoxelLocations(index[values == c], label.shape) for c in keys}


# -- a schedule's batches, step by step ------------------------------------------------------------
def generator(seed: int, step: int, *stream: int) -> np.random.Generator:
    """The generator of ``step`` of a run seeded ``seed`` (its cases), or of a stream of it (``stream`` =
    ``(slot,)``: the crop corners of the step's ``slot``-th volume; ``(slot, row)``: a patch's augmentation;
    ``(slot, AUGMENTATION_STREAM)``: the augmentation of the volume's patches together;
    ``(AUGMENTATION_STREAM,)``: the augmentation of the whole batch; ``(FORCED_STREAM,)``: probabilistic
    forced-foreground flags)."""
    key = (int(step), *(int(s) + 1 for s in stream))  # +1: no stream's key equals another's prefix padded with 0
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def combine_seeds(*parts: int) -> int:
    """One non-negative 63-bit seed from several integers (e.g. a run's seed and its fold)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@dataclasses.dataclass(frozen=True)
class VolumeRequest:
    """What one process crops from one volume at one step: everything a data-loading worker needs.

    ``rows`` are the global batch rows of every patch of this volume and ``forced`` their flags; the
    corners are drawn for all of them from the volume's own generator, so every rank draws the same
    ones, and the patches at positions ``take`` (this rank's rows) are returned. ``clamp_upper``:
    whether a centred crop is also kept below the highest corner (``False``: nnU-Net's sampling).
    """

    seed: int
    step: int
    stage_index: int
    patch_size: tuple[int, int, int]
    crop_size: tuple[int, int, int]
    slot: int
    case: int
    rows: tuple[int, ...]
    forced: tuple[bool, ...]
    take: tuple[int, ...]
    clamp_upper: bool = True

    def corners(
        self,
        shape: Sequence[int],
        foreground: Mapping | Sequence = (),
        *,
        window: Sequence[int] | None = None,
        need_to_pad: Sequence[int] | None = None,
        annotated=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lower corners ``(len(take), 3)`` of the crops in a volume of spatial ``shape``, and which of them
        are forced patches that fell back to random ones (the volume has no foreground).

        ``foreground``: voxel locations per foreground class (:func:`class_locations`, or a sequence);
        ``window``: the crop (default ``crop_size``; nnU-Net's loader crops an enlarged window), padded by
        ``need_to_pad`` (:func:`crop_bounds`); ``annotated``: see :func:`crop_box`.
        """
        if isinstance(foreground, Mapping):
            foreground = list(foreground.values())
        forced = np.asarray(self.forced, dtype=bool)
        window = self.crop_size if window is None else tuple(int(w) for w in window)
        rng, bounds = generator(self.seed, self.step, self.slot), crop_bounds(shape, window, need_to_pad)
        corners, _ = crop_corners(rng, bounds, window, forced, foreground, annotated, self.clamp_upper)
        take = np.asarray(self.take, dtype=np.int64)
        fell_back = forced[take] & (not any(len(f) for f in foreground))
        return corners[take], fell_back

    @property
    def taken_rows(self) -> np.ndarray:
        return np.asarray(self.rows, dtype=np.int64)[list(self.take)]

    def augmentation_seed(self, row: int | None = None) -> int:
        """A 32-bit seed for the random transforms of one patch (its global batch ``row``) or, without ``row``,
        of this volume's patches together: from ``(seed, step, slot[, row])`` only, so the same on every worker
        and every rank."""
        stream = (self.slot, AUGMENTATION_STREAM if row is None else int(row))  # not the corners' stream (slot,)
        return int(generator(self.seed, self.step, *stream).integers(2**32))

    def every_row(self) -> VolumeRequest:
        """This request for all of the volume's patches (every rank's), e.g. to augment them in one sequence."""
        return dataclasses.replace(self, take=tuple(range(len(self.rows))))


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """One step's global batch: the stage, and the case and forced-foreground flag of every sample."""

    seed: int
    step: int
    stage_index: int
    stage: Stage
    cases: np.ndarray
    forced: np.ndarray
    strategy: str = "split_crop"

    @property
    def batch_size(self) -> int:
        return len(self.cases)

    def rank_rows(self, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """The rows of this batch that ``rank`` of ``world_size`` processes trains (:func:`rank_rows`)."""
        return rank_rows(self.batch_size, rank, world_size)

    def requests(self, rows: np.ndarray | None = None) -> list[VolumeRequest]:
        """One request per volume that ``rows`` of the batch (default: all) need, in order of first appearance."""
        _, first = np.unique(self.cases, return_index=True)
        wanted = np.zeros(self.batch_size, dtype=bool)
        wanted[np.arange(self.batch_size) if rows is None else rows] = True
        out = []
        for slot, case in enumerate(self.cases[np.sort(first)].tolist()):
            case_rows = np.flatnonzero(self.cases == case)
            take = np.flatnonzero(wanted[case_rows])
            if len(take):
                out.append(VolumeRequest(
                    seed=self.seed, step=self.step, stage_index=self.stage_index,
                    patch_size=self.stage.patch_size, crop_size=self.stage.crop_size, slot=slot, case=int(case),
                    rows=tuple(case_rows.tolist()), forced=tuple(self.forced[case_rows].tolist()),
                    take=tuple(take.tolist()), clamp_upper=self.strategy != "nnunet",
                ))  # fmt: skip
        return out


class BatchPlanner:
    """Every step's batch plan of a :class:`~pgps.Schedule`, identical on every process.

    Step ``s`` (``epoch * iterations_per_epoch + iteration``) trains the schedule's stage of that
    iteration. Its cases come from :func:`generator` ``(seed, s)`` and the crop corners of its ``k``-th
    distinct volume from ``(seed, s, k)``, so a step's batch depends on nothing but the seed and the step.
    ``probabilistic_oversampling``: each sample is forced with probability ``foreground_share`` (drawn
    from ``(seed, s, FORCED_STREAM)``) instead of the last share of the batch (nnU-Net's option of that name).
    """

    def __init__(
        self,
        schedule: Schedule,
        num_cases: int,
        strategy: str = "split_crop",
        foreground_share: float = 0.5,
        seed: int = 0,
        probabilistic_oversampling: bool = False,
    ) -> None:
        if not 0 <= foreground_share <= 1:
            raise ValueError(f"foreground_share must be in [0, 1], got {foreground_share}")
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        for i, stage in enumerate(schedule.stages):
            try:
                check_strategy(strategy, stage.batch_size, num_cases)
            except ValueError as exc:
                raise ValueError(f"stage {i} (patch {stage.patch_size}, batch {stage.batch_size}): {exc}") from None
        self.schedule = schedule
        self.num_cases = int(num_cases)
        self.strategy = strategy
        self.foreground_share = float(foreground_share)
        self.seed = int(seed)
        self.probabilistic_oversampling = bool(probabilistic_oversampling)

    @property
    def total_steps(self) -> int:
        return self.schedule.total_iterations

    def stage_index(self, step: int) -> int:
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step {step} is outside the schedule's {self.total_steps} steps")
        return self.schedule.stage_index(*divmod(step, self.schedule.iterations_per_epoch))

    def stage_steps(self, index: int, start: int = 0) -> np.ndarray:
        """The steps from ``start`` on that train stage ``index``, in order (RPSS: the iterations that drew it)."""
        schedule, ipe = self.schedule, self.schedule.iterations_per_epoch
        if not 0 <= index < schedule.num_stages:
            raise ValueError(f"stage {index} is outside the schedule's {schedule.num_stages} stages")
        start = max(int(start), 0)
        if schedule.mode != "rpss":
            first = schedule.first_epoch(index) * ipe
            return np.arange(max(first, start), first + schedule.stages[index].epochs * ipe, dtype=np.int64)
        epochs = range(start // ipe, schedule.epochs)
        steps = [e * ipe + np.flatnonzero(schedule.rpss_draws(e) == index) for e in epochs]
        steps = np.concatenate(steps) if steps else np.empty(0, dtype=np.int64)
        return steps[steps >= start].astype(np.int64)

    def plan(self, step: int) -> StepPlan:
        index = self.stage_index(step)
        stage = self.schedule.stages[index]
        if self.probabilistic_oversampling:
            forced = generator(self.seed, step, FORCED_STREAM).random(stage.batch_size) < self.foreground_share
        else:
            forced = forced_foreground(stage.batch_size, self.foreground_share)
        cases = plan_cases(generator(self.seed, step), self.strategy, self.num_cases, forced)
        return StepPlan(self.seed, int(step), index, stage, np.asarray(cases), forced, self.strategy)

    def augmentation_generator(self, step: int) -> np.random.Generator:
        """The generator of a step's batch-wide augmentation draws (the same on every process)."""
        return generator(self.seed, step, AUGMENTATION_STREAM)

    _DEFAULTS: ClassVar[dict] = {"probabilistic_oversampling": False}  # keys that checkpoints of earlier versions lack

    def state(self) -> dict:
        """What fixes the batches besides the step (:meth:`check_state` refuses a checkpoint that differs)."""
        return {
            "schedule": self.schedule.to_dict(),
            "num_cases": self.num_cases,
            "strategy": self.strategy,
            "foreground_share": self.foreground_share,
            "seed": self.seed,
            "probabilistic_oversampling": self.probabilistic_oversampling,
        }

    def check_state(self, saved: Mapping) -> None:
        """Raise ``ValueError`` when ``saved`` (from :meth:`state`) would plan other batches than this planner."""
        check_same_schedule(saved["schedule"], self.schedule)
        mine = self.state()
        keys = ("num_cases", "strategy", "foreground_share", "seed", "probabilistic_oversampling")
        differ = [k for k in keys if saved.get(k, self._DEFAULTS.get(k)) != mine[k]]
        if differ:
            raise ValueError(
                "the checkpoint was saved with other batch settings: "
                + ", ".join(f"{k} {saved.get(k, self._DEFAULTS.get(k))!r} (now {mine[k]!r})" for k in differ)
            )
