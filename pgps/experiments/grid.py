"""The article's experiment grid: training runs as factor tuples, and the nnU-Net names they map to.

An experiment of the workflow config (``article.experiments`` in ``workflow/configs/article.yaml``)
is a product of factor lists: datasets x backbones x modes x samplers x mirroring x lengths x
folds x seeds. :func:`grid_runs` expands every enabled experiment and drops repeats, so a run
shared by several tables (e.g. CPS on BTCV, fold 0, 100%, which Tables 1, 3, B.5 and D.7 all use)
is trained once. :class:`Run` knows nnU-Net's names for it: trainer class, plans identifier,
configuration, and the fold folder nnU-Net writes.

Optional factors: ``losses`` (:data:`pgps.names.LOSSES`) and ``variants`` (another patch and batch size on
the planned network, ``pgps plans-variant``), for the AMOS22 large-batch study
(``workflow/configs/amos22.yaml``). An experiment's ``gpus`` (default 1) is the number of GPUs each
of its runs trains on (nnU-Net's ``-num_gpus``, DDP): a resource, not a factor; a run shared by
experiments takes the most (:func:`grid_gpus`).

Torch-free: Snakemake imports this while it builds the DAG.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from pgps import names
from pgps.plans import variant_name

FACTORS = ("dataset", "backbone", "mode", "sampler", "mirroring", "length", "fold", "seed")
"""A run's factors, in the order of the run manifest's columns."""

BACKBONES = names.BACKBONES  # the one table of names (pgps.names): modes, samplers, backbones, losses, lengths
TRANSFORMER_PLANS, TRANSFORMERS = names.TRANSFORMER_PLANS, names.TRANSFORMERS
JOURNAL_MODES, MICCAI_MODES = names.JOURNAL_MODES, names.MICCAI_MODES
VARIANT_PLANS = "nnUNetVariantPlans"
"""Plans identifier of the plans variants of a dataset: nnUNetPlans plus one configuration per (patch, batch)
the grid trains (``pgps plans-variant``), all on the preprocessed 3d_fullres data."""


@dataclass(frozen=True, order=True)
class Run:
    """One training run: a dataset trained with one curriculum on one fold with one seed."""

    dataset: str
    backbone: str
    mode: str
    sampler: str  # "default" = the mode's own batch construction (Split-Crop for Performance)
    mirroring: bool
    length: int  # percent of the default iterations per epoch
    fold: int
    seed: int  # 0 = the main grid's run; repeated runs use further seeds
    loss: str = "dice_ce"
    patch_size: tuple[int, ...] | None = None  # a plans variant's patch (None: the planned one)
    batch_size: int | None = None  # a plans variant's batch size (None: the planned one)

    @property
    def is_variant(self) -> bool:
        return self.patch_size is not None or self.batch_size is not None

    @property
    def plans(self) -> str:
        return VARIANT_PLANS if self.is_variant else BACKBONES[self.backbone].plans

    @property
    def configuration(self) -> str:
        base = BACKBONES[self.backbone].configuration
        return variant_name(base, self.patch_size, self.batch_size) if self.is_variant else base

    @property
    def trainer(self) -> str:
        """The pgps trainer class nnU-Net trains this run with (``-tr``, :func:`pgps.names.trainer_name`)."""
        return names.trainer_name(self.mode, self.backbone, self.sampler, self.mirroring, self.length, self.loss)

    def results_dir(self) -> str:
        """nnU-Net results root of this run, relative to the nnU-Net folder: one per seed, since
        nnU-Net's output folder is fixed by dataset, trainer, plans and configuration."""
        return "results" if self.seed == 0 else f"results_seed{self.seed}"

    def fold_dir(self, nnunet_dir: str, dataset_folder: str) -> str:
        """The fold folder nnU-Net writes (checkpoints, validation/, pgps telemetry)."""
        return (
            f"{nnunet_dir}/{self.results_dir()}/{dataset_folder}/"
            f"{self.trainer}__{self.plans}__{self.configuration}/fold_{self.fold}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_run(run: Run) -> Run:
    """Raise ``ValueError`` for a factor combination no pgps trainer implements; return ``run``."""

    def fail(why: str) -> None:
        raise ValueError(f"no pgps trainer for {run}: {why}")

    if run.backbone not in BACKBONES:
        fail(f"backbone must be one of {', '.join(BACKBONES)}")
    if run.mode not in names.MODES:
        fail(f"mode must be one of {', '.join(names.MODES)}")
    if run.length not in names.TRAINING_LENGTHS:
        fail(f"length must be one of {tuple(names.TRAINING_LENGTHS)} (% of 250 iterations per epoch)")
    if not 0 <= run.fold <= 4 or run.seed < 0:
        fail("folds are 0-4 and seeds non-negative")
    if run.sampler == "split_crop":
        fail("Split-Crop is PGPS-Performance's default batch construction: use sampler 'default'")
    if run.sampler != "default" and run.sampler not in names.SAMPLER_VARIANTS:
        fail(f"sampler must be 'default' or one of {', '.join(names.SAMPLER_VARIANTS)}")
    variant = run.sampler != "default" or not run.mirroring or run.length != 100
    if run.mode not in JOURNAL_MODES and (run.sampler != "default" or not run.mirroring):
        fail("the MICCAI 2024, RPSS and Progressive Resolution trainers have no sampler or mirroring variants")
    if run.mode not in (*JOURNAL_MODES, *MICCAI_MODES) and run.length != 100:
        fail("Progressive Resolution has no training-length variants")
    if run.sampler != "default" and (run.mode != "performance" or not run.mirroring or run.length != 100):
        fail("sampler variants exist for PGPS-Performance with mirroring at 100% length only")
    if run.backbone in TRANSFORMERS and (variant or run.mode not in JOURNAL_MODES):
        fail("UNETR/SwinUNETR trainers exist for CPS, Efficiency and Performance at their defaults only")
    if run.loss not in names.LOSSES:
        fail(f"loss must be one of {', '.join(names.LOSSES)}")
    if run.is_variant:
        if run.backbone != "unet":
            fail("plans variants (patch_size/batch_size) are made from nnUNetPlans' 3d_fullres: backbone unet")
        if run.patch_size is None or run.batch_size is None or len(run.patch_size) != 3:
            fail("a plans variant needs both patch_size (3 axes) and batch_size")
        if any(int(p) < 1 for p in run.patch_size) or run.batch_size < 1:
            fail("a plans variant's patch_size and batch_size must be positive")
    return run


def experiment_runs(experiment: dict, datasets: dict[str, dict]) -> list[Run]:
    """Every run of one experiment (a product of its factor lists).

    ``mirroring`` entries that are ``None`` take the dataset's own default (``mirroring`` key of
    its ``datasets`` entry: the article trains ToothFairy2 and TotalSegmentatorV2 without it).
    """
    runs = []
    for dataset in experiment["datasets"]:
        if dataset not in datasets:
            raise ValueError(f"dataset {dataset!r} is not in the config's datasets ({', '.join(datasets)})")
        default_mirroring = datasets[dataset].get("mirroring", True)
        for backbone, mode, sampler, mirroring, length, fold, seed, loss, variant in itertools.product(
            experiment["backbones"],
            experiment["modes"],
            experiment["samplers"],
            experiment["mirroring"],
            experiment["lengths"],
            experiment["folds"],
            experiment["seeds"],
            experiment.get("losses") or ["dice_ce"],
            experiment.get("variants") or [None],
        ):
            mirror = default_mirroring if mirroring is None else bool(mirroring)
            patch = tuple(int(p) for p in variant["patch_size"]) if variant and variant.get("patch_size") else None
            batch = int(variant["batch_size"]) if variant and variant.get("batch_size") else None
            run = Run(dataset, backbone, mode, sampler, mirror, int(length), int(fold), int(seed), loss, patch, batch)
            runs.append(check_run(run))
            check_gpus(run, int(experiment.get("gpus", 1)))
    return runs


def check_gpus(run: Run, gpus: int) -> None:
    """Raise ``ValueError`` when ``run`` cannot start on ``gpus`` GPUs (nnU-Net's DDP gives each GPU a slice of every
    stage's batch, at least one patch).

    Every curriculum mode keeps the planned batch ``b_base`` at its last stage (``P_max``) and never trains a smaller
    one (Efficiency: ``b_base`` everywhere; Performance and PGPS+: more at smaller patches), so the run can start
    exactly when ``b_base >= gpus``. On several GPUs that batch must be known when the DAG is built: a plans variant's
    ``batch_size`` (nnU-Net's own plan is only known after planning).
    """
    if gpus < 1:
        raise ValueError(f"{run.trainer} {run.configuration}: gpus must be at least 1, got {gpus}")
    if gpus == 1:
        return
    if run.batch_size is None:
        raise ValueError(
            f"{run.trainer} {run.configuration}: gpus {gpus} needs the batch size before nnU-Net plans it: give the "
            f"experiment a variant with batch_size of at least {gpus} (pgps plans-variant), or train on one GPU"
        )
    if run.batch_size < gpus:
        raise ValueError(
            f"{run.trainer} {run.configuration}: its last stage (P_max {'x'.join(map(str, run.patch_size or ()))}) "
            f"trains the planned batch of {run.batch_size}, the smallest of every stage, fewer than the {gpus} GPUs "
            f"(each GPU needs at least one patch): lower gpus to at most {run.batch_size} or raise the variant's "
            f"batch_size to at least {gpus}"
        )


def enabled_experiments(article: dict) -> Iterator[tuple[dict, list[Run]]]:
    """Every enabled experiment with its runs; an experiment that cannot run is refused with its name."""
    for name, experiment in article["experiments"].items():
        if not experiment.get("enabled", True):
            continue
        try:
            runs = experiment_runs(experiment, article["datasets"])
        except ValueError as exc:
            raise ValueError(f"experiment {name!r}: {exc}") from None
        yield experiment, runs


def grid_runs(article: dict) -> list[Run]:
    """The runs of every enabled experiment, each once, in first-seen order."""
    seen: dict[Run, None] = {}
    for _, runs in enabled_experiments(article):
        seen.update(dict.fromkeys(runs))
    return list(seen)


def grid_gpus(article: dict) -> dict[Run, int]:
    """GPUs per run of every enabled experiment: its experiments' ``gpus`` (default 1), the most if several."""
    gpus: dict[Run, int] = {}
    for experiment, runs in enabled_experiments(article):
        for run in runs:
            gpus[run] = max(gpus.get(run, 1), int(experiment.get("gpus", 1)))
    return gpus


def grid_variants(runs: list[Run]) -> dict[str, list[tuple[tuple[int, ...], int]]]:
    """Per dataset, the plans variants ``(patch_size, batch_size)`` its runs train (for ``pgps plans-variant``)."""
    out: dict[str, list] = {}
    for run in runs:
        if run.is_variant and (run.patch_size, run.batch_size) not in out.setdefault(run.dataset, []):
            out[run.dataset].append((run.patch_size, run.batch_size))
    return out


def dataset_folder(dataset: dict) -> str:
    """nnU-Net's dataset folder name, e.g. ``Dataset004_Hippocampus``."""
    return f"Dataset{dataset['dataset_id']:03d}_{dataset['name']}"


def factors_of_trainer(trainer: str, plans: str = "nnUNetPlans") -> dict[str, Any]:
    """The backbone, mode, sampler, mirroring, length and loss a pgps trainer name (and, for the ResEnc presets, the
    plans identifier) encode: the inverse of :attr:`Run.trainer` and :attr:`Run.plans`, e.g.
    ``nnUNetTrainer_PGPS_Performance_NoMirroring_10pct`` (:func:`pgps.names.parse_trainer_name`)."""
    factors = names.parse_trainer_name(trainer, plans)
    if factors.pop("lr_scaling"):
        raise ValueError(f"{trainer!r}: the grid trains nnU-Net's learning rate (no LR suffix)")
    return factors


def _non_finite(value: Any, where: str = "") -> tuple[str, float] | None:
    """The key path and value of the first NaN or infinity in a parsed config, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def check_config(config: dict[str, Any]) -> None:
    """What the config schema cannot say and would otherwise fail only at job time; raises ``ValueError``
    naming the key. Run after the schema's ``validate`` (defaults filled in), while Snakemake builds the DAG:

    - every ``schedules.datasets`` entry builds a schedule in every ``schedules.modes`` (e.g. a patch that
      is not a multiple of its steps);
    - no two ``demo.datasets`` (and no two ``article.datasets``) share a ``dataset_id``: nnU-Net finds a
      dataset by its id, so they would overwrite each other's folders;
    - every number is finite (``.nan`` passes the schema's ``minimum``; it would fail inside a job).
    """
    from pgps.schedule import make_schedule

    found = _non_finite(config)
    if found:  # the schema's number type admits them (and every comparison with NaN is false)
        raise ValueError(f"config {found[0]}: a number must be finite, not {found[1]}")
    schedules = config.get("schedules") or {}
    for name, planned in (schedules.get("datasets") or {}).items():
        for mode in schedules["modes"]:
            try:
                make_schedule(
                    mode, planned["patch_size"], planned["steps"], planned["batch_size"],
                    epochs=schedules["epochs"], iterations_per_epoch=schedules["iterations_per_epoch"],
                )  # fmt: skip
            except ValueError as exc:
                raise ValueError(f"config schedules.datasets.{name} ({mode}): {exc}") from None
    for section in ("demo", "article"):
        owners: dict[int, str] = {}
        for name, dataset in ((config.get(section) or {}).get("datasets") or {}).items():
            other = owners.setdefault(int(dataset["dataset_id"]), name)
            if other != name:
                raise ValueError(
                    f"config {section}.datasets.{name}: dataset_id {dataset['dataset_id']} is already "
                    f"{section}.datasets.{other}'s; nnU-Net finds datasets by id, give each its own"
                )
