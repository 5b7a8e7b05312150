"""Multi-GPU training of the PGPS trainers with nnU-Net's own DDP path (``nnUNetv2_train ... -num_gpus N``).

nnU-Net starts one process per GPU (``torch.multiprocessing.spawn``, NCCL), each a trainer on
``cuda:<rank>``; it splits the planned batch over the ranks (``_set_batch_size_and_oversample``),
wraps the network in ``DistributedDataParallel`` and gathers losses and pseudo-Dice. Its own loaders
draw independently on every rank. With every PGPS trainer, per stage and for every sampling (nnU-Net's
own and the four PGPS strategies):

- **one global plan**: a step's global batch (cases, forced flags on the global index, crop corners;
  with the batched augmentation also its parameters) is a function of the run's seed and the step
  (:class:`pgps.sampling.BatchPlanner`), so every rank knows it without communication;
- **the batch split**: each rank takes the contiguous rows nnU-Net would give it, ``b // N`` each and one
  more for the first ``b % N`` ranks (:func:`rank_rows`), and opens, crops and augments only the volumes
  those rows need (:class:`pgps.nnunet.loading.sampling.PlannedDataLoader`): no rank repeats another's patches and
  the union is the batch one process trains. Randomness inside nnU-Net's per-sample transforms stays each
  rank's own;
- **telemetry**: each rank measures its batches; every epoch the rows are gathered and combined
  into the global batch's (:func:`combine_rows`), which rank 0 writes;
- **checkpoints**: rank 0 writes nnU-Net's checkpoint with the curriculum's position (the next step), the
  planner's settings and every rank's RNG states (gathered each epoch); on ``--c`` every rank continues
  at that step and restores its own random states;
- **stages smaller than the GPUs**: a stage whose global batch is below the number of GPUs stops
  the run before training, naming the stage and the fix (:func:`check_stages`).

What only runs on GPUs (nnU-Net's choice, not changed here): NCCL, ``cuda:<rank>`` devices and the
``DistributedDataParallel(device_ids=[rank])`` wrapper. ``tests/test_ddp.py`` runs everything else
with two ``gloo`` processes on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import pgps
from pgps.nnunet.telemetry import MIXED
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


def same_on_every_rank(value: Any) -> Any:
    """Rank 0's ``value`` on every rank of the process group (a collective call: every rank calls it).

    The schedule must be one for all ranks; a memory probe measured on each rank's GPU could size another one."""
    import torch.distributed as dist

    values = [value]
    dist.broadcast_object_list(values, src=0)
    return values[0]


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
