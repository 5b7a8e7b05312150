"""The synthetic study: the article's claims on a grid a 2-core CPU trains in about an hour.

The workflow's ``study`` section (``config.yaml``, documented in ``workflow/schemas/config.schema.yaml``;
target ``snakemake --cores 2 study``) describes a grid of training runs:

- *levels*: datasets of the ``imbalance`` preset of :mod:`pgps.data.synth` that differ only in their
  measured foreground share (the lesions are scaled, :func:`pgps.data.synth.with_foreground_share`);
  every other knob (volume, cases, number of lesions, shapes, contrast, noise) is fixed;
- *replicates*: one per seed. A replicate draws its own dataset at every level (synthesis seed =
  the replicate's seed) and trains with that seed (``PGPS_SEED``: network initialisation, sampling,
  augmentation), so the replicates are independent draws of data and training, and a (level,
  replicate) pair of runs shares nothing with another pair;
- *modes*: CPS, PGPS-Efficiency and PGPS-Performance, trained by nnU-Net with the pgps trainers on
  a light CPU configuration (:mod:`pgps.nnunet.light`), all on the same dataset of a (level, replicate);
- *lengths*: the article's Figure 3 axis: every run has the same epochs and
  ``floor(iterations_per_epoch * length / 100)`` iterations per epoch (at least one).

Each run trains on the first ``train_cases`` cases of its dataset and is scored on the remaining
held-out ones (one fold in ``splits_final.json``). No run is reused across lengths: as in the article,
a shorter length keeps the epochs and the learning-rate schedule over them and shortens every epoch,
so it is not a prefix of a longer run (and a PGPS stage of a shorter run is shorter too).

Torch-free and pandas-free: Snakemake imports this while it builds the DAG.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from pgps import names
from pgps.pacing import iterations_per_epoch

STUDY_MODES = ("cps", "efficiency", "performance")
"""The strategies of the study, CPS first (every relative measure is against it)."""
FOLD = 0
"""The one fold of the held-out split (``splits_final.json`` holds exactly one)."""


def level_name(share: float) -> str:
    """The dataset name of a foreground share: ``fg`` + percent with ``p`` for the point (0.005 -> ``fg0p5``)."""
    if not 0 < share < 1:
        raise ValueError(f"foreground share must be in (0, 1), got {share!r}")
    return "fg" + f"{100 * share:g}".replace(".", "p")


def level_label(share: float) -> str:
    """How figures and tables name a level: its target foreground share in percent."""
    return f"{100 * share:g}%"


@dataclasses.dataclass(frozen=True)
class Level:
    """One imbalance level of the study: its target foreground share."""

    share: float

    @property
    def name(self) -> str:
        return level_name(self.share)


@dataclasses.dataclass(frozen=True)
class Replicate:
    """One dataset of the study: a level drawn with a replicate's seed (synthesis and training), its nnU-Net id."""

    level: Level
    seed: int
    dataset_id: int

    @property
    def folder(self) -> str:
        """nnU-Net's dataset folder (the level's name: the id tells the replicates apart)."""
        return f"Dataset{self.dataset_id:03d}_{self.level.name}"

    @property
    def name(self) -> str:
        """How the characteristics table names this dataset: level and seed (``fg1_s3``)."""
        return dataset_name(self.level.name, self.seed)


def dataset_name(level: str, seed: int) -> str:
    """The name of the dataset of ``level`` drawn with ``seed`` (``fg1``, 3 -> ``fg1_s3``)."""
    return f"{level}_s{seed}"


def levels(study: dict) -> list[Level]:
    """The study's levels in config order."""
    shares = study["foreground_shares"]
    if len({level_name(s) for s in shares}) != len(shares):
        raise ValueError(f"study.foreground_shares must be distinct, got {shares}")
    return [Level(float(s)) for s in shares]


