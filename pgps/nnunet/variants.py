"""The published PGPS trainer variants, each a few class attributes on :class:`PGPSMixin`.

Names follow nnU-Net's convention so that ``nnUNetv2_train DATASET 3d_fullres FOLD -tr NAME``
finds them once ``nnUNet_extTrainer`` points at :func:`pgps.nnunet.ext_trainer_path`. The names and the
variants' factors (samplers, backbones, lengths, losses, learning-rate scalings) come from :mod:`pgps.names`:
the sampler, transformer-backbone, length, loss and learning-rate variants are made from its tables.
"""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)

from pgps import names
from pgps.nnunet.backbone_trainer import BackboneMixin
from pgps.nnunet.data_curriculum import DataCurriculumMixin
from pgps.nnunet.memory import MemoryProbeMixin
from pgps.nnunet.trainer import PGPSMixin


class nnUNetTrainer_PGPS_CPS(PGPSMixin, nnUNetTrainer):
    """Constant patch size: plain nnU-Net training, with PGPS telemetry."""

    curriculum_mode = "cps"
    batch_sampling = None
    foreground_share = None


class nnUNetTrainer_PGPS_Efficiency(PGPSMixin, nnUNetTrainer):
    """PGPS-Efficiency: journal stages at the planned batch size, nnU-Net's own sampling."""

    curriculum_mode = "efficiency"
    batch_sampling = None
    foreground_share = None


class nnUNetTrainer_PGPS_Performance(PGPSMixin, nnUNetTrainer):
    """PGPS-Performance: batch size scaled inversely with patch volume, Split-Crop, 50% foreground."""

    curriculum_mode = "performance"
    batch_sampling = "split_crop"
    foreground_share = 0.5


def _sampler_variants() -> dict[str, type]:
    """PGPS-Performance with each other batch construction of :data:`pgps.names.SAMPLERS` (``_SingleCrop`` ...)."""
    made = {}
    for key in names.SAMPLER_VARIANTS:
        name = names.trainer_name("performance", sampler=key)
        doc = f"PGPS-Performance with {names.SAMPLERS[key].label} batches."
        made[name] = type(name, (nnUNetTrainer_PGPS_Performance,), {"batch_sampling": key, "__doc__": doc,
                                                                   "__module__": __name__})  # fmt: skip
    return made


globals().update(_sampler_variants())


# The MICCAI 2024 conference trainers (PGPS, PGPS+, RPSS) force a foreground:background ratio of one in every
# batch (MICCAI Sec. 2.3): a 50% forced-foreground share at every batch size, where nnU-Net's default is 33%.
class nnUNetTrainer_PGPS_MICCAI(nnUNetTrainer_PGPS_Efficiency):
    """MICCAI 2024 PGPS: legacy stages (2x1x1 start, round-robin growth), planned batch size, 50% foreground."""

    curriculum_mode = "miccai"
    foreground_share = 0.5


class nnUNetTrainer_PGPS_MICCAIPlus(nnUNetTrainer_PGPS_MICCAI):
    """MICCAI 2024 PGPS+: legacy stages, batch-size chain from 2, nnU-Net's one-patch-per-volume sampling."""

    curriculum_mode = "miccai-plus"


class nnUNetTrainer_PGPS_RPSS(nnUNetTrainer_PGPS_MICCAI):
    """Random patch size sampling (MICCAI 2024 Sec. 3.1): a MICCAI 2024 stage drawn uniformly per iteration."""

    curriculum_mode = "rpss"
    rpss_pool = "miccai"


class nnUNetTrainer_PGPS_RPSS_JournalPool(nnUNetTrainer_PGPS_RPSS):
    """RPSS drawing from the journal modes' stages instead of the MICCAI 2024 ones (ours, not in the papers)."""

    rpss_pool = "journal"


class nnUNetTrainer_PGPS_ProgressiveResolution(nnUNetTrainer_PGPS_Efficiency):
    """Progressive Resolution: PGPS-Efficiency's input sizes, the P_max crop resampled to them."""

    curriculum_mode = "progressive-resolution"


# No-mirroring variants: nnU-Net's own NoMirroring hook after the curriculum in the MRO.
class nnUNetTrainer_PGPS_CPS_NoMirroring(nnUNetTrainer_PGPS_CPS, nnUNetTrainerNoMirroring):
    pass


