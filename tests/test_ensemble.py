"""Ensembles (pgps.nnunet.inference.ensemble, pgps ensemble / determine-postprocessing) on the tiny nnU-Net dataset.

Two members (CPS with Dice + CE and with Dice + Focal) train one iteration on fold 0 with ``--npz`` (nnU-Net's
``run_training`` with ``export_validation_probabilities``, what ``nnUNetv2_train --npz`` calls); their fold-0
validation outputs (nnU-Net's probability export, the format nnUNetv2_predict --save_probabilities writes) are the
members' prediction folders. The ensemble's probabilities must be the members' mean; the post-processed
segmentations are checked against scipy's connected components. Training, validation and ensembling run in one
process, nnU-Net's worker pools serially inside it (the same functions; a spawned worker would spend its time
importing torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from tests import nnunet_env as nn

pytestmark = pytest.mark.nnunet
MEMBERS = ("nnUNetTrainer_PGPS_CPS", "nnUNetTrainer_PGPS_CPS_DiceFocal")

SCRIPT = """
import multiprocessing, os, shutil, sys
import torch
from batchgenerators.utilities.file_and_folder_operations import save_pickle
from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation
from nnunetv2.run.run_training import run_training
from pgps.nnunet.inference import ensemble as E

class Done:  # a finished starmap_async
    def __init__(self, value): self.value = value
    def ready(self): return True
    def get(self): return self.value

class SerialPool:  # nnU-Net's spawn pools, run in this process: each worker would import torch and nnU-Net anew
    _pool = []  # no worker to watch (nnU-Net's validation checks them)
    def __init__(self, *args, **kwargs): pass
    def __enter__(self): return self
    def __exit__(self, *exc): return False
    def starmap(self, fn, args): return [fn(*a) for a in args]
    def starmap_async(self, fn, args): return Done(self.starmap(fn, args))

real_context = multiprocessing.get_context
multiprocessing.get_context = lambda method=None: (
    type("Serial", (), {"Pool": SerialPool})() if method == "spawn" else real_context(method))

if __name__ == "__main__":
    work, *trainers = sys.argv[1:]
    models, members = [], []
    for i, trainer in enumerate(trainers):  # nnUNetv2_train 1 3d_fullres 0 -tr trainer --npz -device cpu
        run_training("1", "3d_fullres", 0, trainer, export_validation_probabilities=True, device=torch.device("cpu"))
        fold = os.path.join(os.environ["nnUNet_results"], "Dataset001_Tiny", f"{trainer}__nnUNetPlans__3d_fullres")
        models.append(fold)
        members.append(os.path.join(work, f"member{i}"))  # a prediction folder: probabilities, properties, json
        shutil.copytree(os.path.join(fold, "fold_0", "validation"), members[-1])
        for name in ("dataset.json", "plans.json"):
            shutil.copy(os.path.join(fold, name), members[-1])
    model_a, model_b = models
    E.ensemble(members, os.path.join(work, "none"), "none", [], 1)
    # nnU-Net's decisions on the cross-validation predictions: of each member, and of their ensemble
    decided = [E.determine_postprocessing([m], os.path.join(work, f"cv{i}"), [0], 1)
               for i, m in enumerate((model_a, model_b))]
    decided.append(E.determine_postprocessing([model_a, model_b], os.path.join(work, "cv_ensemble"), [0], 1))
    # a post-processing that always acts (keep the largest component of each class), in nnU-Net's pkl format
    keep = os.path.join(work, "keep_largest.pkl")
    save_pickle(([remove_all_but_largest_component_from_segmentation] * 2,
                 [{"labels_or_regions": 1}, {"labels_or_regions": 2}]), keep)
    E.ensemble(members, os.path.join(work, "after"), "after", [keep], 1)
    E.ensemble(members, os.path.join(work, "before"), "before", [keep, keep], 1)
    print("DECIDED", *decided)
