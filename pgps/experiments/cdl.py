"""The data-level curriculum experiment (CDL-UNet, Wang et al., FLARE 2024): its models, their training settings and
where their files go. The workflow's ``cdl`` section (``workflow/configs/cdl.yaml``, documented in
``workflow/schemas/config.schema.yaml``) sets the sizes; ``workflow/rules/cdl.smk`` runs it.

Per seed (a replicate: its own synthetic dataset and its own training seed) four models are trained:

- ``easy``: the easy course, ``easy_epochs`` (E1) on the easy cases only (the paper's 1000-epoch
  "Only Easy Course" model);
- ``easy_then_hard``: that model continued for ``hard_epochs`` (E2) on easy + hard cases with a fresh
  optimizer and a poly learning rate that starts again (the paper's final model: 1000 + 1500 epochs);
- ``easy_continued``: the same model continued for E2 on the easy cases only (the compute control: the
  same epochs and the same restart, without the hard cases);
- ``uniform``: E1 + E2 epochs on every training case, erroneous ones included (what one trains without
  CDL; the same epochs as the final model).

The two continuations load the one ``checkpoint_final.pth`` of ``easy`` (``PGPS_INIT_WEIGHTS``,
:mod:`pgps.nnunet.data_curriculum`), which records its SHA-256 in each of them. The three arms are
compared by :mod:`pgps.report.cdl`.

Torch-free and pandas-free: Snakemake imports this while it builds the DAG.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Mapping
from typing import Any

EASY = "easy"
"""The easy-course model the two continuations start from."""
ARMS = ("easy_then_hard", "easy_continued", "uniform")
"""The compared arms: the paper's final model, the compute control and uniform training."""
MODELS = (EASY, *ARMS)
"""Every model trained per seed (the easy course is also scored, as the paper's "Only Easy Course" row)."""
COMPARISONS = (("easy_then_hard", "easy_continued"), ("easy_then_hard", "uniform"))
"""The tested comparisons (arm, against): one family, Holm-corrected."""
LABELS = {
    EASY: "only easy course (E1)",
    "easy_then_hard": "easy then hard (E1 + E2, final model)",
    "easy_continued": "easy continued (E1 + E2, easy only)",
    "uniform": "uniform (E1 + E2, all cases)",
}
"""How tables name the models."""


@dataclasses.dataclass(frozen=True)
class Model:
    """One model of a seed: its trainer, epochs, data pacing (``PGPS_DATA_PACING`` and its parameters; ``None``
    for a trainer without data curriculum) and the model whose final weights it starts from."""

    name: str
    trainer: str
    epochs: int
    pacing: str | None = None
    pacing_params: tuple[tuple[str, Any], ...] = ()
    start_from: str | None = None


def models(cdl: Mapping[str, Any]) -> dict[str, Model]:
    """The four models of a seed from the ``cdl`` config section."""
    base = cdl["trainer"]
    curriculum = f"{base}_DataCurriculum"
    e1, e2 = int(cdl["easy_epochs"]), int(cdl["hard_epochs"])
    easy_only = (("easy_fraction", 1.0),)
    return {
        EASY: Model(EASY, curriculum, e1, "easy_then_hard", easy_only),
        "easy_then_hard": Model("easy_then_hard", curriculum, e2, "none", (), EASY),  # every usable case
        "easy_continued": Model("easy_continued", curriculum, e2, "easy_then_hard", easy_only, EASY),
        "uniform": Model("uniform", base, e1 + e2),
    }


def seed_dir(nnunet_dir: str, seed: int) -> str:
    """The nnU-Net tree (raw, preprocessed, results_<model>) of one seed."""
    return f"{nnunet_dir}/seed{seed}"


def dataset_name(cdl: Mapping[str, Any], enhanced: bool = False) -> str:
    return f"Dataset{cdl['enhanced_id']:03d}_CDLEnhanced" if enhanced else f"Dataset{cdl['dataset_id']:03d}_CDLNoisy"


def fold_dir(cdl: Mapping[str, Any], nnunet_dir: str, seed: int, model: str) -> str:
    """The fold folder of ``model`` trained on ``seed``'s data."""
    m = models(cdl)[model]
    return (
        f"{seed_dir(nnunet_dir, seed)}/results_{model}/{dataset_name(cdl, enhanced=True)}/"
        f"{m.trainer}__nnUNetPlans__{cdl['configuration']}/fold_{cdl['fold']}"
    )


def synth_args(cdl: Mapping[str, Any], seed: int) -> str:
    """``pgps synth``'s options for one seed's dataset (its synthesis seed is the replicate's seed)."""
    knobs = [
        f"--preset {cdl['preset']} --cases {cdl['cases']} --test-cases {cdl['test_cases']} --seed {seed}",
        f"--difficulty {cdl['difficulty'][0]} {cdl['difficulty'][1]} --hard-contrast {cdl['hard_contrast']}",
        f"--hard-blur {cdl['hard_blur']} --label-sets {cdl['label_sets']} --label-iso-spread {cdl['iso_spread']}",
        f"--label-levels {cdl['label_levels'][0]} {cdl['label_levels'][1]}",
    ]
    if cdl.get("shape"):
        knobs.append("--shape " + " ".join(map(str, cdl["shape"])) + " --shape-jitter 0")
    if cdl.get("radius"):
        knobs.append("--radius " + " ".join(map(str, cdl["radius"])))
    return " ".join(knobs)


def train_settings(cdl: Mapping[str, Any], model: str, seed: int, init_weights: str | None = None) -> dict[str, str]:
    """The environment of one training: short-run sizes, the seed, the model's pacing and its start weights."""
    m = models(cdl)[model]
    if (m.start_from is None) != (init_weights is None):
        raise ValueError(f"model {model} {'starts from ' + m.start_from if m.start_from else 'starts afresh'}")
    settings = {
        "PGPS_EPOCHS": str(m.epochs),
        "PGPS_ITERATIONS_PER_EPOCH": str(cdl["iterations_per_epoch"]),
        "PGPS_VAL_ITERATIONS": str(cdl["val_iterations"]),
        "PGPS_SEED": str(seed),
        "PGPS_PROGRESS_EVERY": "0",
        "nnUNet_n_proc_DA": "0",
    }
    if m.pacing is not None:
        settings["PGPS_DATA_PACING"] = m.pacing
        settings["PGPS_DATA_PACING_PARAMS"] = json.dumps(dict(m.pacing_params))
    if init_weights is not None:
        settings["PGPS_INIT_WEIGHTS"] = init_weights
    return settings


def export(settings: Mapping[str, str]) -> str:
    """``export K=V ...;`` for a shell command."""
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in settings.items()) + ";"


def notes(cdl: Mapping[str, Any]) -> str:
    """One line on the run's size for the rendered tables."""
    seeds = ", ".join(map(str, cdl["seeds"]))
    return (
        f"Run: seeds {seeds} (each its own dataset: {cdl['cases']} training and {cdl['test_cases']} test cases of the "
        f"{cdl['preset']} preset, image difficulty {cdl['difficulty'][0]:g}-{cdl['difficulty'][1]:g}, "
        f"{cdl['label_sets']} annotators); E1 = {cdl['easy_epochs']}, E2 = {cdl['hard_epochs']} epochs x "
        f"{cdl['iterations_per_epoch']} iterations; trainer {cdl['trainer']}, configuration {cdl['configuration']}, "
        f"fold {cdl['fold']}."
    )
