"""The data-level curriculum (CDL-UNet's "Easy-Then-Hard", or any pacing of :mod:`pgps.data.curriculum`) as a
mixin for the PGPS nnU-Net trainers: it restricts which training cases the loader may draw in each phase,
composed with every PGPS mode and batch strategy (the patch curriculum decides patch and batch size, the data
curriculum the cases).

Put it first in the bases: ``class T(DataCurriculumMixin, nnUNetTrainer_PGPS_Performance)``. It reads the
cases' difficulty from ``difficulty.csv`` (written by ``pgps difficulty``), looked up in this order:

1. the environment variable ``PGPS_DIFFICULTY`` (a path);
2. the configuration key ``pgps_difficulty`` in the plans (a path, relative paths from the preprocessed
   dataset folder);
3. ``difficulty.csv`` in the preprocessed dataset folder.

Only the fold's training cases take part (validation cases in the file are ignored); a training case missing
from the file is an error, and erroneous cases are never drawn. Per phase the loader is built over that
phase's cases only (a fresh loader, also with worker processes); every batch's case keys are recorded and
``pgps_data_curriculum.csv`` in the fold folder lists per epoch the phase, the cases allowed, the distinct
cases drawn and how many drawn keys fell outside the phase (always 0). The data schedule and position go into
the checkpoint next to the PGPS curriculum state, so ``--c`` resumes in the same phase (a changed
``difficulty.csv`` or pacing is refused).

Class attributes, each with an environment override for short runs without new classes:

- ``data_pacing`` (``PGPS_DATA_PACING``): a kind of :data:`pgps.data.curriculum.DEFAULTS`;
- ``data_pacing_params`` (``PGPS_DATA_PACING_PARAMS``, JSON): its parameters;
- ``lr_restart`` (``PGPS_LR_RESTART``, 0/1): restart nnU-Net's poly learning rate at each phase switch, as the
  CDL-UNet authors' hard course (a new training run from the easy course's weights) does;
- ``easy_threshold`` / ``erroneous_threshold`` (``PGPS_EASY_THRESHOLD`` / ``PGPS_ERRONEOUS_THRESHOLD``):
  regroup the cases by DS instead of using the file's groups;
- ``init_weights`` (``PGPS_INIT_WEIGHTS``, a checkpoint path): start from another run's network, as the
  CDL-UNet authors' hard course starts from the easy course's final model. Every weight is loaded, the
  segmentation head included (nnU-Net's ``-pretrained_weights`` leaves the head out, for transfer to other
  classes, so it cannot continue a model); the optimizer is new and the poly learning rate starts again
  at its initial value over this run's epochs: the restart. ``pgps_init_weights.json`` in the fold folder
  records the file, its SHA-256, the SHA-256 of the weights as loaded into the network
  (:func:`weights_sha256`) and the source run's trainer and epochs. A resumed run (``--c``) continues from
  its own checkpoint, which nnU-Net loads after this.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from pgps.data import curriculum as dc
from pgps.data.difficulty import DifficultyTable
from pgps.io import file_sha256, write_csv
from pgps.nnunet.loading.sampling import check_strategy

DIFFICULTY_ENV = "PGPS_DIFFICULTY"
PLANS_KEY = "pgps_difficulty"
DIFFICULTY_FILE = "difficulty.csv"
CHECKPOINT_KEY = "data_curriculum"
LOG_FILE = "pgps_data_curriculum.csv"
LOG_COLUMNS = ("epoch", "phase", "cases_allowed", "cases_drawn", "keys_drawn", "keys_outside_phase", "lr", "drawn")
INIT_ENV = "PGPS_INIT_WEIGHTS"
INIT_FILE = "pgps_init_weights.json"


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a network's tensors in key order (each key, dtype, shape and bytes): equal for the weights
    of a checkpoint file and a network those weights were loaded into."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():  # the values in index order, whatever the memory format (channels-last included)
            digest.update(tensor.clone(memory_format=torch.contiguous_format).reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _bare_network(network: torch.nn.Module) -> torch.nn.Module:
    """The module that holds the parameters (without DDP's and torch.compile's wrappers)."""
    network = getattr(network, "module", network)  # DistributedDataParallel
    return getattr(network, "_orig_mod", network)  # OptimizedModule


class PhaseRestartPolyLR(PolyLRScheduler):
    """nnU-Net's poly schedule on a clock that ``clock(epoch) -> (t, T)`` may restart: ``lr = lr0 (1 - t/T)^0.9``."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, clock, exponent: float = 0.9) -> None:
        self.clock = clock
        super().__init__(optimizer, initial_lr, max_steps=1, exponent=exponent)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        t, total = self.clock(current_step)
        new_lr = self.initial_lr * (1 - t / total) ** self.exponent
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def _env_flag(name: str, value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes"):
        return True
    if value.strip().lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"{name} must be 0 or 1, got {value!r}")