class nnUNetTrainer_PGPS_Efficiency_NoMirroring(nnUNetTrainer_PGPS_Efficiency, nnUNetTrainerNoMirroring):
    pass


class nnUNetTrainer_PGPS_Performance_NoMirroring(nnUNetTrainer_PGPS_Performance, nnUNetTrainerNoMirroring):
    pass


TRAINING_LENGTHS = {p: f for p, f in names.TRAINING_LENGTHS.items() if p != 100}
"""Training-length variants: percent of nnU-Net's 250 iterations per epoch (1000 epochs kept)."""


JOURNAL_STRATEGIES = (
    nnUNetTrainer_PGPS_CPS,
    nnUNetTrainer_PGPS_Efficiency,
    nnUNetTrainer_PGPS_Performance,
    nnUNetTrainer_PGPS_CPS_NoMirroring,
    nnUNetTrainer_PGPS_Efficiency_NoMirroring,
    nnUNetTrainer_PGPS_Performance_NoMirroring,
)
"""The journal's three strategies, with and without mirroring."""


def _training_length_variants() -> dict[str, type]:
    """``<base>_<p>pct`` for the three journal strategies, with and without mirroring (Figure 3 runs
    ToothFairy2 and TotalSegmentatorV2 without mirroring at every length), and for the MICCAI 2024
    strategies (its Figure 2 / Supplemental Table 2: CPS, RPSS and PGPS at 10, 25, 50 and 100%)."""
    made = {}
    miccai = (nnUNetTrainer_PGPS_MICCAI, nnUNetTrainer_PGPS_MICCAIPlus, nnUNetTrainer_PGPS_RPSS)
    for base in (*JOURNAL_STRATEGIES, *miccai):
        for percent, fraction in TRAINING_LENGTHS.items():
            name = f"{base.__name__}_{percent}pct"
            doc = f"{base.__name__} at {percent}% of the default iterations per epoch."
            made[name] = type(name, (base,), {"training_length": fraction, "__doc__": doc, "__module__": __name__})
    return made


globals().update(_training_length_variants())


# Backbones (journal Sec. 3.5, Table 3): MONAI's UNETR and SwinUNETR, no deep supervision, on a configuration
# made by `pgps backbone-plans` (P_max a multiple of the step: UNETR 16, SwinUNETR 32 per axis). ResEnc M/L/XL
# need no trainer of their own: the trainers above read steps from any U-Net plan (-p nnUNetResEncUNet{M,L,XL}Plans).
def _backbone_variants() -> dict[str, type]:
    """The journal's three strategies on each transformer of :data:`pgps.names.TRANSFORMERS` (``_UNETR_CPS`` ...)."""
    made = {}
    for backbone in names.TRANSFORMERS:
        for mode in names.JOURNAL_MODES:
            name = names.trainer_name(mode, backbone)
            base = globals()[names.trainer_name(mode)]
            doc = f"{base.__name__} on {names.BACKBONES[backbone].label}."
            made[name] = type(name, (BackboneMixin, base), {"backbone": backbone, "__doc__": doc,
                                                             "__module__": __name__})  # fmt: skip
    return made


globals().update(_backbone_variants())


# PGPS-Performance with batch sizes from a peak-memory probe of the network on the training device
# (pgps.nnunet.memory): b * m(P) <= b_base * m(P_max) instead of numel scaling.
class nnUNetTrainer_PGPS_Performance_MemoryProbe(MemoryProbeMixin, nnUNetTrainer_PGPS_Performance):
    pass


globals().update(
    {
        f"{name}_MemoryProbe": type(
            f"{name}_MemoryProbe", (MemoryProbeMixin, globals()[name]), {"__module__": __name__}
        )
        for name in (names.trainer_name("performance", b) for b in names.TRANSFORMERS)
    }
)


