"""nnU-Net v2 adapter: the PGPS trainer mixin, its published variants and the batch samplers.

Stock ``nnunetv2`` finds these trainers through its ``nnUNet_extTrainer`` variable::

    export nnUNet_extTrainer="$(pgps trainers --ext-path)"
    nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainer_PGPS_Performance

Importing this subpackage imports torch and nnU-Net; ``import pgps`` does not.
"""

from __future__ import annotations

import os


def ext_trainer_path() -> str:
    """The folder to put in ``nnUNet_extTrainer`` (no file is copied anywhere)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "ext")


def use_pgps_trainers() -> None:
    """Let nnU-Net's trainer lookup (``nnUNet_extTrainer``, read each time it looks) find the pgps trainers:
    their folder is added to the variable, after any folders already in it. pgps's own commands call this,
    so that ``pgps predict`` and ``pgps train-evaluate`` need no ``export``."""
    path = ext_trainer_path()
    folders = [f for f in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if f]
    if path not in folders:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([*folders, path])
