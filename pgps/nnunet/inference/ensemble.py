"""Ensembles of trained nnU-Net models with post-processing before or after ensembling.

Everything numeric is nnU-Net's: ``nnUNetv2_predict --save_probabilities`` exports each model's
probabilities (a model trained on five folds predicts with the mean of its folds), nnU-Net's
``ensemble_folders`` averages the members' probabilities, ``determine_postprocessing`` decides on
cross-validation predictions which "keep the largest component" steps improve the Dice, and
``apply_postprocessing`` applies them. This module adds the order:

- ``"after"`` (nnU-Net's own, as ``nnUNetv2_find_best_configuration`` does it): the members'
  probabilities are averaged, then the ensemble's post-processing (determined on the ensemble of
  the members' cross-validation predictions, :func:`determine_postprocessing` with several models)
  is applied to the ensemble's segmentation;
- ``"before"`` (the AMOS22 large-batch study's order, its Section 2.4: "Postprocessing was applied
  to each model's output before the ensemble"): each member's own post-processing (determined on
  its own cross-validation predictions) is applied to its segmentation, and voxels it removes
  from a class get that member's probabilities of the label they were set to (background: 1,
  every other class 0); the members' post-processed probabilities are then averaged. The paper
  says no more than the quoted sentence; this is how post-processing of segmentations and an
  average of probabilities compose;
- ``"none"``: the members' probabilities averaged, no post-processing.

nnU-Net is imported where used (these functions start worker pools with the spawn method: call
them from a ``__main__``-guarded script or the ``pgps`` command).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import numpy as np

ORDERS = ("before", "after", "none")
POSTPROCESSING_FILE = "postprocessing.pkl"


def _dataset_and_plans(folder: str) -> tuple[dict, dict]:
    from batchgenerators.utilities.file_and_folder_operations import load_json

    missing = [f for f in ("dataset.json", "plans.json") if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise ValueError(
            f"{folder}: no {' or '.join(missing)}; give a folder written by nnUNetv2_predict --save_probabilities"
        )
    return load_json(os.path.join(folder, "dataset.json")), load_json(os.path.join(folder, "plans.json"))


def _cases(folder: str) -> list[str]:
    cases = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".npz"))
    if not cases:
        raise ValueError(f"{folder}: no probability files (.npz); predict with --save_probabilities")
    return cases


def load_postprocessing(pkl_file: str) -> tuple[list, list]:
    """nnU-Net's ``postprocessing.pkl``: (functions, their keyword arguments)."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle

    if not os.path.isfile(pkl_file):
        raise ValueError(f"{pkl_file}: no such post-processing file (nnUNetv2_determine_postprocessing writes it)")
    pp_fns, pp_kwargs = load_pickle(pkl_file)
    return pp_fns, pp_kwargs


def postprocess_probabilities(probabilities: np.ndarray, label_manager, pp_fns: list, pp_kwargs: list) -> np.ndarray:
    """A member's probabilities (C, X, Y, Z) made to agree with its post-processed segmentation.

    The segmentation is nnU-Net's (``convert_probabilities_to_segmentation``); where post-processing
    changes a voxel's label, the voxel's probabilities become the one-hot vector of the new label.
    Elsewhere the probabilities are untouched. Label-based datasets only.
    """
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing

    if label_manager.has_regions:
        raise ValueError("post-processing before ensembling is implemented for label-based datasets, not regions")
    segmentation = label_manager.convert_probabilities_to_segmentation(probabilities)
    processed = apply_postprocessing(segmentation, pp_fns, pp_kwargs)
    changed = processed != segmentation
    if not changed.any():
        return probabilities
    out = np.array(probabilities, copy=True)  # channel k holds label k (nnU-Net's labels are consecutive)
    out[:, changed] = 0
    for label in np.unique(processed[changed]):
        out[label][changed & (processed == label)] = 1
    return out


def postprocess_member(input_folder: str, output_folder: str, pp_pkl: str) -> list[str]:
    """Apply a member's post-processing to its probabilities and segmentations (``"before"`` order).

    Writes ``<case>.npz``, ``<case>.pkl`` and the segmentation for every case of ``input_folder`` into
    ``output_folder`` (plus its dataset.json and plans.json, so nnU-Net's ensembling reads it as a
    prediction folder); returns the cases whose labels post-processing changed.
    """
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json, plans = _dataset_and_plans(input_folder)
    pp_fns, pp_kwargs = load_postprocessing(pp_pkl)
    plans_manager = PlansManager(plans)
    label_manager = plans_manager.get_label_manager(dataset_json)
    writer = plans_manager.image_reader_writer_class()
    os.makedirs(output_folder, exist_ok=True)
    for name in ("dataset.json", "plans.json"):
        shutil.copy(os.path.join(input_folder, name), os.path.join(output_folder, name))
    changed = []
    for case in _cases(input_folder):
        probabilities = np.load(os.path.join(input_folder, f"{case}.npz"))["probabilities"]
        processed = postprocess_probabilities(probabilities, label_manager, pp_fns, pp_kwargs)
        if processed is not probabilities:
            changed.append(case)
        properties = load_pickle(os.path.join(input_folder, f"{case}.pkl"))
        np.savez_compressed(os.path.join(output_folder, f"{case}.npz"), probabilities=processed)
        shutil.copy(os.path.join(input_folder, f"{case}.pkl"), os.path.join(output_folder, f"{case}.pkl"))
        segmentation = label_manager.convert_probabilities_to_segmentation(processed)
        writer.write_seg(segmentation, os.path.join(output_folder, case + dataset_json["file_ending"]), properties)
    return changed