def replicates(study: dict) -> list[Replicate]:
    """Every dataset of the study, seed by seed and level by level: nnU-Net ids count up from
    ``study["dataset_id"]`` (seed index x levels + level index) and must stay within nnU-Net's 999."""
    found = levels(study)
    seeds = [int(s) for s in study["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"study.seeds must be distinct, got {seeds}")
    first = int(study["dataset_id"])
    last = first + len(seeds) * len(found) - 1
    if last > 999:
        raise ValueError(
            f"study: {len(seeds)} seeds x {len(found)} levels need dataset ids {first}..{last}, beyond nnU-Net's 999;"
            " lower study.dataset_id"
        )
    return [
        Replicate(level, seed, first + i * len(found) + j)
        for i, seed in enumerate(seeds)
        for j, level in enumerate(found)
    ]


def trainer(mode: str) -> str:
    """The pgps trainer of a study mode (``nnUNetTrainer_PGPS_CPS`` ...)."""
    if mode not in STUDY_MODES:
        raise ValueError(f"study mode must be one of {', '.join(STUDY_MODES)}, got {mode!r}")
    return names.trainer_name(mode)


def iterations(study: dict, length: int) -> int:
    """Iterations per epoch of a run at ``length`` percent (the article's rule, on the study's 100%)."""
    return iterations_per_epoch(length / 100, study["iterations_per_epoch"])


def results_dir(length: int, seed: int) -> str:
    """nnU-Net results root of the runs of one length and seed, relative to the study's nnU-Net folder
    (nnU-Net names a fold folder by dataset, trainer, plans and configuration only)."""
    return f"results/length{length}_seed{seed}"


def fold_dir(study: dict, replicate: Replicate, mode: str, length: int) -> str:
    """The fold folder a run writes, under ``study["nnunet_dir"]`` (absolute when that is)."""
    return f"{study['nnunet_dir']}/{run_dir(study, replicate, mode, length)}"


def run_dir(study: dict, replicate: Replicate, mode: str, length: int) -> str:
    """The fold folder a run writes, relative to the study's nnU-Net folder."""
    return (
        f"{results_dir(length, replicate.seed)}/{replicate.folder}/"
        f"{trainer(mode)}__nnUNetPlans__{study['configuration']}/fold_{FOLD}"
    )


def manifest(study: dict) -> list[dict[str, Any]]:
    """Run manifest rows (``pgps collect --runs``) of every run: level x seed x length x mode; ``dataset`` is the
    level and ``seed`` the replicate (its dataset's and its training's seed)."""
    rows = []
    for replicate in replicates(study):
        for length in study["lengths"]:
            for mode in study["modes"]:
                rows.append(
                    {
                        "dataset": replicate.level.name, "backbone": "unet", "mode": mode, "sampler": "default",
                        "mirroring": True, "length": int(length), "fold": FOLD, "seed": replicate.seed,
                        "trainer": trainer(mode), "plans": "nnUNetPlans", "configuration": study["configuration"],
                        "fold_dir": fold_dir(study, replicate, mode, length),
                    }
                )  # fmt: skip
    return rows


def holdout_split(identifiers: list[str], train_cases: int) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` content with one fold: the first ``train_cases`` (sorted) cases train,
    the others are held out (the synthetic cases are independent draws, so any split is a random one)."""
    ids = sorted(identifiers)
    if not 2 <= train_cases < len(ids):
        raise ValueError(f"train_cases must be at least 2 and leave held-out cases; got {train_cases} of {len(ids)}")
    return [{"train": ids[:train_cases], "val": ids[train_cases:]}]


def write_holdout_split(preprocessed: str | os.PathLike[str], train_cases: int) -> Path:
    """Write ``splits_final.json`` into an nnU-Net preprocessed dataset folder from its ``dataset.json``
    case count (the synthetic datasets name their cases ``case_000``...); returns the file."""
    from pgps.data.synth import case_identifiers
    from pgps.io import atomic_write_text

    folder = Path(preprocessed)
    count = json.loads((folder / "dataset.json").read_text())["numTraining"]
    path = folder / "splits_final.json"
    atomic_write_text(path, json.dumps(holdout_split(case_identifiers(count), train_cases), indent=1) + "\n")
    return path


def decision_parameters(study: dict) -> dict[str, float]:
    """The documented thresholds of the claim verdicts (see :mod:`pgps.report.study`)."""
    return {key: float(study[key]) for key in ("alpha", "noninferiority_margin", "flops_third_max")}


TABLES: tuple[str, ...] = (
    "study_dice", "study_differences", "study_cost", "study_tests", "study_comparisons", "study_spearman",
    "study_claims",
)  # fmt: skip
"""The study's tables (``tables/<name>.csv|md|tex``, :mod:`pgps.report.study`)."""
FIGURES: tuple[str, ...] = ("study_convergence", "study_gain_vs_share")
"""The study's figures (``figures/<name>.png|pdf``)."""
RESULTS_MD = "results.md"
RUNS_CSV = "tables/study_runs.csv"


def study_outputs() -> list[str]:
    """Every file ``pgps study-report`` writes, relative to its output folder (light: the Snakefile imports it)."""
    out = [f"tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
    out += [f"figures/{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")]
    return [*out, RUNS_CSV, RESULTS_MD]
