"""Held-out evaluation of a trained nnU-Net fold in the training process (no worker processes).

nnU-Net's ``perform_actual_validation`` predicts the fold's validation cases with its sliding-window
predictor, exports each segmentation through a *spawned* process pool and scores the folder with
another spawned pool (``compute_metrics_on_folder``). On a small CPU each pool start re-imports
torch and nnU-Net: several seconds per run, more than a short run trains. :func:`evaluate_fold`
does the same work with nnU-Net's own functions, one case after the other in this process:

- prediction: :class:`nnunetv2.inference.predict_from_raw_data.nnUNetPredictor` at the planned
  patch size (``P_max``), tile step 0.5, Gaussian weighting, mirroring test-time augmentation on
  the trainer's mirror axes when ``mirroring`` is on (nnU-Net's validation) or off;
- export to the original image space: ``export_prediction_from_logits`` (``validation/<case>``);
- metrics: ``compute_metrics`` per case against ``gt_segmentations``, then the mean per label or
  region over cases (NaN-aware) and the foreground mean, as ``compute_metrics_on_folder``
  aggregates them, saved with ``save_summary_json`` as ``validation/summary.json``: the file
  ``pgps collect`` reads (``foreground_mean.Dice``).

With ``mirroring=True`` and ``tiles_as_pairs=False`` the summary equals nnU-Net's own validation
(``tests/test_study.py`` checks it). ``tiles_as_pairs`` (default on) works around a CPU dispatch rule
of torch: a 3D convolution of a *single* sample whose ``N*C*D*H`` is at most 20480 (e.g. 16 channels
of 32^3) runs torch's native ``Slow3d`` kernel instead of oneDNN, 3-6x slower than a batch of two
on this project's CPU; nnU-Net predicts tile by tile, one sample each. With the switch on, every
single-sample input of the network is run as a pair of identical samples and the first output
kept (per-sample convolutions and instance norms: the same function, computed by another kernel;
logits agree to float rounding). It applies on the CPU only and is removed afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

SUMMARY_FILE = "summary.json"


@contextlib.contextmanager
def tiles_as_pairs(network: torch.nn.Module) -> Iterator[None]:
    """Run each single-sample CPU input of ``network`` as a batch of two identical samples (see the module
    docstring); outputs are the first sample's. Hooks are removed on exit."""
    paired: list[bool] = []

    def before(module: torch.nn.Module, args: tuple) -> tuple | None:
        x = args[0] if args else None
        pair = isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dim() == 5 and x.shape[0] == 1
        paired.append(pair)
        return (torch.cat([x, x]), *args[1:]) if pair else None

    def first(output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return output[:1]
        return type(output)(first(o) for o in output)  # deep supervision: a list or tuple of maps

    def after(module: torch.nn.Module, args: tuple, output: Any) -> Any:
        return first(output) if paired.pop() else None

    handles = [network.register_forward_pre_hook(before, prepend=True), network.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def summarize(per_case: list[dict], labels_or_regions: list) -> dict:
    """nnU-Net's summary of per-case metrics (``compute_metrics`` results): the NaN-aware mean of every
    metric per label or region over the cases, and the mean of those over the foreground ones."""
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export

    if not per_case:
        raise ValueError("no cases to summarize")
    names = list(per_case[0]["metrics"][labels_or_regions[0]])
    means = {r: {m: _nanmean([c["metrics"][r][m] for c in per_case]) for m in names} for r in labels_or_regions}
    foreground = {m: float(np.mean([means[r][m] for r in means if r not in (0, "0")])) for m in names}
    for item in (*per_case, means, foreground):
        recursive_fix_for_json_export(item)
    return {"metric_per_case": per_case, "mean": means, "foreground_mean": foreground}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(finite)) if finite else math.nan


def evaluate_fold(trainer: Any, *, mirroring: bool = False, pairs: bool = True, log=None) -> dict:
    """Predict the trainer's validation cases (its fold's held-out split) and write ``validation/summary.json``.

    ``trainer`` is an initialized nnU-Net trainer after training (its network as trained); returns the
    summary dict. See the module docstring for what is computed and how it matches nnU-Net.
    """
    from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics, save_summary_json
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    say = log or (lambda _: None)
    if trainer.is_cascaded:
        raise ValueError("evaluate_fold does not handle cascades (it exports no next-stage predictions)")
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    network = getattr(trainer, "network_for_stage", None)
    network = network(trainer.schedule.num_stages - 1) if network is not None else trainer.network
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=mirroring,
        perform_everything_on_device=trainer.device.type == "cuda",
        device=trainer.device,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        network, trainer.plans_manager, trainer.configuration_manager, None, trainer.dataset_json,
        type(trainer).__name__, trainer.inference_allowed_mirroring_axes,
    )  # fmt: skip
    folder = join(trainer.output_folder, "validation")
    maybe_mkdir_p(folder)
    _, keys = trainer.do_split()
    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, keys)
    lm = trainer.label_manager
    labels = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    reader = trainer.plans_manager.image_reader_writer_class()
    ending = trainer.dataset_json["file_ending"]
    reference = join(trainer.preprocessed_dataset_folder_base, "gt_segmentations")
    per_case = []
    pair = tiles_as_pairs(network) if pairs and trainer.device.type == "cpu" else contextlib.nullcontext()
    with pair, torch.no_grad():
        for i, key in enumerate(dataset.identifiers):
            data, _, _, properties = dataset.load_case(key)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "The given NumPy array is not writable"
                data = torch.from_numpy(data[:])
            logits = predictor.predict_sliding_window_return_logits(data).cpu()
            export_prediction_from_logits(
                logits, properties, trainer.configuration_manager, trainer.plans_manager, trainer.dataset_json,
                join(folder, key), False,
            )  # fmt: skip
            per_case.append(compute_metrics(join(reference, key + ending), join(folder, key + ending), reader,
                                            labels, lm.ignore_label))  # fmt: skip
            say(f"evaluated {key} ({i + 1}/{len(dataset.identifiers)})")
    summary = summarize(per_case, list(labels))
    save_summary_json(summary, join(folder, SUMMARY_FILE))
    trainer.set_deep_supervision_enabled(True)
    return summary