class DataCurriculumMixin:
    """Data-level curriculum for a :class:`pgps.nnunet.trainer.PGPSMixin` trainer (see the module docstring)."""

    data_pacing: str = "easy_then_hard"
    data_pacing_params: dict[str, Any] | None = None
    lr_restart: bool = False
    easy_threshold: float | None = None
    erroneous_threshold: float | None = None
    init_weights: str | None = None

    def initialize(self) -> None:
        self._read_environment()
        self.data_schedule: dc.DataSchedule | None = None
        self.data_rows: list[dict] = []
        self._drawn: Counter = Counter()
        self._loader_phase: int | None = None
        self._saved_data_state: dict | None = None
        super().initialize()  # builds the optimizer and its (possibly restarting) scheduler
        if self.init_weights:
            self.load_init_weights(self.init_weights)

    def load_init_weights(self, path: str) -> dict[str, Any]:
        """Load every weight of checkpoint ``path`` into the network and record it in :data:`INIT_FILE` (module
        docstring); returns the record."""
        if not os.path.isfile(path):
            raise ValueError(f"{INIT_ENV}: {path} does not exist")
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(saved, dict) or "network_weights" not in saved:
            raise ValueError(f"{INIT_ENV}: {path} is not an nnU-Net checkpoint (no network_weights)")
        network = _bare_network(self.network)
        try:
            network.load_state_dict(saved["network_weights"])
        except RuntimeError as exc:
            raise ValueError(
                f"{INIT_ENV}: the network of {path} does not match this trainer's ({self.configuration_name}): "
                f"{str(exc).splitlines()[0]}"
            ) from None
        record = {
            "path": os.path.abspath(path),
            "sha256": file_sha256(path),
            "weights_sha256": weights_sha256(network.state_dict()),
            "source_trainer": saved.get("trainer_name"),
            "source_epochs": saved.get("current_epoch"),
        }
        if self.local_rank == 0:
            with open(os.path.join(self.output_folder, INIT_FILE), "w") as f:
                json.dump(record, f, indent=1)
                f.write("\n")
        self.print_to_log_file(
            f"PGPS: network initialised from {path} (sha256 {record['sha256'][:12]}, {record['source_epochs']} "
            f"epochs of {record['source_trainer']}); new optimizer, learning rate from {self.initial_lr}",
            also_print_to_console=True,
        )
        return record

    def _read_environment(self) -> None:
        """Apply the environment overrides (module docstring) and check the pacing kind."""
        env = os.environ
        if env.get("PGPS_DATA_PACING"):
            self.data_pacing = env["PGPS_DATA_PACING"]
        if env.get("PGPS_DATA_PACING_PARAMS"):
            try:
                self.data_pacing_params = json.loads(env["PGPS_DATA_PACING_PARAMS"])
            except json.JSONDecodeError as exc:
                raise ValueError(f"PGPS_DATA_PACING_PARAMS must be a JSON object: {exc}") from None
        if env.get(INIT_ENV):
            self.init_weights = env[INIT_ENV]
        if env.get("PGPS_LR_RESTART"):
            self.lr_restart = _env_flag("PGPS_LR_RESTART", env["PGPS_LR_RESTART"])
        for name, attr in (
            ("PGPS_EASY_THRESHOLD", "easy_threshold"),
            ("PGPS_ERRONEOUS_THRESHOLD", "erroneous_threshold"),
        ):
            if env.get(name):
                setattr(self, attr, float(env[name]))
        if self.data_pacing not in dc.DEFAULTS:
            raise ValueError(f"unknown data pacing {self.data_pacing!r}; choose one of {', '.join(dc.DEFAULTS)}")

    # -- where difficulty.csv is ---------------------------------------------------------------------------------
    def difficulty_file(self) -> Path:
        if os.environ.get(DIFFICULTY_ENV):
            path = Path(os.environ[DIFFICULTY_ENV])
            source = f"${DIFFICULTY_ENV}"
        elif self.configuration_manager.configuration.get(PLANS_KEY):
            path = Path(self.configuration_manager.configuration[PLANS_KEY])
            if not path.is_absolute():
                path = Path(self.preprocessed_dataset_folder_base) / path
            source = f"the plans key {PLANS_KEY} of configuration {self.configuration_name}"
        else:
            path = Path(self.preprocessed_dataset_folder_base) / DIFFICULTY_FILE
            source = "the default location"
            if not path.is_file():
                raise ValueError(
                    f"the data curriculum needs {DIFFICULTY_FILE} (write it with pgps difficulty): set "
                    f"{DIFFICULTY_ENV}=FILE, the plans key {PLANS_KEY}, or put it at {path}"
                )
        if not path.is_file():
            raise ValueError(f"{path} (from {source}) does not exist")
        return path

    # -- the data schedule over this fold's training cases --------------------------------------------------------
    def build_data_schedule(self, training_cases: list[str]) -> dc.DataSchedule:
        path = self.difficulty_file()
        table = DifficultyTable.read(str(path), self.easy_threshold, self.erroneous_threshold)
        missing = sorted(set(training_cases) - set(table.ds))
        if missing:
            raise ValueError(
                f"{path} has no difficulty for {len(missing)} training case(s) of fold {self.fold}: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            )
        keep = set(training_cases)
        fold_table = DifficultyTable(
            {c: v for c, v in table.ds.items() if c in keep}, {c: g for c, g in table.groups.items() if c in keep}
        )
        try:
            schedule = dc.make_data_schedule(fold_table, self.data_pacing, self.num_epochs, self.data_pacing_params)
        except ValueError as exc:
            raise ValueError(f"data curriculum from {path}: {exc}") from exc
        if self.lr_restart:
            dc.restart_epoch(schedule, 0)  # raises for continuous pacings
        self.print_to_log_file(f"PGPS data curriculum from {path}:\n{schedule.table()}", also_print_to_console=True)
        return schedule

    def get_dataloaders(self):
        loaders = super().get_dataloaders()
        self.data_schedule = self.build_data_schedule(list(self.dataset_tr.identifiers))
        self._check_phases()
        if self._saved_data_state is not None:
            saved = dc.DataCurriculum(self.data_schedule)
            saved.load_state_dict(self._saved_data_state)  # refuses another difficulty.csv or pacing
        return loaders

    def _check_phases(self) -> None:
        """Fail before training when a phase has too few cases for a batch strategy."""
        if getattr(self, "batch_sampling", None) is None:
            return
        for phase in self.data_schedule.phases:
            epochs = range(phase.start, phase.stop)
            if self.schedule.mode == "rpss":
                stages = set(range(self.schedule.num_stages))
            else:
                stages = {self.schedule.stage_index(e) for e in epochs}
            for i in sorted(stages):
                try:
                    check_strategy(self.batch_sampling, self.schedule.stages[i].batch_size, phase.num_cases)
                except ValueError as exc:
                    raise ValueError(
                        f"data curriculum phase {phase.index} (epochs {phase.start}-{phase.stop - 1}, "
                        f"{phase.num_cases} cases) with PGPS stage {i}: {exc}"
                    ) from exc

    # -- the loader draws only the phase's cases -------------------------------------------------------------------
    def make_train_loader(self, index: int):
        full = self.dataset_tr
        phase = self.data_schedule.phase_index(self.current_epoch)
        cases = self.data_schedule.cases_at(self.current_epoch)
        self.dataset_tr = type(full)(
            full.source_folder, cases, folder_with_segs_from_previous_stage=full.folder_with_segs_from_previous_stage
        )
        self._loader_phase = phase
        try:
            return super().make_train_loader(index)
        finally:
            self.dataset_tr = full

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        phase = self.data_schedule.phases[self.data_schedule.phase_index(self.current_epoch)]
        if self._loader_phase is not None and self._loader_phase != phase.index:
            self.dataloader_train.close()  # rebuilt for the new phase's cases at the next batch
            self.print_to_log_file(
                f"PGPS data curriculum phase {phase.index}: {phase.num_cases} cases from epoch {phase.start}",
                also_print_to_console=True,
            )
        self._drawn = Counter()

    def train_step(self, batch: dict) -> dict:
        self._drawn.update(str(k) for k in batch.get("keys", ()))
        return super().train_step(batch)

    def on_epoch_end(self) -> None:
        epoch = self.current_epoch
        allowed = set(self.data_schedule.cases_at(epoch))
        drawn = sorted(self._drawn)
        self.data_rows.append(
            {
                "epoch": epoch,
                "phase": self.data_schedule.phase_index(epoch),
                "cases_allowed": len(allowed),
                "cases_drawn": len(drawn),
                "keys_drawn": sum(self._drawn.values()),
                "keys_outside_phase": sum(n for k, n in self._drawn.items() if k not in allowed),
                "lr": self.optimizer.param_groups[0]["lr"],
                "drawn": ";".join(drawn),
            }
        )
        if self.local_rank == 0:
            write_csv(os.path.join(self.output_folder, LOG_FILE), self.data_rows, LOG_COLUMNS)
        super().on_epoch_end()

    # -- learning rate -----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        if self.lr_restart:
            scheduler = PhaseRestartPolyLR(optimizer, self.initial_lr, self._lr_clock)
        return optimizer, scheduler

    def _lr_clock(self, epoch: int) -> tuple[int, int]:
        if self.data_schedule is None:  # before the split is known (the scheduler's first step)
            return epoch, self.num_epochs
        return dc.restart_epoch(self.data_schedule, epoch)

    # -- checkpoint ------------------------------------------------------------------------------------------------
    def curriculum_state_dict(self) -> dict:
        state = super().curriculum_state_dict()
        if self.data_schedule is not None:
            state[CHECKPOINT_KEY] = {
                **dc.DataCurriculum(self.data_schedule, self.current_epoch + 1).state_dict(),
                "rows": list(self.data_rows),
            }
        return state

    def load_curriculum_state_dict(self, state: dict | None) -> None:
        saved = (state or {}).get(CHECKPOINT_KEY)
        super().load_curriculum_state_dict(state)
        if saved is not None:
            self._saved_data_state = saved
            self.data_rows = [r for r in saved["rows"] if r["epoch"] < saved["epoch"]]
            self.print_to_log_file(f"PGPS data curriculum: resuming at epoch {saved['epoch']}")
