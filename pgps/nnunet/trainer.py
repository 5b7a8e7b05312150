"""The PGPS curriculum as one mixin for nnU-Net v2's ``nnUNetTrainer``.

The core schedule (:func:`pgps.make_schedule`) decides every stage up front; the mixin asks it
which stage trains the current epoch (RPSS: the current iteration) and, at each stage change,
builds the training transforms and loader for that stage's patch and batch size and shuts the
previous loader's workers down. Every batch is a step of the core's batch plan
(:class:`pgps.sampling.BatchPlanner`, through :class:`pgps.nnunet.sampling.PlannedDataLoader`): the same
on one process or several (DDP, :mod:`pgps.nnunet.ddp`), with or without loader workers, before and after
a resume; the trainer's position in the schedule is a :class:`pgps.Curriculum`, the next step to train.
Validation, checkpoints and inference keep the planned
configuration (``P_max``, ``b_base``): the stage's configuration manager is swapped in only while
the training loader is built.

A published variant is a few class attributes on top (see :mod:`pgps.nnunet.variants`).
Per-epoch telemetry goes to ``pgps_telemetry.csv`` in the fold folder, a run summary to
``pgps_summary.json``, and the curriculum state (position, batch-plan settings, telemetry, RNG states)
into nnU-Net's own checkpoint, so that ``nnUNetv2_train ... --c`` resumes at the exact step.

Checkpoints are crash-safe: every checkpoint (latest, best, final) is written to a temporary file,
fsynced and renamed into place; ``checkpoint_latest.pth`` is written every
``checkpoint_every_epochs`` epochs (nnU-Net's ``save_every``), after ``checkpoint_every_minutes``
of training and with every new best, and is kept until ``checkpoint_final.pth`` exists; ``--c``
never resumes from ``checkpoint_best.pth``.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import math
import os
import pickle
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

import pgps
from pgps.io import atomic_link, atomic_write, atomic_write_text
from pgps.lr import REFERENCE_BATCH_SIZE, scaled_learning_rate
from pgps.nnunet import carbon, compiling, ddp, losses
from pgps.nnunet.batched import AugmentationSpec
from pgps.nnunet.norm import allow_single_voxel_norm
from pgps.nnunet.resample import ResampleTransform
from pgps.nnunet.sampling import PlannedDataLoader, StepQueue, ValidationDataLoader, finish_batch
from pgps.plans import configuration_steps
from pgps.sampling import BatchPlanner, combine_seeds
from pgps.sizes import fmt_size, numel

CHECKPOINT_KEY = "pgps_curriculum"
CHECKPOINT_LATEST, CHECKPOINT_BEST = "checkpoint_latest.pth", "checkpoint_best.pth"
TELEMETRY_FILE = "pgps_telemetry.csv"
SUMMARY_FILE = "pgps_summary.json"
TELEMETRY_COLUMNS = (
    "epoch", "stage", "patch_size", "crop_size", "batch_size", "iterations", "iterated_voxels", "epoch_time_s",
    "compile_time_s", "compilations", "fg_voxel_share", "class_presence_share", "fg_fallbacks", "train_loss",
    "val_loss", "pseudo_dice", "lr",
)  # fmt: skip
TELEMETRY_COLUMNS += carbon.COLUMNS  # CodeCarbon's energy and CO2-eq per training epoch (pgps.nnunet.carbon)
"""Columns of ``pgps_telemetry.csv``, one row per epoch. ``patch_size``, ``batch_size``, ``iterations``,
``iterated_voxels``, the shares and ``fg_fallbacks`` are measured from the batches the network received
(``mixed`` where an epoch saw several shapes: RPSS); ``stage`` and ``crop_size`` are the schedule's.
``epoch_time_s`` excludes validation and the time spent compiling (``compile_time_s``, ``compilations``);
``energy_kwh`` and ``co2_kg`` are CodeCarbon's for the epoch's training (:mod:`pgps.nnunet.carbon`)."""
MIXED = "mixed"


ENV_OVERRIDES = {
    "PGPS_EPOCHS": ("num_epochs", 1),
    "PGPS_ITERATIONS_PER_EPOCH": ("num_iterations_per_epoch", 1),
    "PGPS_VAL_ITERATIONS": ("num_val_iterations_per_epoch", 1),
    "PGPS_SEED": ("curriculum_seed", 0),
    "PGPS_CHECKPOINT_EPOCHS": ("checkpoint_every_epochs", 1),
    "PGPS_CHECKPOINT_MINUTES": ("checkpoint_every_minutes", 0.0),
    "PGPS_PROGRESS_EVERY": ("progress_plot_every", 0),
}
"""Environment overrides (variable -> trainer attribute, smallest allowed value): epochs,
training/validation iterations per epoch (short runs), a seed, how often ``checkpoint_latest.pth``
is written (every N epochs; after M minutes, a number, 0 = only by epochs) and how often nnU-Net
redraws ``progress.png`` (every N epochs and after the last; 0 = never).