# Data-level curriculum (CDL-UNet, FLARE 2024): which cases each phase may draw, from difficulty.csv
# (pgps.nnunet.data_curriculum), on top of every patch-size mode and batch strategy. "_DataCurriculumRestart"
# also restarts the poly learning rate at each phase switch, as the authors' hard course does.
DATA_CURRICULUM_BASES = tuple(
    globals()[name]
    for name in (
        *(names.trainer_name(mode) for mode in names.JOURNAL_MODES),
        *(names.trainer_name("performance", sampler=sampler) for sampler in names.SAMPLER_VARIANTS),
        *(names.trainer_name(mode) for mode in (*names.MICCAI_MODES, "progressive-resolution")),
        *(names.trainer_name(mode, mirroring=False) for mode in names.JOURNAL_MODES),
    )
)
DATA_CURRICULUM_RESTART_BASES = JOURNAL_STRATEGIES
"""Bases that also get a ``_DataCurriculumRestart`` variant (any other: ``PGPS_LR_RESTART=1``)."""


def _data_curriculum_variants() -> dict[str, type]:
    made = {}
    for base in DATA_CURRICULUM_BASES:
        for restart in (False, True):
            if restart and base not in DATA_CURRICULUM_RESTART_BASES:
                continue
            name = f"{base.__name__}_DataCurriculum{'Restart' if restart else ''}"
            doc = f"{base.__name__} with the data-level curriculum{' and an LR restart per phase' if restart else ''}."
            attrs = {"lr_restart": restart, "__doc__": doc, "__module__": __name__}
            made[name] = type(name, (DataCurriculumMixin, base), attrs)
    return made


globals().update(_data_curriculum_variants())


TRAINERS: tuple[str, ...] = tuple(
    name
    for name, obj in sorted(globals().items())
    if isinstance(obj, type) and issubclass(obj, PGPSMixin) and obj is not PGPSMixin
)
"""Every trainer name this module defines."""

__all__ = list(TRAINERS)


# Loss and learning-rate variants of every trainer above, made when nnU-Net looks them up by name (a module
# __getattr__, PEP 562): <trainer>[_<loss>][_<lr>], e.g. nnUNetTrainer_PGPS_Performance_DiceFocal or
# nnUNetTrainer_PGPS_CPS_DiceTopK10_LRsqrt. Listing them all would multiply the trainers by 12.
LOSS_SUFFIXES = {loss.trainer: key for key, loss in names.LOSSES.items() if loss.trainer}
"""Trainer-name suffix -> ``loss_variant`` (:mod:`pgps.nnunet.losses`); no suffix: nnU-Net's Dice + CE."""
LR_SUFFIXES = {suffix: scaling for scaling, suffix in names.LR_SCALINGS.items()}
"""Trainer-name suffix -> ``lr_scaling`` (:func:`pgps.lr.scaled_learning_rate`); no suffix: nnU-Net's rate."""


def split_variant_name(name: str) -> tuple[str, str, str | None]:
    """``(base trainer, loss_variant, lr_scaling)`` of a trainer name with optional loss/LR suffixes.

    Raises ``ValueError`` when the base is not a pgps trainer."""
    base, loss, lr = name, "dice_ce", None
    head, _, last = base.rpartition("_")
    if last in LR_SUFFIXES:
        base, lr = head, LR_SUFFIXES[last]
        head, _, last = base.rpartition("_")
    if last in LOSS_SUFFIXES:
        base, loss = head, LOSS_SUFFIXES[last]
    if base not in TRAINERS:
        raise ValueError(f"{name!r}: {base!r} is not a pgps trainer (pgps trainers lists them)")
    return base, loss, lr


def trainer_class(name: str) -> type:
    """The trainer class ``name``: one of :data:`TRAINERS` or a loss/learning-rate variant of one."""
    if name in TRAINERS:
        return globals()[name]
    base, loss, lr = split_variant_name(name)
    if name not in _VARIANTS:
        doc = f"{base} trained with loss {loss} and learning rate {'scaled ' + lr if lr else 'unscaled'}."
        attributes = {"loss_variant": loss, "lr_scaling": lr, "__doc__": doc, "__module__": __name__,
                      "__qualname__": name}  # fmt: skip
        _VARIANTS[name] = type(name, (globals()[base],), attributes)
    return _VARIANTS[name]


_VARIANTS: dict[str, type] = {}


def __getattr__(name: str) -> type:
    """nnU-Net's trainer lookup (``hasattr(module, name)``) and pickle find the variants here."""
    if name.startswith("nnUNetTrainer_PGPS_"):
        try:
            return trainer_class(name)
        except ValueError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
