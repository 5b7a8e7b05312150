"""Multi-GPU training of the PGPS trainers with nnU-Net's own DDP path (``nnUNetv2_train ... -num_gpus N``).

nnU-Net starts one process per GPU (``torch.multiprocessing.spawn``, NCCL), each a trainer on
``cuda:<rank>``; it splits the planned batch over the ranks (``_set_batch_size_and_oversample``),
wraps the network in ``DistributedDataParallel`` and gathers losses and pseudo-Dice. Its loaders
draw independently on every rank. The curriculum adds, per stage:

- **the batch split**: the stage's global batch ``b`` is cut into contiguous rows as nnU-Net cuts
  its batch, ``b // N`` each and one more for the first ``b % N`` ranks (:func:`rank_rows`); the
  forced-foreground rows are those of the global batch (nnU-Net's rule ``j >= round(b (1 - p))``
  on the global index), so the global share is the strategy's whatever the split;
- **one global plan**: every rank draws the whole global batch (cases, forced flags, crop windows;
  with the PGPS samplers also the augmentation parameters) from a generator seeded alike on every
  rank, and loads, crops and augments only its rows: no rank repeats another's patches and the
  union is what one process with the same seed draws. Data-augmentation randomness inside nnU-Net's
  per-sample transforms stays each rank's own;
- **telemetry**: each rank measures its batches; every epoch the rows are gathered and combined
  into the global batch's (:func:`combine_rows`), which rank 0 writes;
- **checkpoints**: rank 0 writes nnU-Net's checkpoint with every rank's RNG states (gathered each
  epoch); on ``--c`` each rank restores its own. The plan generators are identical on all ranks;
- **stages smaller than the GPUs**: a stage whose global batch is below the number of GPUs stops
  the run before training, naming the stage and the fix (:func:`check_stages`).

What only runs on GPUs (nnU-Net's choice, not changed here): NCCL, ``cuda:<rank>`` devices and the
``DistributedDataParallel(device_ids=[rank])`` wrapper. ``tests/test_ddp.py`` runs everything else
with two ``gloo`` processes on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

import pgps
from pgps.sampling import forced_foreground, rank_rows  # the core's batch rules (nnU-Net's DDP split)


def rank_foreground_share(batch_size: int, share: float, rank: int, world_size: int) -> float:
    """The forced-foreground share of ``rank``'s rows when the global batch forces nnU-Net's last ``share``."""
    return float(forced_foreground(batch_size, share)[rank_rows(batch_size, rank, world_size)].mean())


def check_stages(schedule: pgps.Schedule, world_size: int, describe: Callable[[int], str]) -> None:
    """Raise ``ValueError`` naming the first stage whose global batch is smaller than ``world_size``."""
    for index, stage in enumerate(schedule.stages):
        if stage.batch_size < world_size:
            raise ValueError(
                f"PGPS stage {index} ({describe(index)}) has a batch of {stage.batch_size}, fewer than the "
                f"{world_size} GPUs: every GPU needs at least one patch. Train on at most {stage.batch_size} GPUs "
                f"(-num_gpus), or raise the batch size (pgps plans-variant --batch-size {world_size} or more)"
            )


MIXED = "mixed"


def combine_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One telemetry row of the global batch from the ranks' rows of the same epoch.

    Batch sizes, iterated voxels and fallbacks add up; the foreground-voxel share is weighted by each
    rank's voxels and the class-presence share by its samples (each rank measured them over its own
    batches); times are the slowest rank's. ``patch_size`` and ``iterations`` are the same on every rank.
    """
    first = dict(rows[0])
    if len(rows) == 1:
        return first
    voxels = [float(r["iterated_voxels"]) for r in rows]
    batches = [r["batch_size"] for r in rows]
    samples = [float(b) if b != MIXED else math.nan for b in batches]

    def weighted(key: str, weights: list[float]) -> float:
        values = np.asarray([float(r[key]) for r in rows])
        w = np.asarray(weights)
        if not np.all(np.isfinite(w)) or w.sum() == 0:
            return float(np.mean(values))
        return float((values * w).sum() / w.sum())

    fallbacks = [r.get("fg_fallbacks") for r in rows]
    first.update(
        batch_size=MIXED if MIXED in batches else int(sum(batches)),
        iterated_voxels=int(sum(voxels)),
        fg_voxel_share=weighted("fg_voxel_share", voxels),
        class_presence_share=weighted("class_presence_share", samples),
        fg_fallbacks=None if any(f is None for f in fallbacks) else int(sum(int(f) for f in fallbacks)),
        compile_time_s=max(float(r.get("compile_time_s") or 0) for r in rows),
        compilations=max(int(r.get("compilations") or 0) for r in rows),
    )
    return first


