"""Synthetic datasets written straight into nnU-Net's *preprocessed* format, for loader benchmarks.

Planning and preprocessing a large dataset with nnU-Net takes minutes to hours on a CPU; a data
loader only ever sees the preprocessed folder. :func:`write_preprocessed` therefore draws cases with
:func:`pgps.data.synth.make_case` and saves them exactly as nnU-Net 2.8.1's ``DefaultPreprocessor`` does:
``nnUNetDatasetBlosc2.save_case`` with the blosc2 chunks and blocks that ``comp_blosc2_params``
derives from the planned patch size, float32 images and int16 labels, and a properties pickle
holding ``class_locations`` sampled by nnU-Net's own ``_sample_foreground_locations``.

:data:`LOADER_PRESETS` mimic the two tasks on which the article's PGPS-Performance was slowest
(Section 4.1.2, Appendix A): MSD Hippocampus (``P_max`` 40x56x40, ``b_base`` 9, step 8; volumes
smaller than the patch; first stage 1575 patches of 8^3) and KiTS23 (``P_max`` 128^3, ``b_base``
2, step 32; volumes much larger than the patch, scaled down here to ~176x224x224 voxels so that
130 cases fit on a laptop disk).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from pgps.data.synth import SynthConfig, case_identifiers, make_case

DATA_FOLDER = "nnUNetPlans_3d_fullres"
"""Folder of the preprocessed cases inside a dataset written here (nnU-Net's name for it)."""


@dataclasses.dataclass(frozen=True)
class LoaderPreset:
    """A synthetic task as nnU-Net would plan it: volumes, ``P_max``, ``b_base`` and per-axis steps."""

    synth: SynthConfig
    patch_size: tuple[int, int, int]
    batch_size: int
    steps: tuple[int, int, int]
    description: str

    @property
    def strides(self) -> list[list[int]]:
        """nnU-Net's strides for these steps: a stride-1 stage, then ``log2(step)`` stride-2 stages per axis."""
        levels = [int(s).bit_length() - 1 for s in self.steps]
        return [[1, 1, 1]] + [[2 if i < k else 1 for k in levels] for i in range(max(levels))]


LOADER_PRESETS: dict[str, LoaderPreset] = {
    "hippocampus": LoaderPreset(
        synth=SynthConfig(
            num_cases=208,  # one fold's training split of MSD Hippocampus (260 cases)
            shape=(36, 50, 35),
            shape_jitter=(3, 4, 3),
            num_classes=2,
            radii=((3.0, 6.0), (3.0, 6.0)),
            objects_per_class=(1, 1),
            shapes="blob",
            class_names=("anterior", "posterior"),
        ),
        patch_size=(40, 56, 40),
        batch_size=9,
        steps=(8, 8, 8),
        description="MSD-Hippocampus-like: 208 cases of ~36x50x35 voxels (smaller than the 40x56x40 patch), "
        "2 classes; P_max 40x56x40, b_base 9, step 8 (15 stages, first batch 1575 x 8^3)",
    ),
    "kits": LoaderPreset(
        synth=SynthConfig(
            num_cases=130,  # enough distinct cases for Single-Crop's first stage (128 patches)
            shape=(176, 224, 224),
            shape_jitter=(8, 8, 8),
            num_classes=3,
            radii=((18.0, 26.0), (5.0, 14.0), (2.0, 6.0)),
            objects_per_class=(1, 2),
            shapes="blob",
            class_names=("kidney", "tumor", "cyst"),
        ),
        patch_size=(128, 128, 128),
        batch_size=2,
        steps=(32, 32, 32),
        description="KiTS23-like: 130 cases of ~176x224x224 voxels (KiTS23's are ~15x larger), 3 classes; "
        "P_max 128^3, b_base 2, step 32 (10 stages, first batch 128 x 32^3)",
    ),
}


def write_preprocessed(preset: LoaderPreset, folder: str | os.PathLike[str], num_cases: int | None = None) -> Path:
    """Write ``num_cases`` (default: the preset's) cases into ``folder`` as nnU-Net 2.8.1 preprocesses them.

    Creates ``folder/dataset.json`` and ``folder/nnUNetPlans_3d_fullres/case_XXX{.b2nd,_seg.b2nd,.pkl}``.
    Cases already written (all three files present) are kept, so an interrupted run resumes.
    Returns the folder of the cases.
    """
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

    config = preset.synth
    n = config.num_cases if num_cases is None else int(num_cases)
    root = Path(folder)
    cases = root / DATA_FOLDER
    cases.mkdir(parents=True, exist_ok=True)
    labels = config.labels
    foreground = [c for c in labels.values() if c > 0]
    for index, identifier in enumerate(case_identifiers(n)):
        stem = cases / identifier
        if all(Path(f"{stem}{ext}").exists() for ext in (".b2nd", "_seg.b2nd", ".pkl")):
            continue
        image, label = make_case(config, index)
        data = image[None].astype(np.float32)
        seg = label[None].astype(np.int16)
        properties = {
            "class_locations": DefaultPreprocessor._sample_foreground_locations(seg, foreground),
            "shape_after_cropping_and_before_resampling": image.shape,
            "spacing": list(config.spacing),
        }
        blocks, chunks = comp_blosc2_params(data.shape, preset.patch_size, data.itemsize)
        blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, preset.patch_size, seg.itemsize)
        tmp = cases / f".{identifier}.partial"
        for ext in (".b2nd", "_seg.b2nd", ".pkl"):  # leftovers of an interrupted write
            Path(f"{tmp}{ext}").unlink(missing_ok=True)
        nnUNetDatasetBlosc2.save_case(
            data, seg, properties, str(tmp), chunks=chunks, blocks=blocks, chunks_seg=chunks_seg, blocks_seg=blocks_seg
        )
        for ext in (".b2nd", "_seg.b2nd", ".pkl"):  # the pickle last: it marks the case complete
            os.replace(f"{tmp}{ext}", f"{stem}{ext}")
    dataset = {"channel_names": {"0": "zscore"}, "labels": labels, "numTraining": n, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(dataset, indent=1) + "\n")
    return cases


def open_preprocessed(folder: str | os.PathLike[str], num_cases: int | None = None):
    """``(nnUNetDatasetBlosc2, LabelManager)`` of a dataset written by :func:`write_preprocessed`."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    root = Path(folder)
    dataset = json.loads((root / "dataset.json").read_text())
    n = dataset["numTraining"] if num_cases is None else int(num_cases)
    data = nnUNetDatasetBlosc2(str(root / DATA_FOLDER), case_identifiers(dataset["numTraining"])[:n])
    return data, LabelManager(dataset["labels"], regions_class_order=None)
