"""Schedules as the CLI prints them (``pgps schedule --json``), turned into stages and a table.

A schedule summary is the dict ``Schedule.summary()`` returns: ``mode``, ``patch_size_max``,
``batch_size_base``, ``stages`` (``patch_size``, ``batch_size``, ``epochs``) and
``relative_voxels``. Nothing here recomputes a schedule; it only reads one.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pgps.schedule import Stage
from pgps.sizes import numel

Summary = Mapping[str, Any]

COLUMNS: tuple[str, ...] = (
    "dataset",
    "mode",
    "stage",
    "patch_size_x",
    "patch_size_y",
    "patch_size_z",
    "patch_voxels",
    "batch_size",
    "tensor_voxels",
    "epochs",
    "first_epoch",
    "relative_voxels",
)
"""Columns of the schedule table; voxel counts are per input channel, epochs 0-based."""


def load_summary(path: str | Path) -> dict[str, Any]:
    """Read one ``pgps schedule --json`` output."""
    with open(path) as f:
        return json.load(f)


def stages(summary: Summary) -> tuple[Stage, ...]:
    """The summary's stages as core :class:`pgps.Stage` values (validated sizes)."""
    return tuple(
        Stage(patch_size=s["patch_size"], batch_size=int(s["batch_size"]), epochs=int(s["epochs"]))
        for s in summary["stages"]
    )


def first_epochs(stage_list: Sequence[Stage]) -> list[int]:
    """First (0-based) training epoch of every stage."""
    return list(itertools.accumulate((s.epochs for s in stage_list[:-1]), initial=0))


def total_epochs(summary: Summary) -> int:
    """Training epochs E of a schedule."""
    return sum(int(s["epochs"]) for s in summary["stages"])


def schedule_rows(dataset: str, summary: Summary) -> list[dict[str, Any]]:
    """One row per stage of one schedule, with the columns of :data:`COLUMNS`."""
    stage_list = stages(summary)
    return [
        {
            "dataset": dataset,
            "mode": summary["mode"],
            "stage": i,
            "patch_size_x": s.patch_size[0],
            "patch_size_y": s.patch_size[1],
            "patch_size_z": s.patch_size[2],
            "patch_voxels": numel(s.patch_size),
            "batch_size": s.batch_size,
            "tensor_voxels": s.tensor_voxels,
            "epochs": s.epochs,
            "first_epoch": first,
            "relative_voxels": float(summary["relative_voxels"]),
        }
        for i, (s, first) in enumerate(zip(stage_list, first_epochs(stage_list), strict=True))
    ]


def schedule_table(schedules: Mapping[str, Mapping[str, Summary]]) -> pd.DataFrame:
    """The tidy schedule table: one row per dataset x mode x stage.

    ``schedules[dataset][mode]`` is a CLI summary; rows keep the mappings' order.
    """
    rows = [
        row for dataset, by_mode in schedules.items() for s in by_mode.values() for row in schedule_rows(dataset, s)
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))
