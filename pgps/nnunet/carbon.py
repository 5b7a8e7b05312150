"""Energy and CO2-eq of a training run with CodeCarbon (optional: ``pip install 'pgps[carbon]'``).

The MICCAI 2024 paper reports the CO2 equivalent of every training (its Table 1, "we adopt CodeCarbon
to track the CO2-equivalents"). The PGPS trainers do the same when CodeCarbon is installed: one
``codecarbon.OfflineEmissionsTracker`` per run (offline: no network; the carbon intensity comes from the
country code, :data:`COUNTRY_ENV`), and CodeCarbon's task API around the training part of every epoch,
each task named after the curriculum stage it trains (``"stage 3"``; ``"rpss"`` for RPSS, whose stage
changes every iteration). A task per training epoch rather than one per stage keeps validation out (as
the runtime measure does) and keeps what a pre-empted run measured: the energy of each epoch is in the
telemetry row, which the checkpoint carries, so a resumed run's totals include it. CodeCarbon suffixes
the repeated task names of a stage with an id in its own records (``pgps_emissions*.csv`` in the fold
folder).

:data:`CARBON_ENV` switches it: ``auto`` (default: track when CodeCarbon is importable, else say so once
in the training log), ``on`` (refuse to train without CodeCarbon), ``off``.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

CARBON_ENV = "PGPS_CARBON"
"""``auto`` (default), ``on`` or ``off``."""

COUNTRY_ENV = "PGPS_CARBON_COUNTRY"
"""ISO 3166-1 alpha-3 code of the country whose electricity mix CodeCarbon assumes (offline it cannot locate
the machine); default :data:`DEFAULT_COUNTRY`."""

DEFAULT_COUNTRY = "DEU"
"""Germany, where the MICCAI 2024 paper's trainings ran (TU Munich / Helmholtz Munich)."""

EMISSIONS_FILE = "pgps_emissions.csv"
"""CodeCarbon's own record of the run in the fold folder."""

COLUMNS: tuple[str, ...] = ("energy_kwh", "co2_kg")
"""The telemetry columns and summary keys: CodeCarbon's ``energy_consumed`` [kWh] and ``emissions`` [kg CO2-eq]."""

MISSING = (
    "CodeCarbon is not installed: energy_kwh and co2_kg stay empty. Install it with pip install 'pgps[carbon]' "
    f"(or set {CARBON_ENV}=off to silence this message)."
)


def setting(value: str | None = None) -> str:
    """The tracking setting from :data:`CARBON_ENV` (or ``value``): ``auto``, ``on`` or ``off``."""
    text = (os.environ.get(CARBON_ENV, "auto") if value is None else value).strip().lower() or "auto"
    aliases = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}
    text = aliases.get(text, text)
    if text not in ("auto", "on", "off"):
        raise ValueError(f"{CARBON_ENV} must be auto, on or off, got {value if value is not None else text!r}")
    return text


def offline_tracker_class() -> type | None:
    """``codecarbon.OfflineEmissionsTracker``, or None when CodeCarbon is not installed."""
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        return None
    return OfflineEmissionsTracker


def _csv_output() -> Any:
    """CodeCarbon's CSV output method (its file in the fold folder)."""
    from codecarbon import OutputMethod

    return OutputMethod.CSV