``PGPS_SEED`` seeds the batch plan (with the fold); a fresh run also seeds Python's, numpy's and torch's
global generators (nnU-Net itself does not), so that runs with single-process data loading are reproducible;
repeated-seed experiments give each repeat its own seed."""


def _env_int(name: str, value: str, minimum: int | float) -> int | float:
    kind = "integer" if isinstance(minimum, int) else "number"
    try:
        number = type(minimum)(value)
    except ValueError:
        number = minimum - 1
    if not number >= minimum:  # also NaN
        raise ValueError(f"{name} must be a {'positive' if minimum else 'non-negative'} {kind}, got {value!r}")
    return number


_UNREADABLE = (
    "cannot read this checkpoint ({}: {}); it was cut short, e.g. by a kill during its write (the pgps trainers "
    "write checkpoints atomically); remove it to resume from another checkpoint or to start over"
)


class _CurriculumLogger:
    """Wraps nnU-Net's logger so that its checkpoint entry also carries the curriculum state.

    nnU-Net stores ``logger.get_checkpoint()`` under ``checkpoint["logging"]`` and hands it back
    to ``logger.load_checkpoint`` on ``--c``; the wrapped logger never sees the extra key.
    """

    def __init__(self, inner: Any, trainer: PGPSMixin) -> None:
        self._inner = inner
        self._trainer = trainer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_checkpoint(self) -> dict:
        return {**self._inner.get_checkpoint(), CHECKPOINT_KEY: self._trainer.curriculum_state_dict()}

    def load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint = dict(checkpoint)
        state = checkpoint.pop(CHECKPOINT_KEY, None)
        self._inner.load_checkpoint(checkpoint)
        self._trainer.load_curriculum_state_dict(state)

    def plot_progress_png(self, output_folder: str) -> None:
        """nnU-Net's progress plot, drawn every ``progress_plot_every`` epochs and after the last one (never at 0):
        matplotlib takes seconds of CPU per plot, more than a short CPU run's epoch."""
        t = self._trainer
        every, epoch = t.progress_plot_every, t.current_epoch
        if every and ((epoch + 1) % every == 0 or epoch + 1 >= t.num_epochs):
            self._inner.plot_progress_png(output_folder)


class _Telemetry:
    """Batch statistics measured from the tensors the network receives, summed per epoch.

    Shapes come from ``batch["data"]`` (no device synchronisation); the foreground-voxel share and
    the share of foreground classes present are computed on the target's device (the GPU when
    training on one) and stay there until the epoch ends, so telemetry adds one host transfer per
    epoch, not one per iteration. Forced-foreground fallbacks are counted by the loader (every PGPS
    trainer's, :class:`~pgps.nnunet.sampling.PlannedDataLoader`); a batch without the count makes them
    ``None`` (not measured).
    """

    def __init__(self, foreground_labels: list[int], has_regions: bool, ignore_label: int | None = None) -> None:
        self.foreground_labels = sorted(int(label) for label in foreground_labels)
        self.has_regions = has_regions
        # one count per label value up to the largest label (ignore label included); larger values are clamped
        self.bins = max([0, *self.foreground_labels, *([] if ignore_label is None else [int(ignore_label)])]) + 1
        self._labels: dict[torch.device, torch.Tensor] = {}
        self.reset()

    def reset(self) -> None:
        self.iterations = self.voxels = 0
        self.fallbacks: int | None = 0
        self.shapes: dict[tuple[int, ...], int] = {}  # (b, *patch) -> iterations
        self._shares: list[torch.Tensor] = []  # per iteration: [foreground share, class presence share]
        self.compile_time_s = 0.0
        self.compilations = 0

    def add(self, data: torch.Tensor, target: torch.Tensor | list[torch.Tensor], fallbacks: int | None) -> None:
        """Record one training batch: ``data`` (B, C, X, Y, Z), ``target`` (B, 1, X, Y, Z) or its
        deep-supervision list (the full-resolution map first), ``fallbacks`` from the sampler or ``None``."""
        shape = (int(data.shape[0]), *(int(v) for v in data.shape[2:]))
        self.iterations += 1
        self.voxels += math.prod(shape)
        self.shapes[shape] = self.shapes.get(shape, 0) + 1
        self.fallbacks = None if fallbacks is None or self.fallbacks is None else self.fallbacks + int(fallbacks)
        with torch.no_grad():
            self._shares.append(self._batch_shares(target[0] if isinstance(target, (list, tuple)) else target))

    def _batch_shares(self, target: torch.Tensor) -> torch.Tensor:
        if self.has_regions:  # one binary channel per region
            present = target.flatten(2).amax(dim=(0, 2)) > 0
            foreground = (target.amax(dim=1) > 0).float().mean()
            return torch.stack([foreground, present.float().mean()])
        labels = self._labels.get(target.device)
        if labels is None:
            labels = self._labels[target.device] = torch.as_tensor(
                self.foreground_labels, dtype=torch.int64, device=target.device
            )
        seg = target[:, 0].reshape(-1).to(torch.int64).clamp_(0, self.bins - 1)
        counts = torch.zeros(self.bins, dtype=torch.int64, device=seg.device).scatter_add_(0, seg, torch.ones_like(seg))
        per_class = counts[labels]
        foreground = per_class.sum().float() / max(seg.numel(), 1)
        presence = (per_class > 0).float().mean() if len(self.foreground_labels) else foreground.new_zeros(())
        return torch.stack([foreground, presence])

    def epoch_row(self) -> dict[str, Any]:
        """The measured columns of this epoch's telemetry row (one transfer of the shares to the host)."""
        shares = torch.stack(self._shares).float().cpu().numpy() if self._shares else np.full((1, 2), np.nan)
        patches = {shape[1:] for shape in self.shapes}
        batches = {shape[0] for shape in self.shapes}
        return {
            "patch_size": fmt_size(next(iter(patches))) if len(patches) == 1 else MIXED,
            "batch_size": next(iter(batches)) if len(batches) == 1 else MIXED,
            "iterations": self.iterations,
            "iterated_voxels": self.voxels,
            "fg_voxel_share": float(np.mean(shares[:, 0])),
            "class_presence_share": float(np.mean(shares[:, 1])),
            "fg_fallbacks": self.fallbacks,
            "compile_time_s": round(self.compile_time_s, 4),
            "compilations": self.compilations,
        }