@contextmanager
def global_random_state(state: dict):
    """Run a block with numpy's global generator set to ``state["numpy"]`` (a shared plan generator), and keep
    the state it leaves; the caller's own global state is restored afterwards."""
    own = np.random.get_state()
    np.random.set_state(state["numpy"])
    try:
        yield
    finally:
        state["numpy"] = np.random.get_state()
        np.random.set_state(own)


class RankedDataLoader(nnUNetDataLoader):
    """nnU-Net's own loader on one rank of a DDP run: the global batch planned with nnU-Net's own draws.

    ``batch_size`` is the stage's global batch and ``oversample_foreground_percent`` its global share.
    Every rank draws the global batch's cases (``get_indices``), forced flags and crop windows
    (``get_bbox``) with nnU-Net's code from numpy's generator set to a shared state seeded by
    ``seed`` (the same on every rank), then nnU-Net's ``generate_train_batch`` crops and augments only
    this rank's rows (:func:`rank_rows`) with the rank's own random state.
    """

    def __init__(self, *args: Any, rank: int, world_size: int, seed: Sequence[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.global_batch_size = self.batch_size
        self.rank, self.world_size = rank, world_size
        self.rows = rank_rows(self.global_batch_size, rank, world_size)
        self.plan_state = {"numpy": np.random.RandomState(np.random.SeedSequence(list(seed)).generate_state(1)[0])
                           .get_state()}  # fmt: skip
        self.seed = list(seed)
        self._replay: list | None = None
        self.last_plan: list[tuple[str, list[int], bool]] = []  # (case, crop lower corner, forced) per global row

    def set_thread_id(self, thread_id: int) -> None:
        """In a worker process: a plan generator of the worker's own, the same for that worker on every rank."""
        super().set_thread_id(thread_id)
        seed = np.random.SeedSequence(self.seed, spawn_key=(int(thread_id),)).generate_state(1)[0]
        self.plan_state = {"numpy": np.random.RandomState(seed).get_state()}

    def plan(self) -> list[tuple[str, list[int], list[int], bool]]:
        """The global batch: ``(case, crop lower corner, upper corner, forced)`` per row, from the shared state."""
        rows = []
        with global_random_state(self.plan_state):
            keys = self.get_indices()
            for j, key in enumerate(keys):
                forced = self.get_do_oversample(j)
                data, _, _, properties = self._data.load_case(key)
                lower, upper = self.get_bbox(data.shape[1:], forced, properties["class_locations"])
                rows.append((key, [int(v) for v in lower], [int(v) for v in upper], bool(forced)))
        self.last_plan = [(k, lo, f) for k, lo, _, f in rows]
        return rows

    def get_indices(self):
        if self._replay is not None:
            return [key for key, *_ in self._replay]
        return super().get_indices()

    def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
        if self._replay is not None:
            _, lower, upper, _ = self._replay[self._next]
            self._next += 1
            return lower, upper
        return super().get_bbox(data_shape, force_fg, class_locations, overwrite_class, verbose)

    def generate_train_batch(self) -> dict:
        plan = self.plan()
        self._replay, self._next = [plan[i] for i in self.rows], 0
        self.batch_size = len(self.rows)
        try:
            batch = super().generate_train_batch()
        finally:
            self._replay, self.batch_size = None, self.global_batch_size
        return {**batch, "pgps_rows": self.rows.tolist()}
