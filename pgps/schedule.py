"""The curriculum schedule: a value that lists every stage, computed once, up front.

``make_schedule`` is the one place that turns (mode, P_max, steps, b_base, epochs) into stages;
trainers, figures, the cost model and the CLI all ask it. A :class:`Schedule` prints as a
stage table, round-trips through JSON, and answers which stage trains a given epoch/iteration.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from pgps import batch, names, pacing
from pgps import stages as stage_lists
from pgps.cost import relative_voxels
from pgps.sizes import Size, as_size, fmt_size, numel

MODES: dict[str, str] = {key: mode.description for key, mode in names.MODES.items()}
"""Curriculum mode -> what it does (the modes of :data:`pgps.names.MODES`)."""

RPSS_POOLS: dict[str, str] = {
    "miccai": "the MICCAI 2024 stages (2x1x1 start, round-robin growth): 'a random patch size of all patch sizes "
    "used for PGPS' (MICCAI 2024 Sec. 3.1)",
    "journal": "the journal stages (P_min, then the axis whose next value is smallest)",
}
"""The stage pools RPSS can draw from. ``"miccai"`` (the default) is the conference paper's RPSS; ``"journal"``
draws from the journal modes' stages (the behaviour of pgps before it followed the paper)."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """One curriculum stage.

    ``patch_size`` is the spatial size of the network input; ``crop_size`` is the field of view
    cropped from the volume (equal to ``patch_size`` except in Progressive Resolution, where the
    ``P_max`` crop is resampled to ``patch_size``). ``epochs`` is the number of epochs it trains.
    """

    patch_size: Size
    batch_size: int
    epochs: int
    crop_size: Size | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", as_size("patch_size", self.patch_size))
        crop = self.patch_size if self.crop_size is None else as_size("crop_size", self.crop_size)
        object.__setattr__(self, "crop_size", crop)

    @property
    def tensor_voxels(self) -> int:
        """Voxels of one input tensor per channel: ``batch_size * numel(patch_size)``."""
        return self.batch_size * numel(self.patch_size)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A whole curriculum: every stage with its patch size, batch size and epochs."""

    mode: str
    patch_size_max: Size
    batch_size_base: int
    steps: Size
    stages: tuple[Stage, ...]
    iterations_per_epoch: int = pacing.ITERATIONS_PER_EPOCH
    seed: int = 0
    notes: tuple[str, ...] = ()

    # -- queries -------------------------------------------------------------------------
    @property
    def epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def patch_size_min(self) -> Size:
        return self.stages[0].patch_size

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def stage_index(self, epoch: int, iteration: int = 0) -> int:
        """Index of the stage that trains ``iteration`` (0-based, within the epoch) of ``epoch``.

        For RPSS the stage is drawn uniformly at random per iteration from a generator seeded by
        ``(seed, epoch)``, so any iteration's stage is reproducible without stored state.
        """
        if not 0 <= iteration < self.iterations_per_epoch:
            raise ValueError(f"iteration {iteration} is outside an epoch of {self.iterations_per_epoch} iterations")
        if self.mode == "rpss":
            if not 0 <= epoch < self.epochs:
                raise ValueError(f"epoch {epoch} is outside the schedule's {self.epochs} epochs")
            return int(self.rpss_draws(epoch)[iteration])
        return pacing.stage_index_of_epoch([s.epochs for s in self.stages], epoch)

    def stage_at(self, epoch: int, iteration: int = 0) -> Stage:
        return self.stages[self.stage_index(epoch, iteration)]

    def rpss_draws(self, epoch: int) -> np.ndarray:
        """RPSS: the stage index of every iteration of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        return rng.integers(0, self.num_stages, size=self.iterations_per_epoch)

    def first_epoch(self, index: int) -> int:
        """First epoch of stage ``index`` (paced modes)."""
        return sum(s.epochs for s in self.stages[:index])

    def with_batch_sizes(self, batch_sizes: Sequence[int], note: str) -> Schedule:
        """The same stages with other batch sizes (e.g. sized from measured memory); ``note`` says why."""
        if len(batch_sizes) != self.num_stages:
            raise ValueError(f"{len(batch_sizes)} batch sizes for {self.num_stages} stages")
        for i, b in enumerate(batch_sizes):
            if isinstance(b, bool) or int(b) != b or b < 1:
                raise ValueError(f"stage {i}: batch size must be a positive integer, got {b!r}")
        stages = tuple(dataclasses.replace(s, batch_size=int(b)) for s, b in zip(self.stages, batch_sizes, strict=True))
        return dataclasses.replace(self, stages=stages, notes=(*self.notes, note))

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Full, loadable description (see :meth:`from_dict`); JSON-serialisable."""
        return {
            "mode": self.mode,
            "patch_size_max": list(self.patch_size_max),
            "batch_size_base": self.batch_size_base,
            "steps": list(self.steps),
            "iterations_per_epoch": self.iterations_per_epoch,
            "seed": self.seed,
            "notes": list(self.notes),
            "stages": [
                {
                    "patch_size": list(s.patch_size),
                    "batch_size": s.batch_size,
                    "epochs": s.epochs,
                    "crop_size": list(s.crop_size),
                }
                for s in self.stages
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schedule:
        return cls(
            mode=d["mode"],
            patch_size_max=as_size("patch_size_max", d["patch_size_max"]),
            batch_size_base=int(d["batch_size_base"]),
            steps=as_size("steps", d["steps"]),
            stages=tuple(
                Stage(
                    patch_size=tuple(s["patch_size"]),
                    batch_size=int(s["batch_size"]),
                    epochs=int(s["epochs"]),
                    crop_size=tuple(s.get("crop_size") or s["patch_size"]),
                )
                for s in d["stages"]
            ),
            iterations_per_epoch=int(d.get("iterations_per_epoch", pacing.ITERATIONS_PER_EPOCH)),
            seed=int(d.get("seed", 0)),
            notes=tuple(d.get("notes", ())),
        )

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        return cls.from_dict(json.loads(text))

    def summary(self) -> dict[str, Any]:
        """The CLI's ``--json`` shape: mode, P_max, b_base, stages (patch, batch, epochs), relative voxels."""
        return {
            "mode": self.mode,
            "patch_size_max": list(self.patch_size_max),
            "batch_size_base": self.batch_size_base,
            "stages": [
                {"patch_size": list(s.patch_size), "batch_size": s.batch_size, "epochs": s.epochs} for s in self.stages
            ],
            "relative_voxels": relative_voxels(self),
        }

    def table(self) -> str:
        """The stage table as aligned text."""
        show_crop = any(s.crop_size != s.patch_size for s in self.stages)
        header = ["stage", "patch_size", "batch_size", "tensor_voxels", "epochs"] + (["crop_size"] if show_crop else [])
        rows = [
            [str(i), fmt_size(s.patch_size), str(s.batch_size), f"{s.tensor_voxels:,}", str(s.epochs)]
            + ([fmt_size(s.crop_size)] if show_crop else [])
            for i, s in enumerate(self.stages)
        ]
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
        lines = [
            f"mode {self.mode}: P_max {fmt_size(self.patch_size_max)}, b_base {self.batch_size_base}, "
            f"steps {fmt_size(self.steps)}, {self.num_stages} stages, {self.epochs} epochs x "
            f"{self.iterations_per_epoch} iterations"
        ]
        lines += [f"note: {n}" for n in self.notes]
        lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
        line = f"relative voxels (FLOPs proxy) vs CPS: {relative_voxels(self):.4f}"
        if self.num_stages > 1:
            article = relative_voxels(self, accounting="article")
            line += f" (the article's accounting, first stage not counted: {article:.4f})"
        lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def make_schedule(
    mode: str,
    patch_size_max: Sequence[int],
    steps: Sequence[int],
    batch_size_base: int,
    epochs: int = pacing.EPOCHS,
    iterations_per_epoch: int = pacing.ITERATIONS_PER_EPOCH,
    *,
    patch_size_min: Sequence[int] | None = None,
    single_voxel_bottleneck: bool = True,
    batch_size_cap: int | None = None,
    seed: int = 0,
    rpss_pool: str = "miccai",
    growth: str = "code",
) -> Schedule:
    """Build the schedule of a curriculum ``mode`` (one of :data:`MODES`).

    ``patch_size_max`` and ``batch_size_base`` are the planned patch and batch size; ``steps``
    the per-axis step (``2**k`` for ``k`` stride-2 downsamplings, see :func:`pgps.plans`).
    ``P_min`` defaults to the steps (a 1x1x1 bottleneck). Set ``single_voxel_bottleneck=False``
    for an architecture whose normalisation cannot train on a single-voxel bottleneck: ``P_min``
    then moves one stage up and the schedule's notes say so. ``batch_size_cap`` limits the
    batch size of every stage. ``rpss_pool`` (RPSS only, one of :data:`RPSS_POOLS`) names the stages RPSS
    draws from; the schedule's notes say which. ``growth`` (journal modes, one of :data:`pgps.stages.GROWTH`):
    which axis grows next, ``"code"`` (the authors' implementation, default) or ``"text"`` (the article's
    wording); a schedule grown by the text says so in its notes.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if rpss_pool not in RPSS_POOLS:
        raise ValueError(f"unknown RPSS pool {rpss_pool!r}; choose one of: {', '.join(RPSS_POOLS)}")
    if growth not in stage_lists.GROWTH:
        raise ValueError(f"unknown stage growth {growth!r}; choose one of: {', '.join(stage_lists.GROWTH)}")
    if isinstance(batch_size_base, bool) or int(batch_size_base) != batch_size_base or batch_size_base < 1:
        raise ValueError(f"batch_size_base must be a positive integer, got {batch_size_base!r}")
    batch_size_base = int(batch_size_base)
    if iterations_per_epoch < 1:
        raise ValueError(f"iterations_per_epoch must be positive, got {iterations_per_epoch}")
    p_max, step, _ = stage_lists.validate(patch_size_max, steps, patch_size_min)
    notes: list[str] = []

    if mode == "rpss":
        notes.append(f"RPSS pool: {RPSS_POOLS[rpss_pool]}")
    if mode == "cps":
        sizes = [p_max]
    elif mode in ("miccai", "miccai-plus") or (mode == "rpss" and rpss_pool == "miccai"):
        sizes = stage_lists.legacy_stages(p_max, step, patch_size_min)
    else:
        sizes = stage_lists.journal_stages(p_max, step, patch_size_min, growth)
        if growth != "code":
            notes.append(f"stage growth: {stage_lists.GROWTH[growth]}")
        if not single_voxel_bottleneck and len(sizes) > 1 and sizes[0] == step:
            notes.append(
                f"P_min moved one stage up from {fmt_size(sizes[0])} to {fmt_size(sizes[1])}: "
                "the architecture cannot train a single-voxel bottleneck"
            )
            sizes = sizes[1:]

    if mode == "performance":
        batch_sizes = batch.performance_batch_sizes(sizes, batch_size_base)
    elif mode == "miccai-plus":
        batch_sizes = batch.miccai_plus_batch_sizes(sizes, batch_size_base)
    else:
        batch_sizes = batch.efficiency_batch_sizes(sizes, batch_size_base)
    batch_sizes = batch.cap_batch_sizes(batch_sizes, batch_size_cap, batch_size_base)
    if batch_size_cap is not None:
        notes.append(f"batch size capped at {batch_size_cap}")

    stage_epochs = pacing.epochs_per_stage(len(sizes), epochs)
    if stage_epochs[0] == 0:
        idle = [i for i, e in enumerate(stage_epochs) if e == 0]
        notes.append(
            f"{epochs} epochs are fewer than the {len(sizes)} stages: stage{'s' if len(idle) > 1 else ''} "
            f"{', '.join(map(str, idle))} get 0 epochs"
        )
        if mode != "rpss":  # RPSS draws a stage per iteration; the paced modes never train those stages
            warnings.warn(f"{notes[-1]} and never train (give at least {len(sizes)} epochs)", stacklevel=2)
    if mode == "progressive-resolution":
        crops = [p_max] * len(sizes)
    else:
        crops = list(sizes)
    return Schedule(
        mode=mode,
        patch_size_max=p_max,
        batch_size_base=batch_size_base,
        steps=step,
        stages=tuple(
            Stage(patch_size=p, batch_size=b, epochs=e, crop_size=c)
            for p, b, e, c in zip(sizes, batch_sizes, stage_epochs, crops, strict=True)
        ),
        iterations_per_epoch=int(iterations_per_epoch),
        seed=int(seed),
        notes=tuple(notes),
    )