def summary_path(fold_dir: str | os.PathLike[str]) -> str:
    """Where :func:`evaluate_fold` (and nnU-Net's validation) write the summary of a fold folder."""
    return os.path.join(fold_dir, "validation", SUMMARY_FILE)


def fold_complete(fold_dir: str | os.PathLike[str]) -> bool:
    """Whether a fold folder holds a finished run: ``checkpoint_final.pth`` and the validation summary."""
    return os.path.isfile(os.path.join(fold_dir, "checkpoint_final.pth")) and os.path.isfile(summary_path(fold_dir))


def train_and_evaluate(
    dataset: str | int,
    configuration: str,
    fold: int,
    trainers: list[str],
    *,
    plans: str = "nnUNetPlans",
    device: str = "cpu",
    mirroring: bool = False,
    pairs: bool = True,
    overwrite: bool = False,
    evaluate_only: bool = False,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[str]:
    """Train each of ``trainers`` on ``fold`` of ``dataset`` one after the other in this process, each
    followed by :func:`evaluate_fold`; returns their fold folders.

    What ``nnUNetv2_train DATASET CONFIGURATION FOLD -tr TRAINER -p PLANS`` does, minus the process start,
    the imports and the validation's worker pools per run: trainers come from nnU-Net's
    ``get_trainer_from_args`` (the pgps ones found without ``nnUNet_extTrainer``) and train with
    ``run_training``; nnU-Net's paths and the ``PGPS_*`` overrides come from the environment as for
    ``nnUNetv2_train``. With ``PGPS_SEED`` each run seeds the global generators when it starts, so a run
    does not depend on the runs before it in the process. A fold folder with a finished run is kept
    (unless ``overwrite``); an unfinished one is emptied first, so every run trains from scratch.
    ``evaluate_only`` scores finished runs again from their ``checkpoint_final.pth`` (nnU-Net's ``--val``).
    ``threads``: torch's CPU threads for the whole process (default: torch's). ``log`` gets a line per run
    (default: INFO on this module's logger).
    """
    import shutil

    if threads is not None:
        torch.set_num_threads(threads)

    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    from pgps.nnunet import use_pgps_trainers

    use_pgps_trainers()
    log = log or logging.getLogger(__name__).info
    folders = []
    for name in trainers:
        fold_dir = get_output_folder(dataset, name, plans, configuration, fold)
        folders.append(fold_dir)
        if evaluate_only:
            checkpoint = os.path.join(fold_dir, "checkpoint_final.pth")
            if not os.path.isfile(checkpoint):
                raise ValueError(f"{checkpoint} does not exist: train the run before evaluating it")
            trainer = get_trainer_from_args(str(dataset), configuration, fold, name, plans, device=torch.device(device))
            trainer.load_checkpoint(checkpoint)
            summary = evaluate_fold(trainer, mirroring=mirroring, pairs=pairs)
            log(f"{name}: held-out Dice {summary['foreground_mean']['Dice']:.4f} ({fold_dir})")
            continue
        if fold_complete(fold_dir) and not overwrite:
            log(f"{name}: finished run kept ({fold_dir})")
            continue
        if os.path.isdir(fold_dir):  # Snakemake creates the (empty) folders of a job's outputs
            if any(f.is_file() for f in Path(fold_dir).rglob("*")):
                log(f"{name}: emptying {fold_dir} (an unfinished or overwritten run)")
            shutil.rmtree(fold_dir)
        started = time.process_time()
        trainer = get_trainer_from_args(str(dataset), configuration, fold, name, plans, device=torch.device(device))
        trainer.run_training()
        trained = time.process_time()
        summary = evaluate_fold(trainer, mirroring=mirroring, pairs=pairs)
        log(
            f"{name}: held-out Dice {summary['foreground_mean']['Dice']:.4f}; CPU time of this process: training "
            f"{trained - started:.1f} s, evaluation {time.process_time() - trained:.1f} s ({fold_dir})"
        )
        del trainer
    return folders
