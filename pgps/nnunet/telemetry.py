"""The PGPS trainers' telemetry: what the network received, per epoch, and the run's summary.

:class:`Telemetry` measures every training batch from the tensors the network receives; :class:`TelemetryMixin`
(a part of :class:`pgps.nnunet.trainer.PGPSMixin`) writes ``pgps_telemetry.csv`` (one row per epoch) and
``pgps_summary.json`` into the fold folder.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from pgps.io import write_csv, write_json
from pgps.nnunet import carbon, losses
from pgps.sizes import fmt_size

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
"""A telemetry cell of an epoch that saw several values (RPSS: several patch and batch sizes)."""


class Telemetry:
    """Batch statistics measured from the tensors the network receives, summed per epoch.

    Shapes come from ``batch["data"]`` (no device synchronisation); the foreground-voxel share and
    the share of foreground classes present are computed on the target's device (the GPU when
    training on one) and stay there until the epoch ends, so telemetry adds one host transfer per
    epoch, not one per iteration. Forced-foreground fallbacks are counted by the loader (every PGPS
    trainer's, :class:`~pgps.nnunet.loading.sampling.PlannedDataLoader`); a batch without the count makes them
    ``None`` (not measured).
    """

    def __init__(self, foreground_labels: list[int], has_regions: bool, ignore_label: int | None = None) -> None:
        self.foreground_labels = sorted(int(label) for label in foreground_labels)
        self.has_regions = has_regions
        self.ignore_label = ignore_label
        # one count per label value up to the largest label (ignore label included); larger values are clamped
        self.bins = max([0, *self.foreground_labels, *([] if ignore_label is None else [int(ignore_label)])]) + 1
        self._labels: dict[torch.device, torch.Tensor] = {}
        self.reset()

    def reset(self) -> None:
        self.iterations = self.voxels = 0
        self.fallbacks: int | None = 0
        self.shapes: dict[tuple[int, ...], int] = {}  # (b, *patch) -> iterations
        self._shares: list[torch.Tensor] = []  # per iteration: [foreground share, class presence share]
        self._resumed_shares = np.zeros((0, 2), np.float32)  # those of the iterations before a mid-epoch resume
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

    def _shares_host(self) -> np.ndarray:
        """Every iteration's shares of this epoch on the host (one transfer)."""
        measured = torch.stack(self._shares).float().cpu().numpy() if self._shares else np.zeros((0, 2), np.float32)
        return np.concatenate([self._resumed_shares, measured])

    def state_dict(self) -> dict[str, Any]:
        """The sums of the epoch so far (a checkpoint written mid-epoch, :mod:`pgps.nnunet.preemption`)."""
        return {
            "iterations": self.iterations, "voxels": self.voxels, "fallbacks": self.fallbacks,
            "shapes": dict(self.shapes), "shares": self._shares_host(),
            "compile_time_s": self.compile_time_s, "compilations": self.compilations,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iterations, self.voxels, self.fallbacks = state["iterations"], state["voxels"], state["fallbacks"]
        self.shapes = dict(state["shapes"])
        self._resumed_shares = np.asarray(state["shares"], dtype=np.float32).reshape(-1, 2)
        self.compile_time_s, self.compilations = state["compile_time_s"], state["compilations"]

    def _batch_shares(self, target: torch.Tensor) -> torch.Tensor:
        if self.has_regions:  # one binary channel per region, then (with an ignore label) nnU-Net's ignore mask
            if self.ignore_label is not None:
                target = target[:, :-1]
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
        shares = self._shares_host()
        if not len(shares):
            shares = np.full((1, 2), np.nan)
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


class TelemetryMixin:
    """Writing the telemetry of a :class:`pgps.nnunet.trainer.PGPSMixin` trainer (its rows are ``telemetry_rows``)."""

    def write_telemetry(self) -> None:
        """Write the per-epoch table and the run summary (both atomically) into the fold folder."""
        write_csv(os.path.join(self.output_folder, TELEMETRY_FILE), self.telemetry_rows, TELEMETRY_COLUMNS)
        write_json(os.path.join(self.output_folder, SUMMARY_FILE), self.summary())

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