def ensemble(
    members: Sequence[str],
    output_folder: str,
    order: str = "after",
    postprocessing: Sequence[str] = (),
    processes: int = 2,
) -> str:
    """Ensemble the prediction folders ``members`` (each with probabilities) into ``output_folder``.

    ``order`` is one of :data:`ORDERS`; ``postprocessing`` holds one ``postprocessing.pkl`` per member
    for ``"before"``, the ensemble's one for ``"after"``, none for ``"none"``. The averaged
    probabilities are kept (``<case>.npz``); the final segmentations are in ``output_folder``.
    Returns ``output_folder``.
    """
    from nnunetv2.ensembling.ensemble import ensemble_folders
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing_to_folder

    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
    expected = {"before": len(members), "after": 1, "none": 0}[order]
    if len(postprocessing) != expected:
        which = {"before": "one per member", "after": "the ensemble's", "none": "none"}[order]
        raise ValueError(
            f"order {order!r} takes {expected} post-processing file(s) ({which}), got {len(postprocessing)}"
        )
    cases = None
    for folder in members:
        _dataset_and_plans(folder)
        found = _cases(folder)
        if cases is not None and found != cases:
            raise ValueError(f"{folder}: its cases differ from {members[0]}'s ({len(found)} vs {len(cases)})")
        cases = found
    _, plans = _dataset_and_plans(members[0])
    inputs = list(members)
    staging = output_folder + ".members"
    if order == "before":
        inputs = []
        for i, (folder, pp) in enumerate(zip(members, postprocessing, strict=True)):
            target = os.path.join(staging, f"member{i}")
            postprocess_member(folder, target, pp)
            inputs.append(target)
    merged = output_folder if order != "after" else output_folder + ".raw"
    ensemble_folders(inputs, merged, save_merged_probabilities=True, num_processes=processes)
    if order == "after":
        pp_fns, pp_kwargs = load_postprocessing(postprocessing[0])
        apply_postprocessing_to_folder(merged, output_folder, pp_fns, pp_kwargs, plans_file_or_dict=plans,
                                       num_processes=processes)  # fmt: skip
        for case in cases:
            for suffix in (".npz", ".pkl"):
                shutil.move(os.path.join(merged, case + suffix), os.path.join(output_folder, case + suffix))
        shutil.copy(os.path.join(merged, "dataset.json"), os.path.join(output_folder, "dataset.json"))
        shutil.rmtree(merged)
    shutil.copy(os.path.join(members[0], "plans.json"), os.path.join(output_folder, "plans.json"))
    if os.path.isdir(staging):
        shutil.rmtree(staging)
    return output_folder


def determine_postprocessing(
    model_folders: Sequence[str], output_folder: str, folds: Sequence[int] = (0, 1, 2, 3, 4), processes: int = 2
) -> str:
    """nnU-Net's post-processing decision on cross-validation predictions; returns ``output_folder/postprocessing.pkl``.

    One model: its folds' validation predictions gathered (nnU-Net's ``accumulate_cv_results``). Several:
    their ensemble (nnU-Net's ``ensemble_crossvalidations``, which needs each fold trained with
    ``--npz``). The reference labels are nnU-Net's (``$nnUNet_raw/<dataset>/labelsTr``, else the
    preprocessed ``gt_segmentations``).
    """
    from nnunetv2.ensembling.ensemble import ensemble_crossvalidations
    from nnunetv2.evaluation.accumulate_cv_results import accumulate_cv_results
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.postprocessing.remove_connected_components import (
        determine_postprocessing as nnunet_determine_postprocessing,
    )
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folds = [int(f) for f in folds]
    for folder in model_folders:
        missing = [f for f in folds if not os.path.isdir(os.path.join(folder, f"fold_{f}", "validation"))]
        if missing:
            raise ValueError(f"{folder}: fold(s) {missing} have no validation predictions; train them first")
    if len(model_folders) == 1:
        accumulate_cv_results(model_folders[0], output_folder, folds, num_processes=processes)
    else:
        ensemble_crossvalidations(list(model_folders), output_folder, folds, num_processes=processes)
    plans = PlansManager(os.path.join(model_folders[0], "plans.json"))
    reference = os.path.join(nnUNet_raw or "", plans.dataset_name, "labelsTr")
    if not os.path.isdir(reference):
        reference = os.path.join(nnUNet_preprocessed or "", plans.dataset_name, "gt_segmentations")
    nnunet_determine_postprocessing(
        output_folder, reference, os.path.join(model_folders[0], "plans.json"),
        os.path.join(model_folders[0], "dataset.json"), processes, keep_postprocessed_files=False,
    )  # fmt: skip
    return os.path.join(output_folder, POSTPROCESSING_FILE)