class RunCarbon:
    """CodeCarbon for one training run: :meth:`start_epoch` / :meth:`end_epoch` around the training of each
    epoch, :meth:`close` at the end. Without CodeCarbon (or with ``off``) every value is NaN.

    ``output_dir`` receives CodeCarbon's :data:`EMISSIONS_FILE`; ``gpu_ids`` limits GPU energy to the
    training devices (NVML's ids, :func:`nvml_gpu_ids`); ``log`` prints one line (the trainer's log).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        project: str,
        gpu_ids: list[int | str] | None = None,
        mode: str | None = None,
        country: str | None = None,
        log: Callable[[str], Any] | None = None,
    ) -> None:
        log = log or logging.getLogger(__name__).info
        self.mode = setting(mode)
        self.country = (country or os.environ.get(COUNTRY_ENV) or DEFAULT_COUNTRY).upper()
        self.tracker = None
        self._task: str | None = None
        if self.mode == "off":
            return
        tracker_class = offline_tracker_class()
        if tracker_class is None:
            if self.mode == "on":
                raise RuntimeError(f"{CARBON_ENV}=on: {MISSING}")
            log(f"PGPS: {MISSING}")
            warnings.warn(MISSING, stacklevel=2)  # on stderr too, once per process
            return
        os.makedirs(output_dir, exist_ok=True)
        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # its start-up notes would fill the training log
        csv_output = _csv_output()
        self.tracker = tracker_class(
            country_iso_code=self.country,
            project_name=project,
            output_dir=str(output_dir),
            output_file=EMISSIONS_FILE,
            output_methods=[csv_output],
            log_level="error",
            gpu_ids=gpu_ids,
            allow_multiple_runs=True,  # several trainings on one node (the local-gpu profile)
        )
        log(f"PGPS: CodeCarbon offline tracker (country {self.country}), one task per stage and training epoch")

    @property
    def enabled(self) -> bool:
        return self.tracker is not None

    def start_epoch(self, task: str) -> None:
        """Start measuring the training of one epoch of stage ``task``."""
        if self.tracker is not None:
            self.tracker.start_task(task)
            self._task = task

    def end_epoch(self) -> dict[str, float]:
        """Stop the epoch's task: ``{"energy_kwh", "co2_kg"}`` it measured (NaN without a tracker)."""
        if self.tracker is None or self._task is None:
            return dict.fromkeys(COLUMNS, math.nan)
        data = self.tracker.stop_task()
        self._task = None
        if data is None:
            return dict.fromkeys(COLUMNS, math.nan)
        return {"energy_kwh": float(data.energy_consumed), "co2_kg": float(data.emissions)}

    def close(self) -> None:
        """Stop the tracker (writes CodeCarbon's record)."""
        if self.tracker is not None:
            if self._task is not None:
                self.tracker.stop_task()
                self._task = None
            self.tracker.stop()
            self.tracker = None


def nvml_gpu_ids(indices: Iterable[int], visible: str | None = None) -> list[int | str]:
    """The GPUs NVML (and so CodeCarbon) knows as the CUDA devices ``indices`` of this process.

    ``CUDA_VISIBLE_DEVICES`` (``visible``; default: this process's environment) renumbers the GPUs a process
    sees: with ``3,5``, ``cuda:0`` is NVML's GPU 3 (``pgps gpu-slot`` and SLURM set it). Its entries are indices
    or UUIDs (``GPU-...``, ``MIG-...``), which CodeCarbon also accepts. Without it, the indices are NVML's.
    """
    text = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    indices = [int(i) for i in indices]
    if text is None or not text.strip():
        return indices
    entries = [e.strip() for e in text.split(",")]
    out: list[int | str] = []
    for i in indices:
        if not 0 <= i < len(entries) or not entries[i]:
            raise ValueError(f"CUDA device {i} is not among CUDA_VISIBLE_DEVICES={text!r}")
        out.append(int(entries[i]) if entries[i].isdigit() else entries[i])
    return out


def totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """The run's ``energy_kwh`` and ``co2_kg``: sums over the telemetry rows that measured them (None if none did)."""
    out: dict[str, float | None] = {}
    rows = list(rows)
    for column in COLUMNS:
        values = [float(r[column]) for r in rows if r.get(column) is not None and math.isfinite(float(r[column]))]
        out[column] = sum(values) if values else None
    return out


class CarbonMixin:
    """CodeCarbon's tracker of a :class:`pgps.nnunet.trainer.PGPSMixin` trainer (one task per stage)."""

    def _carbon_task(self) -> str:
        """CodeCarbon's task name for this epoch: its stage (RPSS draws one per iteration)."""
        return "rpss" if self.schedule.mode == "rpss" else f"stage {self.schedule.stage_index(self.current_epoch)}"

    def _carbon_tracker(self) -> RunCarbon:
        """CodeCarbon for this run, on the main process only (a disabled one elsewhere), measuring the GPU of
        every rank (nnU-Net's DDP gives rank ``r`` the device ``cuda:r`` of one node) by NVML's id."""
        gpu = None
        if self.device.type == "cuda":
            gpu = nvml_gpu_ids(range(self.world_size) if self.is_ddp else [self.device.index or 0])
        mode = "off" if self.local_rank != 0 else None
        return RunCarbon(self.output_folder, type(self).__name__, gpu, mode, log=self.print_to_log_file)