"""


@pytest.fixture(scope="module")
def ensembled(tiny_nnunet, tmp_path_factory):
    results = tmp_path_factory.mktemp("ensemble_results")
    work = tmp_path_factory.mktemp("ensemble_work")
    env = nn.env(tiny_nnunet, results, PGPS_EPOCHS="1", PGPS_ITERATIONS_PER_EPOCH="1", PGPS_VAL_ITERATIONS="1",
                 nnUNet_n_proc_DA="0", PGPS_PROGRESS_EVERY="0")  # no progress.png (0.6 s of CPU); unread  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(work), *MEMBERS], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for trainer in MEMBERS:  # each member trained and validated its fold-0 cases
        assert (nn.fold_folder(results, trainer) / "validation" / "summary.json").is_file(), trainer
    decided = next(line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("DECIDED"))
    return work, decided


def _probabilities(folder, case):
    return np.load(folder / f"{case}.npz")["probabilities"]


def _segmentation(folder, case):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case}.nii.gz")))


def _keep_largest(seg: np.ndarray, labels=(1, 2)) -> np.ndarray:
    """Each class reduced to its largest connected components (full connectivity, ties kept: skimage's label as
    acvl_utils calls it)."""
    out = seg.copy()
    for label in labels:
        components, n = ndimage.label(seg == label, structure=np.ones((3,) * seg.ndim))
        if n > 1:
            sizes = np.bincount(components.ravel())[1:]
            out[(components > 0) & ~np.isin(components, 1 + np.flatnonzero(sizes == sizes.max()))] = 0
    return out


def test_ensemble_probabilities_are_the_members_mean(ensembled):
    work, decided = ensembled
    cases = sorted(f[:-4] for f in os.listdir(work / "member0") if f.endswith(".npz"))
    assert cases, "the members wrote no probabilities"
    for case in cases:
        members = [_probabilities(work / f"member{i}", case) for i in range(2)]
        assert not np.allclose(members[0], members[1])  # two different models
        mean = (members[0].astype(np.float32) + members[1]) / 2
        for order in ("none", "after"):
            np.testing.assert_allclose(_probabilities(work / order, case), mean, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(_segmentation(work / "none", case), mean.argmax(0))
        np.testing.assert_array_equal(_segmentation(work / "after", case), _keep_largest(mean.argmax(0)))
        # before: each member's segmentation reduced first; removed voxels become background in its probabilities
        processed = []
        for p in members:
            seg = p.argmax(0)
            changed = _keep_largest(seg) != seg
            q = p.astype(np.float32).copy()
            q[:, changed] = 0
            q[0, changed] = 1
            processed.append(q)
        expected = (processed[0] + processed[1]) / 2
        np.testing.assert_allclose(_probabilities(work / "before", case), expected, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(_segmentation(work / "before", case), expected.argmax(0))
    for pkl in decided:  # nnU-Net's own decisions were made and written
        assert os.path.isfile(pkl) and json.loads((work / os.path.basename(os.path.dirname(pkl)) /
                                                   "postprocessing.json").read_text())  # fmt: skip


def test_postprocessed_member_probabilities_follow_the_segmentation():
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from pgps.nnunet.inference.ensemble import postprocess_probabilities

    probabilities = np.full((3, 6, 6, 6), 0.1, dtype=np.float32)
    probabilities[0] = 0.8
    probabilities[1, 0:2, 0:2, 0:2] = 0.9  # a large component of class 1
    probabilities[1, 4, 4, 4] = 0.9  # a stray voxel of class 1
    probabilities[2, 4:6, 0:2, 0:1] = 0.9  # class 2, one component
    lm = LabelManager({"background": 0, "a": 1, "b": 2}, regions_class_order=None)
    fns = [remove_all_but_largest_component_from_segmentation]
    out = postprocess_probabilities(probabilities, lm, fns, [{"labels_or_regions": 1}])
    np.testing.assert_array_equal(out[:, 4, 4, 4], [1, 0, 0])  # the stray voxel is background now, with certainty
    changed = np.zeros((6, 6, 6), bool)
    changed[4, 4, 4] = True
    np.testing.assert_array_equal(out[:, ~changed], probabilities[:, ~changed])  # nothing else moves
    assert postprocess_probabilities(probabilities, lm, [], []) is probabilities