class _StageLoader:
    """One stage's :class:`~pgps.nnunet.sampling.PlannedDataLoader` behind nnU-Net's augmenter.

    :meth:`take` returns the batch of exactly the step asked for: batches that workers delivered early
    wait here for their turn (at most the queue's window of them).
    """

    def __init__(self, augmenter: Any, data_loader: PlannedDataLoader, steps: StepQueue) -> None:
        self.augmenter, self.data_loader, self.steps = augmenter, data_loader, steps
        self.early: dict[int, dict] = {}

    def take(self, step: int) -> dict:
        while step not in self.early:
            batch = next(self.augmenter)
            delivered = batch.get("pgps_step")
            if delivered is None:  # a worker released by a closing queue
                continue
            if delivered < step or delivered in self.early:
                raise RuntimeError(f"the loader of stage {self.data_loader.stage_index} delivered step {delivered} "
                                   f"again while step {step} was due")  # fmt: skip
            self.early[delivered] = batch
        self.steps.taken(step)
        return self.early.pop(step)

    def close(self) -> None:
        self.steps.close()
        if hasattr(self.augmenter, "_finish"):
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                self.augmenter._finish()
        self.early.clear()


class _CurriculumBatches:
    """What nnU-Net's training loop calls ``next()`` on: the batch of the curriculum's next step.

    The trainer's :class:`pgps.Curriculum` says which step comes next (and advances when the batch is
    handed out); the stage of that step says which loader makes it. Paced modes keep one loader and
    replace it at a stage change (finishing its workers); RPSS keeps one loader per stage drawn so far.
    """

    def __init__(self, trainer: PGPSMixin) -> None:
        self.trainer = trainer
        self.loaders: dict[int, _StageLoader] = {}
        self.last_index: int | None = None  # stage of the batch returned last

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        t = self.trainer
        curriculum = t.curriculum
        step, index = curriculum.global_step, curriculum.stage_index
        if index not in self.loaders:
            if t.schedule.mode != "rpss":
                self.close()
                t.print_to_log_file(f"PGPS stage {index}/{t.schedule.num_stages - 1}: {t.describe_stage(index)}")
            self.loaders[index] = t.make_train_loader(index)
        batch = finish_batch(self.loaders[index].take(step), t.device)  # batched augmentation deferred to the GPU
        self.last_index = index
        curriculum.step()
        return batch

    def close(self) -> None:
        for loader in self.loaders.values():
            loader.close()
        self.loaders.clear()


