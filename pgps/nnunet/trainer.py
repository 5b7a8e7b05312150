"""The PGPS curriculum as one mixin for nnU-Net v2's ``nnUNetTrainer``.

The core schedule (:func:`pgps.make_schedule`) decides every stage up front; the mixin asks it
which stage trains the current epoch (RPSS: the current iteration) and, at each stage change,
builds the training transforms and loader for that stage's patch and batch size and shuts the
previous loader's workers down. Every batch is a step of the core's batch plan
(:class:`pgps.sampling.BatchPlanner`, through :class:`pgps.nnunet.loading.sampling.PlannedDataLoader`): the same
on one process or several (DDP, :mod:`pgps.nnunet.ddp`), with or without loader workers, before and after
a resume; the trainer's position in the schedule is a :class:`pgps.Curriculum`, the next step to train.
Validation, checkpoints and inference keep the planned
configuration (``P_max``, ``b_base``): the stage's configuration manager is swapped in only while
the training loader is built.

The mixin composes its parts, each a module of its own: the telemetry (:mod:`pgps.nnunet.telemetry`), the
checkpoints and resume (:mod:`pgps.nnunet.checkpoints`), the stage-wise compilation (:mod:`pgps.nnunet.compiling`),
energy (:mod:`pgps.nnunet.carbon`) and the batches of the training loop (:mod:`pgps.nnunet.loading.batches`).
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
import glob
import multiprocessing
import os
import random
import sys
import time

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
from pgps.lr import REFERENCE_BATCH_SIZE, scaled_learning_rate
from pgps.nnunet import carbon, compiling, cpu_autocast, ddp, inputs, losses, preemption, runlock
from pgps.nnunet.carbon import CarbonMixin
from pgps.nnunet.checkpoints import CHECKPOINT_LATEST, CheckpointMixin, CurriculumLogger
from pgps.nnunet.compiling import CompileMixin
from pgps.nnunet.loading.batched import AugmentationSpec
from pgps.nnunet.loading.batches import CurriculumBatches, StageLoader
from pgps.nnunet.loading.resample import ResampleTransform
from pgps.nnunet.loading.sampling import PlannedDataLoader, StepQueue, ValidationDataLoader
from pgps.nnunet.norm import allow_single_voxel_norm, use_group_norm
from pgps.nnunet.telemetry import MIXED, Telemetry, TelemetryMixin
from pgps.plans import configuration_steps
from pgps.processes import spawn_as_fork
from pgps.sampling import BatchPlanner, combine_seeds
from pgps.sizes import fmt_size, numel

if os.path.basename(sys.argv[0]).startswith("nnUNetv2_train"):  # not in a user's own Python session
    inputs.install_excepthook()  # a damaged input is one line naming it, exit 2

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


def fork_loader_workers(log) -> None:
    """Start loader workers by fork in a DDP rank, as nnU-Net's single-process training does on Linux.

    ``torch.multiprocessing.spawn`` makes ``spawn`` the default start method of its rank processes, so every
    augmentation worker would import torch and nnU-Net anew: a PGPS trainer starts new workers at each stage,
    which then stalls each rank for seconds (11 s per stage with two workers per rank on the 2-core CPU). The
    workers use no CUDA and no process group; they only read the dataset and augment on the CPU."""
    if sys.platform.startswith("linux") and multiprocessing.get_start_method(allow_none=True) == "spawn":
        multiprocessing.set_start_method("fork", force=True)
        log("PGPS: loader workers start by fork in this DDP rank (its processes were spawned)")


class PGPSMixin(CheckpointMixin, TelemetryMixin, CompileMixin, CarbonMixin):
    """Progressive Growing of Patch Size for an ``nnUNetTrainer`` (put it first in the bases).

    Class attributes select the published variant:

    - ``curriculum_mode``: a mode of :data:`pgps.MODES` (``"cps"`` is plain nnU-Net with telemetry);
    - ``batch_sampling``: ``None`` for nnU-Net's own sampling (strategy ``"nnunet"`` of the batch plan), or a
      strategy of :mod:`pgps.sampling` (``"split_crop"``, ``"single_crop"``, ``"multi_crop"``, ``"single_volume"``);
    - ``foreground_share``: forced-foreground share of every batch (``None``: nnU-Net's 33%);
    - ``training_length``: fraction of nnU-Net's 250 iterations per epoch;
    - ``single_voxel_bottleneck``: train the 1x1x1-bottleneck stage (instance norms made to accept it);
    - ``prefetch_batches``: on the CPU without loader workers, make the next training batch in a background thread
      while the current step computes (:mod:`pgps.nnunet.loading.batches`; resumes stay exact);
    - ``group_norm_on_channels_last``: on a ``channels_last_3d`` network, compute the instance norms as group norms
      with one group per channel (the same maths without layout copies: :mod:`pgps.nnunet.norm`; in float32 only:
      under the opt-in bfloat16 autocast torch's CPU group norm is the slower one);
    - ``batch_size_cap``: optional upper limit on the batch size; ``curriculum_seed``: batch plan/RPSS seed;
    - ``rpss_pool``: the stages RPSS draws from (:data:`pgps.schedule.RPSS_POOLS`; ``"miccai"``, the paper's);
    - ``batched_augmentation``: with a ``batch_sampling`` strategy, augment each batch at once
      (:mod:`pgps.nnunet.loading.batched`; on the GPU when training on one) instead of patch by patch;
    - ``loss_variant``: a loss of :data:`pgps.nnunet.losses.LOSS_VARIANTS` (``"dice_ce"``: nnU-Net's);
      ``focal_alpha``: the focal loss's class weight (``dice_focal`` only; None, the default: none; Lin et al.'s
      RetinaNet value is 0.25);
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
    group_norm_on_channels_last: bool = True
    prefetch_batches: bool = True
    cpu_bf16: bool = False  # set by initialize from PGPS_CPU_AUTOCAST (pgps.nnunet.cpu_autocast), not a setting
    batch_size_cap: int | None = None
    curriculum_seed: int = 0
    rpss_pool: str = "miccai"
    batched_augmentation: bool = True
    loss_variant: str = "dice_ce"
    focal_alpha: float | None = None
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
        self.telemetry = Telemetry(lm.foreground_labels, lm.has_regions, lm.ignore_label)
        self.telemetry_rows: list[dict] = []
        self._resume_state: dict | None = None
        self._rank_rng_states: list[dict] | None = None  # DDP: every rank's RNG states, gathered at each epoch end
        self._epoch_started = 0.0
        self.carbon: carbon.RunCarbon | None = None  # started with the training (on_train_start)
        self._epoch_carbon = dict.fromkeys(carbon.COLUMNS, float("nan"))
        self.logger = CurriculumLogger(self.logger, self)
        self.save_every = self.checkpoint_every_epochs  # nnU-Net writes checkpoint_latest.pth by this epoch count
        self._latest_saved = (-1, time.monotonic())  # (epoch, when) of the last checkpoint_latest.pth
        self._training_ended = False
        self._stop: preemption.GracefulStop | None = None  # installed by run_training (pgps.nnunet.preemption)
        self._partial_epoch: dict | None = None  # the epoch's iterations so far, in a checkpoint written on a stop

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
        if self.local_rank == 0 and getattr(self, "_run_lock", None) is None:  # one trainer per fold folder
            self._run_lock = runlock.hold_or_exit(self.output_folder)
        self.cpu_bf16 = cpu_autocast.enabled(self.device)  # PGPS_CPU_AUTOCAST=bf16 (pgps.nnunet.cpu_autocast)
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
        for note in self.prepare_network(self.network):
            self.print_to_log_file(f"PGPS: {note}")
        self._set_up_compilation()
        self.print_to_log_file(f"PGPS curriculum:\n{self.schedule.table()}", also_print_to_console=True)

    def prepare_network(self, network: torch.nn.Module) -> list[str]:
        """Make ``network`` (built from this trainer's plans) train as the curriculum needs, in place; returns what
        was done, for the log. Its instance norms accept the 1x1x1 bottleneck (``single_voxel_bottleneck``); a
        ``channels_last_3d`` configuration (:mod:`pgps.nnunet.light`) converts it to that format and its instance
        norms to the equivalent group norms, which keep that layout (``group_norm_on_channels_last``,
        :func:`pgps.nnunet.norm.use_group_norm`); bfloat16 autocast on the CPU guards its convolutions
        (:func:`pgps.nnunet.cpu_autocast.prepare`)."""
        from pgps.nnunet.light import MEMORY_FORMAT_KEY, use_channels_last_3d

        notes = []
        if self.single_voxel_bottleneck:
            allow_single_voxel_norm(network)
        if self.configuration_manager.configuration.get(MEMORY_FORMAT_KEY) == "channels_last_3d":
            # not under bfloat16 autocast: there torch's CPU group norm is the slower one (benchmarks/demo_step.py)
            if self.group_norm_on_channels_last and not self.cpu_bf16 and (count := use_group_norm(network)):
                notes.append(f"{count} instance norms computed as group norms (one group per channel)")
            use_channels_last_3d(network)  # this network only: parameters and inputs (pgps.nnunet.light)
            notes.append("network in channels_last_3d memory format")
        if self.cpu_bf16:
            count = cpu_autocast.prepare(network)
            notes.append(
                f"training and validation steps under bfloat16 autocast on the CPU ({cpu_autocast.ENV}=bf16); "
                f"{count} convolutions compute in float32 on depth-2 inputs"
            )
        return notes

    # -- loss (pgps.nnunet.losses) ---------------------------------------------------------------
    def _build_loss(self):
        """nnU-Net's loss (Dice + CE, deep supervision) as this trainer's ``loss_variant``."""
        lm = self.label_manager
        return losses.vary_loss(
            super()._build_loss(), self.loss_variant, has_regions=lm.has_regions, ignore_label=lm.ignore_label,
            batch_dice=self.configuration_manager.batch_dice, is_ddp=self.is_ddp, focal_alpha=self.focal_alpha,
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

    def make_train_loader(self, index: int) -> StageLoader:
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
        return StageLoader(self._augmenter(loader, processes, cached), loader, queue)

    def batched_augmentation_spec(self, *args, **kwargs) -> AugmentationSpec | None:
        """``get_training_transforms``'s arguments as a batched spec, or ``None`` for nnU-Net's per-sample
        transforms: when switched off, for cascades, and for trainers that override ``get_training_transforms``."""
        if not self.batched_augmentation or self.batch_sampling is None or kwargs.get("is_cascaded"):
            return None
        if type(self).get_training_transforms is not nnUNetTrainer.get_training_transforms:
            return None
        return AugmentationSpec.from_transform_args(*args, **kwargs)

    def get_dataloaders(self):
        if self.is_ddp:
            fork_loader_workers(self.print_to_log_file)
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        self.dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        # a damaged case's properties fail now, naming the file, not when a batch first draws the case
        inputs.check_case_files(self.preprocessed_dataset_folder, [*self.dataset_tr.identifiers,
                                                                   *dataset_val.identifiers])  # fmt: skip
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
        # without workers on the CPU, the next batch is made while the step computes (pgps.nnunet.loading.batches)
        prefetch = self.prefetch_batches and processes == 0 and self.device.type == "cpu"
        return CurriculumBatches(self, prefetch=prefetch), val

    # -- the training loop -------------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        """A SIGTERM or SIGUSR1 arrived during the training loop (:mod:`pgps.nnunet.preemption`)."""
        return self._stop is not None and self._stop.requested

    def run_training(self) -> None:
        """nnU-Net's training loop, which also resumes inside an epoch and stops gracefully on SIGTERM or SIGUSR1:
        after the running iteration, ``checkpoint_latest.pth`` gets the state so far and the process exits with
        :data:`pgps.nnunet.preemption.EXIT_STOPPED` (:mod:`pgps.nnunet.preemption`). Under DDP: nnU-Net's loop."""
        if self.is_ddp:
            super().run_training()
            return
        with preemption.GracefulStop() as self._stop:
            self.on_train_start()
            for _epoch in range(self.current_epoch, self.num_epochs):
                self.on_epoch_start()
                self.on_train_epoch_start()
                train_outputs = self._resumed_iterations()
                while len(train_outputs) < self.num_iterations_per_epoch:
                    train_outputs.append(self.train_step(next(self.dataloader_train)))
                    # a batch in the making (prefetch) would have drawn from the random state the checkpoint keeps
                    if self.stop_requested and not self.dataloader_train.making:
                        self._stop_after(train_outputs)
                self.on_train_epoch_end(train_outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val_outputs = [self.validation_step(next(self.dataloader_val))
                                   for _ in range(self.num_val_iterations_per_epoch)]  # fmt: skip
                    self.on_validation_epoch_end(val_outputs)
                self.on_epoch_end()
        self._stop = None
        self.on_train_end()

    def _resumed_iterations(self) -> list[dict]:
        """The outputs of the iterations of this epoch that a checkpoint written on a stop holds (none otherwise);
        the curriculum, the telemetry sums and the epoch's clock continue from them."""
        partial = self._resume_state.get("partial_epoch") if self._resume_state else None
        if partial is None or partial["epoch"] != self.current_epoch:
            return []
        self._resume_state["partial_epoch"] = None
        done, per_epoch = partial["iterations"], self.num_iterations_per_epoch
        self.curriculum.seek(*divmod(self.current_epoch * per_epoch + done, per_epoch))
        self.telemetry.load_state_dict(partial["telemetry"])
        self._epoch_started -= partial["epoch_time_s"]
        return list(partial["train_outputs"])

    def _stop_after(self, train_outputs: list[dict]) -> None:
        """Checkpoint the state after the iterations of ``train_outputs`` (this epoch's so far) and exit."""
        epoch, done = self.current_epoch, len(train_outputs)
        self._partial_epoch = {
            "epoch": epoch, "iterations": done, "train_outputs": list(train_outputs),
            "telemetry": self.telemetry.state_dict(), "epoch_time_s": time.perf_counter() - self._epoch_started,
        }  # fmt: skip
        self.current_epoch -= 1  # nnU-Net's checkpoint stores current_epoch + 1: resume at this epoch
        try:
            self.save_checkpoint(os.path.join(self.output_folder, CHECKPOINT_LATEST))
        finally:
            self.current_epoch += 1
        self.print_to_log_file(
            f"PGPS: {self._stop.name} received; stopped after iteration {done} of epoch {epoch} and wrote "
            f"{CHECKPOINT_LATEST}; run again with --c to resume at epoch {epoch}, iteration {done} "
            f"(exit status {preemption.EXIT_STOPPED})",
            also_print_to_console=True,
        )
        self.dataloader_train.close()
        self.carbon.close()
        preemption.end_children()  # the validation loader's workers too
        raise SystemExit(preemption.EXIT_STOPPED)

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
            with cpu_autocast.autocast(self.cpu_bf16):
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

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's validation step, under bfloat16 autocast when the training steps are (CPU, opt-in)."""
        with cpu_autocast.autocast(self.cpu_bf16):
            return super().validation_step(batch)

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

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """nnU-Net's final validation; on the CPU its export and evaluation pools fork instead of spawning (each
        spawned worker imports torch and nnU-Net again: 6-8 s of a short CPU run's validation)."""
        with spawn_as_fork(self.device.type == "cpu"):
            super().perform_actual_validation(save_probabilities)

    def _fold_number(self) -> int:
        """The fold as a seed component (nnU-Net's fold ``"all"`` is 5)."""
        return self.fold if isinstance(self.fold, int) else 5

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
