"""One table of names: curriculum modes, batch samplers, backbones, losses, training lengths and learning-rate
scalings, each with its part of an nnU-Net trainer name and its printed label, and the trainer-name grammar.

Everything that names one of them reads it here: the nnU-Net trainer variants (:mod:`pgps.nnunet.variants`), the
experiment grid (:mod:`pgps.experiments.grid`), the command line's choices, the report's labels and the workflow
config schema's enums (a test holds the schema to this table). Adding a sampler or a backbone is one entry here plus
its implementation (docs/pages/contributing.md: "Adding a sampler, a backbone, a report table or a command").

A trainer name is ``nnUNetTrainer_PGPS_[<backbone>_]<mode>[_<sampler>][_NoMirroring][_<length>pct][_<loss>][_<lr>]``,
e.g. ``nnUNetTrainer_PGPS_Performance_SingleCrop``, ``nnUNetTrainer_PGPS_UNETR_Efficiency``,
``nnUNetTrainer_PGPS_CPS_NoMirroring_10pct_DiceFocal``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

TRAINER_PREFIX = "nnUNetTrainer_PGPS_"


@dataclasses.dataclass(frozen=True)
class Mode:
    """A curriculum mode: its trainer-name part, printed label, short table header and description."""

    trainer: str
    label: str
    short: str
    description: str
    family: str  # "journal" (the article's three), "miccai" (MICCAI 2024's), or "other"


MODES: dict[str, Mode] = {
    "cps": Mode(
        "CPS", "CPS", "CPS",
        "constant patch size (plain nnU-Net): P_max and b_base throughout",
        "journal",
    ),
    "efficiency": Mode(
        "Efficiency", "PGPS-Efficiency", "PGPS-Eff",
        "PGPS-Efficiency: journal stages, constant batch size",
        "journal",
    ),
    "performance": Mode(
        "Performance", "PGPS-Performance", "PGPS-Perf",
        "PGPS-Performance: journal stages, batch floor(b_base*numel(P_max)/numel(P))",
        "journal",
    ),
    "miccai": Mode(
        "MICCAI", "PGPS (MICCAI 2024)", "PGPS",
        "MICCAI 2024 PGPS: legacy stages (2x1x1 start, round-robin), constant batch size",
        "miccai",
    ),
    "miccai-plus": Mode(
        "MICCAIPlus", "PGPS+ (MICCAI 2024)", "PGPS+",
        "MICCAI 2024 PGPS+: legacy stages, batch chain starting at 2",
        "miccai",
    ),
    "rpss": Mode(
        "RPSS", "RPSS", "RPSS",
        "random patch size sampling: a stage of the pool (default: MICCAI 2024's stages) drawn uniformly per "
        "iteration, b_base",
        "miccai",
    ),
    "progressive-resolution": Mode(
        "ProgressiveResolution", "Progressive Resolution", "Prog. Res.",
        "journal input sizes at b_base, each the P_max crop resampled to it",
        "other",
    ),
}  # fmt: skip
JOURNAL_MODES = tuple(k for k, m in MODES.items() if m.family == "journal")
MICCAI_MODES = tuple(k for k, m in MODES.items() if m.family == "miccai")
"""The MICCAI 2024 strategies; like the journal's they have training-length variants (its Supplemental Table 2)."""


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A batch construction (journal Appendix A): its trainer-name part (empty: the mode's default) and label."""

    trainer: str
    label: str


SAMPLERS: dict[str, Sampler] = {
    "split_crop": Sampler("", "Split-Crop"),  # PGPS-Performance's own
    "single_crop": Sampler("SingleCrop", "Single-Crop"),
    "multi_crop": Sampler("MultiCrop", "Multi-Crop"),
    "single_volume": Sampler("SingleVolume", "Single-Volume"),
}
SAMPLER_VARIANTS = tuple(k for k, s in SAMPLERS.items() if s.trainer)
"""The samplers with trainers of their own (PGPS-Performance with another batch construction)."""


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A network: the nnU-Net plans and configuration it trains, its trainer-name part, label and planner."""

    plans: str
    configuration: str
    trainer: str  # empty for the U-Nets: the ResEnc presets are plans, trained by the U-Net trainers
    label: str
    planner: str | None = None  # nnUNetv2_plan_experiment -pl ... (ResEnc presets)


TRANSFORMER_PLANS = "nnUNetTransformerPlans"
BACKBONES: dict[str, Backbone] = {
    "unet": Backbone("nnUNetPlans", "3d_fullres", "", "UNet (nnU-Net)"),
    "resenc_m": Backbone("nnUNetResEncUNetMPlans", "3d_fullres", "", "ResEncM", "nnUNetPlannerResEncM"),
    "resenc_l": Backbone("nnUNetResEncUNetLPlans", "3d_fullres", "", "ResEncL", "nnUNetPlannerResEncL"),
    "resenc_xl": Backbone("nnUNetResEncUNetXLPlans", "3d_fullres", "", "ResEncXL", "nnUNetPlannerResEncXL"),
    "unetr": Backbone(TRANSFORMER_PLANS, "3d_unetr", "UNETR", "UNETR"),
    "swinunetr": Backbone(TRANSFORMER_PLANS, "3d_swinunetr", "SwinUNETR", "SwinUNETR"),
}
TRANSFORMERS = tuple(k for k, b in BACKBONES.items() if b.trainer)
"""The backbones with trainers of their own (MONAI's transformers, on configurations of ``pgps backbone-plans``)."""


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss variant (:mod:`pgps.nnunet.losses`): its trainer-name suffix (empty: nnU-Net's Dice + CE) and label."""

    trainer: str
    label: str


LOSSES: dict[str, Loss] = {
    "dice_ce": Loss("", "Dice + CE"),
    "dice_focal": Loss("DiceFocal", "Dice + Focal"),
    "dice_topk10": Loss("DiceTopK10", "Dice + TopK10"),
    "dice_perimeter": Loss("DicePerim", "Dice + Perimeter"),
}
TRAINING_LENGTHS: dict[int, float] = {1: 0.01, 10: 0.10, 25: 0.25, 50: 0.50, 100: 1.0}
"""Training lengths: percent of nnU-Net's 250 iterations per epoch -> the trainers' ``training_length`` (1000 epochs
kept); every length but 100 has trainers of its own (``_<p>pct``)."""
LR_SCALINGS: dict[str, str] = {"linear": "LRlinear", "sqrt": "LRsqrt"}
"""Learning-rate scaling (:func:`pgps.lr.scaled_learning_rate`) -> trainer-name suffix (none: nnU-Net's rate)."""


def trainer_name(
    mode: str,
    backbone: str = "unet",
    sampler: str = "default",
    mirroring: bool = True,
    length: int = 100,
    loss: str = "dice_ce",
    lr_scaling: str | None = None,
) -> str:
    """The pgps trainer class nnU-Net trains these factors with (``-tr``); ``sampler="default"``: the mode's own."""
    parts = [f"{TRAINER_PREFIX}{BACKBONES[backbone].trainer}{'_' if BACKBONES[backbone].trainer else ''}"
             f"{MODES[mode].trainer}"]  # fmt: skip
    if sampler != "default" and SAMPLERS[sampler].trainer:
        parts.append(SAMPLERS[sampler].trainer)
    if not mirroring:
        parts.append("NoMirroring")
    if length != 100:
        parts.append(f"{length}pct")
    if LOSSES[loss].trainer:
        parts.append(LOSSES[loss].trainer)
    if lr_scaling:
        parts.append(LR_SCALINGS[lr_scaling])
    return "_".join(parts)


def parse_trainer_name(trainer: str, plans: str = "nnUNetPlans") -> dict[str, Any]:
    """The factors a trainer name (and, for the ResEnc presets, the plans identifier) encode: the inverse of
    :func:`trainer_name` (``backbone``, ``mode``, ``sampler``, ``mirroring``, ``length``, ``loss``, ``lr_scaling``)."""
    if not trainer.startswith(TRAINER_PREFIX):
        raise ValueError(f"{trainer!r} is not a pgps trainer (they start with {TRAINER_PREFIX})")
    parts = trainer[len(TRAINER_PREFIX) :].split("_")
    backbone = next((k for k, b in BACKBONES.items() if b.planner and b.plans == plans), "unet")
    for key, b in BACKBONES.items():
        if b.trainer and parts[0] == b.trainer:
            backbone, parts = key, parts[1:]
    modes = {m.trainer: k for k, m in MODES.items()}
    if not parts or parts[0] not in modes:
        raise ValueError(f"{trainer!r}: no curriculum mode in its name (one of {', '.join(modes)})")
    found = {"backbone": backbone, "mode": modes[parts[0]], "sampler": "default", "mirroring": True, "length": 100,
             "loss": "dice_ce", "lr_scaling": None}  # fmt: skip
    samplers = {s.trainer: k for k, s in SAMPLERS.items() if s.trainer}
    losses = {x.trainer: k for k, x in LOSSES.items() if x.trainer}
    scalings = {v: k for k, v in LR_SCALINGS.items()}
    for part in parts[1:]:
        if part in losses:
            found["loss"] = losses[part]
        elif part in scalings:
            found["lr_scaling"] = scalings[part]
        elif part in samplers:
            found["sampler"] = samplers[part]
        elif part == "NoMirroring":
            found["mirroring"] = False
        elif part.endswith("pct") and part[:-3].isdigit():
            found["length"] = int(part[:-3])
        else:
            raise ValueError(f"{trainer!r}: unknown part {part!r}")
    return found


SCHEMA_ENUMS: dict[str, list] = {
    "mode": list(MODES),
    "journal_mode": list(JOURNAL_MODES),
    "sampler": ["default", *SAMPLER_VARIANTS],
    "backbone": list(BACKBONES),
    "loss": list(LOSSES),
    "length": list(TRAINING_LENGTHS),
}
"""The enums the workflow config schema must list (tests/test_workflow.py holds it to them)."""