class PGPSMixin:
    """Progressive Growing of Patch Size for an ``nnUNetTrainer`` (put it first in the bases).

    Class attributes select the published variant:

    - ``curriculum_mode``: a mode of :data:`pgps.MODES` (``"cps"`` is plain nnU-Net with telemetry);
    - ``batch_sampling``: ``None`` for nnU-Net's own sampling (strategy ``"nnunet"`` of the batch plan), or a
      strategy of :mod:`pgps.sampling` (``"split_crop"``, ``"single_crop"``, ``"multi_crop"``, ``"single_volume"``);
    - ``foreground_share``: forced-foreground share of every batch (``None``: nnU-Net's 33%);
    - ``training_length``: fraction of nnU-Net's 250 iterations per epoch;
    - ``single_voxel_bottleneck``: train the 1x1x1-bottleneck stage (instance norms made to accept it);
    - ``batch_size_cap``: optional upper limit on the batch size; ``curriculum_seed``: batch plan/RPSS seed;
    - ``rpss_pool``: the stages RPSS draws from (:data:`pgps.schedule.RPSS_POOLS`; ``"miccai"``, the paper's);
    - ``batched_augmentation``: with a ``batch_sampling`` strategy, augment each batch at once
      (:mod:`pgps.nnunet.batched`; on the GPU when training on one) instead of patch by patch;
    - ``loss_variant``: a loss of :data:`pgps.nnunet.losses.LOSS_VARIANTS` (``"dice_ce"``: nnU-Net's);
    - ``lr_scaling``: ``None`` (nnU-Net's learning rate), ``"linear"`` or ``"sqrt"`` in the planned batch
      size relative to ``lr_reference_batch_size`` (:func:`pgps.lr.scaled_learning_rate`);
    - ``checkpoint_every_epochs`` / ``checkpoint_every_minutes``: write ``checkpoint_latest.pth`` every
      N epochs (nnU-Net's ``save_every``) and at the end of the first epoch M minutes after the last one
      (0: by epochs only); a new best writes it too.
    - ``progress_plot_every``: redraw nnU-Net's ``progress.png`` every N epochs and after the last
      (nnU-Net: 1; 0 = never).
    """

    curriculum_mode: str = "performance"
    batch_sampling: str | None = "split_crop"
    foreground_share: float | None = 0.5
    training_length: float = 1.0
    single_voxel_bottleneck: bool = True
    batch_size_cap: int | None = None
    curriculum_seed: int = 0
    rpss_pool: str = "miccai"
    batched_augmentation: bool = True
    loss_variant: str = "dice_ce"
    lr_scaling: str | None = None
    lr_reference_batch_size: int = REFERENCE_BATCH_SIZE
    checkpoint_every_epochs: int = 50
    checkpoint_every_minutes: float = 5.0
    progress_plot_every: int = 1

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's signature
    ) -> None:
        self._continue_training = bool(plans.get("continue_training"))  # nnU-Net's --c (its __init__ pops it)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = pgps.iterations_per_epoch(self.training_length)
        # Short runs (CPU demo, tests) without new trainer classes: documented environment overrides.
        for env, (attr, minimum) in ENV_OVERRIDES.items():
            if os.environ.get(env):
                setattr(self, attr, _env_int(env, os.environ[env], minimum))
        self.unscaled_lr = self.initial_lr
        self.initial_lr = scaled_learning_rate(
            self.initial_lr, self.configuration_manager.batch_size, self.lr_reference_batch_size, self.lr_scaling
        )
        self.planned_oversample = self.oversample_foreground_percent
        if self.foreground_share is not None:
            self.oversample_foreground_percent = self.foreground_share
        self.schedule: pgps.Schedule | None = None
        self.curriculum: pgps.Curriculum | None = None  # the position in the schedule: the next step to train
        self.planner: BatchPlanner | None = None  # every step's batch (built with the training split)
        self._saved_planner: dict | None = None  # a checkpoint's planner state, checked against the planner
        lm = self.label_manager
        self.telemetry = _Telemetry(lm.foreground_labels, lm.has_regions, lm.ignore_label)
        self.telemetry_rows: list[dict] = []
        self._resume_state: dict | None = None
        self._rank_rng_states: list[dict] | None = None  # DDP: every rank's RNG states, gathered at each epoch end
        self._epoch_started = 0.0
        self.carbon: carbon.RunCarbon | None = None  # started with the training (on_train_start)
        self._epoch_carbon = dict.fromkeys(carbon.COLUMNS, float("nan"))
        self.logger = _CurriculumLogger(self.logger, self)
        self.save_every = self.checkpoint_every_epochs  # nnU-Net writes checkpoint_latest.pth by this epoch count
        self._latest_saved = (-1, time.monotonic())  # (epoch, when) of the last checkpoint_latest.pth
        self._training_ended = False

    # -- the schedule ---------------------------------------------------------------------------
    def curriculum_steps(self) -> tuple[int, int, int]:
        """Per-axis step of the planned configuration (:func:`pgps.plans.configuration_steps`: ``2**k`` for ``k``
        stride-2 downsamplings of a U-Net; backbones add their own checks)."""
        return configuration_steps(self.configuration_manager.configuration, self.configuration_name)

    def build_schedule(self) -> pgps.Schedule:
        cm = self.configuration_manager
        if len(cm.patch_size) != 3:
            raise ValueError(f"PGPS needs a 3D configuration; {self.configuration_name} has patch size {cm.patch_size}")
        try:
            return pgps.make_schedule(
                self.curriculum_mode,
                cm.patch_size,
                self.curriculum_steps(),
                cm.batch_size,
                epochs=self.num_epochs,
                iterations_per_epoch=self.num_iterations_per_epoch,
                single_voxel_bottleneck=self.single_voxel_bottleneck,
                batch_size_cap=self.batch_size_cap,
                seed=self.curriculum_seed,
                rpss_pool=self.rpss_pool,
            )
        except ValueError as exc:
            raise ValueError(
                f"cannot build the PGPS schedule from the plans ({self.configuration_name}): {exc}"
            ) from exc

    def describe_stage(self, index: int) -> str:
        s = self.schedule.stages[index]
        crop = f", crop {fmt_size(s.crop_size)}" if s.crop_size != s.patch_size else ""
        return f"patch {fmt_size(s.patch_size)}{crop}, batch {s.batch_size}, {s.epochs} epochs"

    def initialize(self) -> None:
        self.schedule = self.build_schedule()
        self.training_foreground_share = self.oversample_foreground_percent  # nnU-Net rewrites it per rank under DDP
        if self.is_ddp:  # pgps.nnunet.ddp: rank 0's schedule on every rank; every stage's global batch split over them
            self.schedule = ddp.same_on_every_rank(self.schedule)
            ddp.check_stages(self.schedule, self.world_size, self.describe_stage)
        self.curriculum = pgps.Curriculum(self.schedule)
        self._planned_voxels = {  # fixed by the schedule: computed once, reported in every summary
            "planned_iterated_voxels": pgps.iterated_voxels(self.schedule),
            "planned_relative_voxels": pgps.relative_voxels(self.schedule),
            "cps_voxels_per_epoch": self.schedule.iterations_per_epoch
            * self.schedule.batch_size_base
            * numel(self.schedule.patch_size_max),
        }
        super().initialize()
        if self.single_voxel_bottleneck:
            allow_single_voxel_norm(self.network)
        from pgps.nnunet.light import MEMORY_FORMAT_KEY, use_channels_last_3d

        if self.configuration_manager.configuration.get(MEMORY_FORMAT_KEY) == "channels_last_3d":
            use_channels_last_3d(self.network)  # this network only: parameters and inputs (pgps.nnunet.light)
            self.print_to_log_file("PGPS: network in channels_last_3d memory format")
        self._set_up_compilation()
        self.print_to_log_file(f"PGPS curriculum:\n{self.schedule.table()}", also_print_to_console=True)

    # -- torch.compile (pgps.nnunet.compiling) ------------------------------------------------------
    def _do_i_compile(self) -> bool:
        """nnU-Net's own compilation (network and Dice loss, dynamic shapes) is replaced by the stage-wise
        policy of :mod:`pgps.nnunet.compiling` (:meth:`_set_up_compilation`)."""
        return False

    def _set_up_compilation(self) -> None:
        self._eager_network = self.network
        self._compiled_network = None
        self._compiled_stages = [False] * self.schedule.num_stages
        if not compiling.compile_wanted(self.device):
            return
        floor = compiling.min_iterations()
        self._compiled_stages = [n >= floor for n in pgps.iterations_per_stage(self.schedule)]
        if any(self._compiled_stages):
            graphs = self.schedule.num_stages + compiling.EXTRA_GRAPHS
            self._compiled_network = compiling.compile_network(self.network, graphs)
        eager = [i for i, c in enumerate(self._compiled_stages) if not c]
        self.print_to_log_file(
            f"PGPS: torch.compile, static shapes, one compilation per stage; stages run eager (fewer than {floor} "
            f"iterations): {eager or 'none'}",
            also_print_to_console=True,
        )

    def network_for_stage(self, index: int) -> torch.nn.Module:
        """The network that trains stage ``index``: compiled, or eager where compiling cannot pay off."""
        compiled = getattr(self, "_compiled_network", None)
        return compiled if compiled is not None and self._compiled_stages[index] else self._eager_network

    # -- loss (pgps.nnunet.losses) ---------------------------------------------------------------
    def _build_loss(self):
        """nnU-Net's loss (Dice + CE, deep supervision) as this trainer's ``loss_variant``."""
        lm = self.label_manager
        return losses.vary_loss(
            super()._build_loss(), self.loss_variant, has_regions=lm.has_regions, ignore_label=lm.ignore_label,
            batch_dice=self.configuration_manager.batch_dice, is_ddp=self.is_ddp,
        )  # fmt: skip

    # -- loaders ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stage_configuration(self, stage: pgps.Stage):
        """Temporarily present the stage's patch and batch size as the configuration (never mutates the plan)."""
        planned = self.configuration_manager
        stage_config = {**planned.configuration, "patch_size": list(stage.crop_size), "batch_size": stage.batch_size}
        self.configuration_manager = ConfigurationManager(stage_config)
        try:
            yield
        finally:
            self.configuration_manager = planned

    @property
    def world_size(self) -> int:
        """Processes (GPUs) of a DDP run; 1 otherwise."""
        return torch.distributed.get_world_size() if self.is_ddp else 1

    def _augmenter(self, loader, processes: int, cached: int):
        """nnU-Net's augmenters: in this process without workers, else ``NonDetMultiThreadedAugmenter`` (its order
        does not matter: training batches carry their step, the trainer takes them in order)."""
        if processes == 0:
            return SingleThreadedAugmenter(loader, None)
        return NonDetMultiThreadedAugmenter(
            data_loader=loader,
            transform=None,
            num_processes=processes,
            num_cached=cached,
            seeds=None,
            pin_memory=self.device.type == "cuda",
            wait_time=0.002,
        )

    @staticmethod
    def loader_processes(processes: int, loaders: int = 1) -> tuple[int, int]:
        """Worker processes and nnU-Net's cache size (``max(6, workers // 2)``) of one of ``loaders`` loaders
        sharing ``processes`` workers (RPSS keeps one loader per stage)."""
        workers = max(1, processes // loaders) if processes else 0
        return workers, max(6, workers // 2)

    def batch_planner(self, num_cases: int) -> BatchPlanner:
        """The batch plan of this run over ``num_cases`` training cases: the trainer's strategy (``"nnunet"``:
        nnU-Net's own sampling), forced-foreground share and seed (curriculum seed and fold)."""
        return BatchPlanner(
            self.schedule,
            num_cases,
            strategy=self.batch_sampling or "nnunet",
            foreground_share=self.training_foreground_share,
            seed=combine_seeds(self.curriculum_seed, self._fold_number()),
            probabilistic_oversampling=self.batch_sampling is None and self.probabilistic_oversampling,
        )

    def make_train_loader(self, index: int) -> _StageLoader:
        """Training transforms, loader and augmenter for stage ``index``, from the curriculum's next step on."""
        stage = self.schedule.stages[index]
        with self._stage_configuration(stage):
            rotation, dummy_2d, initial_patch_size, mirror_axes = (
                self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
            )
            resample = stage.crop_size != stage.patch_size  # Progressive Resolution
            ds_scales = self._get_deep_supervision_scales()
            args = (stage.crop_size, rotation, None if resample else ds_scales, mirror_axes, dummy_2d)
            kwargs = {
                "use_mask_for_norm": self.configuration_manager.use_mask_for_norm,
                "is_cascaded": self.is_cascaded,
                "foreground_labels": self.label_manager.foreground_labels,
                "regions": self.label_manager.foreground_regions if self.label_manager.has_regions else None,
                "ignore_label": self.label_manager.ignore_label,
            }
            transforms = self.get_training_transforms(*args, **kwargs)
            spec = self.batched_augmentation_spec(*args, **kwargs) if not resample else None
        if resample:
            steps = [ResampleTransform(stage.patch_size)]
            if ds_scales is not None:
                steps.append(DownsampleSegForDSTransform(ds_scales=ds_scales))
            transforms = ComposeTransforms([transforms, *steps])
        processes, cached = self.loader_processes(
            get_allowed_n_proc_DA(), self.schedule.num_stages if self.schedule.mode == "rpss" else 1
        )
        planner = self.batch_planner(len(self.dataset_tr.identifiers))
        # workers run ahead by at most their number plus nnU-Net's cache: the batches of a rank in memory at once
        window = processes + cached if processes else 1
        queue = StepQueue(planner.stage_steps(index, self.curriculum.global_step), window)
        loader = PlannedDataLoader(
            self.dataset_tr,
            planner,
            index,
            initial_patch_size,
            stage.crop_size,
            self.label_manager,
            steps=queue,
            rank=self.local_rank,
            world_size=self.world_size,
            transforms=None if spec else transforms,
            augmentation=spec,
            defer_augmentation=spec is not None and self.device.type == "cuda",
        )
        return _StageLoader(self._augmenter(loader, processes, cached), loader, queue)

    def batched_augmentation_spec(self, *args, **kwargs) -> AugmentationSpec | None:
        """``get_training_transforms``'s arguments as a batched spec, or ``None`` for nnU-Net's per-sample
        transforms: when switched off, for cascades, and for trainers that override ``get_training_transforms``."""
        if not self.batched_augmentation or self.batch_sampling is None or kwargs.get("is_cascaded"):
            return None
        if type(self).get_training_transforms is not nnUNetTrainer.get_training_transforms:
            return None
        return AugmentationSpec.from_transform_args(*args, **kwargs)

    def get_dataloaders(self):
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        self.dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        try:  # fails before training, naming the stage, when a strategy cannot build a stage's batch
            self.planner = self.batch_planner(len(self.dataset_tr.identifiers))
        except ValueError as exc:
            raise ValueError(f"PGPS {exc}") from exc
        if self._saved_planner is not None:  # --c: the checkpoint's batches, or a clear refusal
            self.planner.check_state(self._saved_planner)
        cm = self.configuration_manager  # the planned configuration: P_max, b_base
        val_transforms = self.get_validation_transforms(
            self._get_deep_supervision_scales(),
            is_cascaded=self.is_cascaded,
            foreground_labels=self.label_manager.foreground_labels,
            regions=self.label_manager.foreground_regions if self.label_manager.has_regions else None,
            ignore_label=self.label_manager.ignore_label,
        )
        share = self.planned_oversample
        if self.is_ddp:  # nnU-Net's per-rank validation batch (self.batch_size) and its share of the forced rows
            share = ddp.rank_foreground_share(cm.batch_size, share, self.local_rank, self.world_size)
        dl_val = ValidationDataLoader(
            dataset_val,
            self.batch_size if self.is_ddp else cm.batch_size,
            cm.patch_size,
            cm.patch_size,
            self.label_manager,
            oversample_foreground_percent=share,
            transforms=val_transforms,
            probabilistic_oversampling=self.probabilistic_oversampling,
        )
        processes = get_allowed_n_proc_DA()
        val = self._augmenter(dl_val, max(1, processes // 2) if processes else 0, max(3, processes // 4))
        return _CurriculumBatches(self), val

    # -- the training loop hooks --------------------------------------------------------------------
    def on_train_start(self) -> None:
        if os.environ.get("PGPS_SEED") and self._resume_state is None:
            seed = self.curriculum_seed
            # under DDP each rank's own augmentation draws (patches come from the shared plan, pgps.nnunet.ddp)
            random.seed(f"{seed}/{self.local_rank}" if self.is_ddp else seed)
            np.random.seed([seed, self.local_rank] if self.is_ddp else seed)
            torch.manual_seed(seed)
        super().on_train_start()
        self.carbon = self._carbon_tracker()
        if self.local_rank == 0:
            for stray in glob.glob(os.path.join(glob.escape(self.output_folder), "checkpoint_*.pth.tmp*")):
                os.remove(stray)  # half-written by a killed run; the checkpoint it was to replace is intact
            if self._resume_state is not None:  # the epochs of the checkpoint, without those a kill lost
                self.write_telemetry()
        self._latest_saved = (self.current_epoch - 1, time.monotonic())

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self._resume_state is not None and self._resume_state.get("rng") is not None:
            rng = self._resume_state["rng"]
            if isinstance(rng, list):  # a DDP checkpoint: this rank's (a run resumed on more GPUs keeps the rest fresh)
                rng = rng[self.local_rank] if self.local_rank < len(rng) else None
            if rng is not None:
                self._restore_rng(rng)
            self._resume_state["rng"] = None
        self.curriculum.seek(self.current_epoch)  # nnU-Net's loop sets the epoch; the curriculum's steps follow it
        losses.loss_weights_for_epoch(self.loss, self.current_epoch, self.num_epochs)  # scheduled weights only
        self.telemetry.reset()
        self.carbon.start_epoch(self._carbon_task())
        self._epoch_started = time.perf_counter()

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's step, after measuring the batch the network receives (on the training device, where
        nnU-Net's step would move it first) and choosing the stage's network; compilation is timed apart."""
        batches = self.dataloader_train
        last = getattr(batches, "last_index", None)
        self.network = self.network_for_stage(self.schedule.num_stages - 1 if last is None else last)
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        if isinstance(target, list):
            target = [t.to(self.device, non_blocking=True) for t in target]
        else:
            target = target.to(self.device, non_blocking=True)
        batch = {**batch, "data": data, "target": target}
        self.telemetry.add(data, target, batch.get("pgps_fg_fallbacks"))
        before = compiling.CompileCounters.now()
        try:
            out = super().train_step(batch)
        except (IndexError, RuntimeError) as exc:  # e.g. a label value dataset.json does not declare: name the case
            problem = self.label_problem(batch)
            if problem:
                raise ValueError(problem) from exc
            raise
        spent = compiling.CompileCounters.now() - before
        self.telemetry.compile_time_s += spent.seconds
        self.telemetry.compilations += spent.compilations
        return out

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        self._epoch_time = time.perf_counter() - self._epoch_started - self.telemetry.compile_time_s
        self._epoch_carbon = self.carbon.end_epoch()
        super().on_train_epoch_end(train_outputs)

    def on_validation_epoch_start(self) -> None:
        self.network = self.network_for_stage(self.schedule.num_stages - 1)  # validation and inference at P_max
        super().on_validation_epoch_start()

    def on_epoch_end(self) -> None:
        epoch = self.current_epoch
        index = self.schedule.stage_index(epoch) if self.schedule.mode != "rpss" else -1
        log = self.logger.get_value
        measured = {"epoch_time_s": round(self._epoch_time, 4), **self.telemetry.epoch_row()}
        if self.is_ddp:  # the global batch's row from every rank's; every rank's RNG states for the checkpoint
            gathered = [None] * self.world_size
            torch.distributed.all_gather_object(gathered, (measured, self._rng_state()))
            measured = ddp.combine_rows([m for m, _ in gathered])
            measured["epoch_time_s"] = max(m["epoch_time_s"] for m, _ in gathered)
            self._rank_rng_states = [rng for _, rng in gathered]
        self.telemetry_rows.append(
            {
                "epoch": epoch,
                "stage": index,
                "crop_size": fmt_size(self.schedule.stages[index].crop_size) if index >= 0 else MIXED,
                **measured,
                "train_loss": float(log("train_losses", step=-1)),
                "val_loss": float(log("val_losses", step=-1)),
                "pseudo_dice": float(log("mean_fg_dice", step=-1)),
                "lr": float(log("lrs", step=-1)),
                **self._epoch_carbon,
            }
        )
        if self.local_rank == 0:
            self.write_telemetry()
        super().on_epoch_end()  # nnU-Net: checkpoint_latest by epoch count, checkpoint_best; current_epoch += 1
        self._maybe_save_latest_by_time(epoch)

    def on_train_end(self) -> None:
        if self.dataloader_train is not None:
            self.dataloader_train.close()
        if self.carbon is not None:
            self.carbon.close()
        super().on_train_end()  # checkpoint_final, then nnU-Net removes checkpoint_latest
        self._training_ended = True

    # -- telemetry ------------------------------------------------------------------------------
    def write_telemetry(self) -> None:
        """Write the per-epoch table and the run summary (both atomically) into the fold folder."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=TELEMETRY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.telemetry_rows)
        atomic_write_text(os.path.join(self.output_folder, TELEMETRY_FILE), buf.getvalue())
        atomic_write_text(os.path.join(self.output_folder, SUMMARY_FILE), json.dumps(self.summary(), indent=2))

    def summary(self) -> dict:
        """Inputs of the virtual relative runtime (SPEC section 2) and the run's voxel totals."""
        rows = self.telemetry_rows
        last = self.schedule.num_stages - 1
        p_max_times = [r["epoch_time_s"] for r in rows if r["stage"] == last]
        fallbacks = [r["fg_fallbacks"] for r in rows]
        measured = all(f not in (None, "") for f in fallbacks)
        return {
            "trainer": self.__class__.__name__,
            "mode": self.schedule.mode,
            "gpus": self.world_size,  # DDP processes; batch sizes and voxels are the global batch's
            "schedule": self.schedule.to_dict(),
            "epochs_done": len(rows),
            "train_time_s": sum(r["epoch_time_s"] for r in rows),
            "p_max_epochs_done": len(p_max_times),
            "p_max_mean_epoch_time_s": float(np.mean(p_max_times)) if p_max_times else None,
            "iterated_voxels": sum(r["iterated_voxels"] for r in rows),
            **self._planned_voxels,
            "fg_fallbacks": sum(int(f) for f in fallbacks) if measured else None,  # None: not measured
            "compile_time_s": sum(float(r.get("compile_time_s") or 0) for r in rows),
            "compilations": sum(int(r.get("compilations") or 0) for r in rows),
            "loss": losses.describe_loss(self.loss, self.loss_variant),
            "learning_rate": {
                "initial_lr": self.initial_lr,
                "nnunet_lr": self.unscaled_lr,
                "scaling": self.lr_scaling,  # None: nnU-Net's learning rate, as the articles train
                "batch_size": self.configuration_manager.batch_size,
                "reference_batch_size": self.lr_reference_batch_size,
            },
            **carbon.totals(rows),
        }

    # -- energy and CO2 (pgps.nnunet.carbon) --------------------------------------------------------------
    def _carbon_task(self) -> str:
        """CodeCarbon's task name for this epoch: its stage (RPSS draws one per iteration)."""
        return "rpss" if self.schedule.mode == "rpss" else f"stage {self.schedule.stage_index(self.current_epoch)}"

    def _carbon_tracker(self) -> carbon.RunCarbon:
        """CodeCarbon for this run, on the main process only (a disabled one elsewhere)."""
        gpu = [self.device.index or 0] if self.device.type == "cuda" else None
        mode = "off" if self.local_rank != 0 else None
        return carbon.RunCarbon(self.output_folder, type(self).__name__, gpu, mode, log=self.print_to_log_file)

    # -- checkpoints: atomic, frequent, never resumed from "best" ------------------------------------
    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written atomically (temporary file, fsync, rename): a kill at any
        instant leaves the previous checkpoint loadable. ``checkpoint_best.pth`` is a second name of a
        ``checkpoint_latest.pth`` written with it, so that the latest state is never older than the best."""
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)
            return
        folder, name = os.path.split(filename)
        if name == CHECKPOINT_BEST:
            latest = os.path.join(folder, CHECKPOINT_LATEST)
            if self._latest_saved[0] != self.current_epoch:
                self.save_checkpoint(latest)
            atomic_link(latest, filename)
            return
        atomic_write(filename, super().save_checkpoint)
        if name == CHECKPOINT_LATEST:
            self._latest_saved = (self.current_epoch, time.monotonic())

    def _maybe_save_latest_by_time(self, epoch: int) -> None:
        """After epoch ``epoch`` (nnU-Net has moved ``current_epoch`` on): write ``checkpoint_latest.pth``
        when ``checkpoint_every_minutes`` have passed since the last one (the last epoch gets the final one)."""
        minutes = self.checkpoint_every_minutes
        last_epoch, when = self._latest_saved
        if not minutes or epoch >= self.num_epochs - 1 or last_epoch == epoch:
            return
        if time.monotonic() - when >= 60 * minutes:
            self.current_epoch -= 1  # the state after `epoch`, as nnU-Net's on_train_end does for the final one
            try:
                self.save_checkpoint(os.path.join(self.output_folder, CHECKPOINT_LATEST))
            finally:
                self.current_epoch += 1

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """nnU-Net's ``load_checkpoint``, refusing to continue a training (``--c``) from ``checkpoint_best.pth``
        (an earlier state than the last) and naming a checkpoint that cannot be read."""
        if isinstance(filename_or_checkpoint, str):
            path = filename_or_checkpoint
            if os.path.basename(path) == CHECKPOINT_BEST and self._continue_training and not self._training_ended:
                raise RuntimeError(
                    f"{path}: refusing to continue training from checkpoint_best.pth (the best pseudo-Dice, not "
                    "the last state), because checkpoint_latest.pth and checkpoint_final.pth are missing; remove "
                    "the fold folder to train from scratch"
                )
            try:
                super().load_checkpoint(path)
            except (EOFError, pickle.UnpicklingError) as exc:
                raise RuntimeError(f"{path}: {_UNREADABLE.format(type(exc).__name__, exc)}") from exc
            except RuntimeError as exc:
                if "PytorchStreamReader" in str(exc) or "zip archive" in str(exc):
                    raise RuntimeError(f"{path}: {_UNREADABLE.format(type(exc).__name__, exc)}") from exc
                raise RuntimeError(f"{path}: {exc}") from exc
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from exc
            return
        super().load_checkpoint(filename_or_checkpoint)

    # -- checkpoint state -------------------------------------------------------------------------
    def _rng_state(self) -> dict:
        state = {"numpy": np.random.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()}
        if self.device.type == "cuda" and torch.cuda.is_initialized():  # CPU runs never touch torch.cuda
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore_rng(self, state: dict) -> None:
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        if state.get("cuda") is not None and self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _fold_number(self) -> int:
        """The fold as a seed component (nnU-Net's fold ``"all"`` is 5)."""
        return self.fold if isinstance(self.fold, int) else 5

    def curriculum_state_dict(self) -> dict:
        """What goes into nnU-Net's checkpoint: the curriculum's position (the next step to train, with its
        schedule), the batch planner's settings, the telemetry and the random states (numpy's, torch's, Python's
        and CUDA's on a GPU; under DDP one set per rank). Batches need no state of their own: a step's batch is
        a function of the planner's settings and the step."""
        return {
            "curriculum": self.curriculum.state_dict() if self.curriculum else None,
            "planner": self.planner.state() if self.planner else self._saved_planner,
            "telemetry": list(self.telemetry_rows),
            "rng": self._rank_rng_states or self._rng_state(),  # DDP: one per rank
        }

    def load_curriculum_state_dict(self, state: dict | None) -> None:
        if state is None:
            self.print_to_log_file("PGPS: the checkpoint has no curriculum state; starting the telemetry afresh")
            return
        position = state.get("curriculum")
        if position is None:  # a checkpoint of pgps before the one batch plan: its schedule and next epoch
            position = {"schedule": state["schedule"], "epoch": state["epoch"], "iteration": 0}
            self.print_to_log_file("PGPS: a checkpoint of an earlier pgps; the batches from here are the planner's")
        self.curriculum = pgps.Curriculum(self.schedule)
        try:
            self.curriculum.load_state_dict(position)
        except ValueError as exc:
            raise ValueError(
                f"{exc}\nResume with the same trainer, plans, configuration and PGPS_* settings, or remove the fold "
                "folder to train it anew."
            ) from None
        self._saved_planner = state.get("planner")
        epoch = self.curriculum.epoch
        self.telemetry_rows = [r for r in state["telemetry"] if r["epoch"] < epoch]
        self._resume_state = state
        index = self.schedule.stage_index(min(epoch, self.schedule.epochs - 1))
        self.print_to_log_file(f"PGPS: resuming at epoch {epoch}, stage {index}")

    # -- input errors -------------------------------------------------------------------------------
    def label_problem(self, batch: dict) -> str | None:
        """Which cases of a training batch hold label values ``dataset.json`` does not declare (None if none)."""
        if self.label_manager.has_regions:
            return None
        target = batch.get("target")
        target = target[0] if isinstance(target, list) else target
        if not isinstance(target, torch.Tensor):
            return None
        try:
            target = target.detach().cpu()
        except RuntimeError:  # the device is no longer usable (a CUDA assert): nothing more to say
            return None
        allowed = torch.as_tensor(sorted(self.label_manager.all_labels), dtype=torch.int64)
        keys = list(batch.get("keys", []))
        bad_values: set[int] = set()
        cases: list[str] = []
        for j in range(target.shape[0]):
            values = torch.unique(target[j].to(torch.int64))
            bad = values[~torch.isin(values, allowed)].tolist()
            if bad:
                bad_values.update(bad)
                case = str(keys[j]) if j < len(keys) else f"sample {j}"
                if case not in cases:
                    cases.append(case)
        if not cases:
            return None
        return (
            f"training case(s) {', '.join(cases)} hold label value(s) {sorted(bad_values)} that dataset.json does "
            f"not declare (labels {sorted(self.label_manager.all_labels)}); fix the labels (pgps convert checks "
            "them) and run nnU-Net's preprocessing again"
        )
