"""Label sets on disk: score every case of nnU-Net raw label folders (``pgps difficulty``) and write the
enhanced labels (each case's ``L_real``) as a new nnU-Net raw dataset.

The folders hold one label file per case (``<case><file_ending>``, nnU-Net's raw ``labelsTr``
layout). Every folder must hold the same cases, and a case's files the same shape, spacing,
origin and direction; otherwise :class:`LabelSetError` names the case and the files. Values
that are not labels of ``dataset.json`` are set to background first (CDL-UNet Sec. 2.1) and
counted. SimpleITK and tqdm are imported when a function runs; ``import pgps`` stays light.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgps.data.difficulty import (
    EASY_THRESHOLD,
    ERRONEOUS_THRESHOLD,
    CaseDifficulty,
    check_thresholds,
    clean_labels,
    difficulty_csv,
    score_case,
)
from pgps.io import atomic_directory, atomic_write_text
from pgps.progress import progress as progress_of

FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".tif", ".tiff", ".png", ".bmp")
SPACING_TOLERANCE = 1e-4
"""Largest relative difference between two label sets' spacings (or origins, directions) of one case."""


class LabelSetError(ValueError):
    """Label folders that cannot be compared: missing cases, shape or geometry mismatches."""


def set_names(folders: Sequence[str | os.PathLike]) -> list[str]:
    """Column names of the label sets: folder names, prefixed with their parent's where two coincide."""
    paths = [Path(f).resolve() for f in folders]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}_{p.name}" for p in paths]
    if len(set(names)) < len(names):
        names = [f"set{i + 1}" for i in range(len(paths))]
    return names


def find_file_ending(folder: Path) -> str:
    """The file ending of ``folder``'s labels: its dataset's ``dataset.json``, else the most common known ending."""
    meta = find_dataset_json([folder])
    if meta is not None:
        ending = json.loads(meta.read_text()).get("file_ending")
        if ending:
            return ending
    counts = {e: sum(1 for f in folder.iterdir() if f.name.endswith(e)) for e in FILE_ENDINGS}
    best = max(counts, key=counts.get)
    if not counts[best]:
        raise LabelSetError(f"{folder}: no label files ({', '.join(FILE_ENDINGS)})")
    return best


def case_files(folder: str | os.PathLike, file_ending: str | None = None) -> dict[str, Path]:
    """``{case: file}`` of a label folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelSetError(f"{folder} is not a folder")
    ending = file_ending or find_file_ending(folder)
    files = {f.name[: -len(ending)]: f for f in sorted(folder.iterdir()) if f.name.endswith(ending) and f.is_file()}
    if not files:
        raise LabelSetError(f"{folder}: no label files ending in {ending}")
    return files


def matched_cases(folders: Sequence[str | os.PathLike], file_ending: str | None = None) -> list[dict[str, Path]]:
    """The case files of every folder, after checking that all folders hold the same cases."""
    found = [case_files(f, file_ending) for f in folders]
    first = set(found[0])
    for folder, files in zip(folders[1:], found[1:], strict=True):
        if set(files) != first:
            missing, extra = sorted(first - set(files)), sorted(set(files) - first)
            detail = "; ".join(
                part
                for part in (
                    f"missing {len(missing)} case(s) of {folders[0]}: {', '.join(missing[:5])}" if missing else "",
                    f"{len(extra)} case(s) not in {folders[0]}: {', '.join(extra[:5])}" if extra else "",
                )
                if part
            )
            raise LabelSetError(f"{folder}: {detail}")
    return found


def find_dataset_json(folders: Sequence[str | os.PathLike], images: str | os.PathLike | None = None) -> Path | None:
    """The dataset's ``dataset.json``: next to ``images`` or a label folder, or one folder further up
    (``labelSets/set_1`` of a ``pgps synth`` dataset), whichever exists first."""
    places = [Path(images).parent] if images else []
    places += [Path(f).resolve().parent for f in folders] + [Path(f).resolve().parent.parent for f in folders]
    return next((p / "dataset.json" for p in places if (p / "dataset.json").is_file()), None)


def valid_labels(dataset_json: str | os.PathLike | None) -> list[int] | None:
    """The label values of a ``dataset.json`` (regions: every value they use), or None without one."""
    if dataset_json is None or not Path(dataset_json).is_file():
        return None
    labels = json.loads(Path(dataset_json).read_text()).get("labels") or {}
    values: set[int] = {0}
    for v in labels.values():
        values.update(int(x) for x in (v if isinstance(v, list) else [v]))
    return sorted(values)


def _read(sitk: Any, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise LabelSetError(f"{path}: a label file must hold integers, got values such as {array.flat[0]!r}")
        array = rounded.astype(np.int32)
    geometry = {"spacing": image.GetSpacing(), "origin": image.GetOrigin(), "direction": image.GetDirection()}
    return array, geometry


def _check_geometry(case: str, paths: Sequence[Path], arrays: Sequence[np.ndarray], geometries: Sequence[dict]) -> None:
    for path, array, geometry in zip(paths[1:], arrays[1:], geometries[1:], strict=True):
        if array.shape != arrays[0].shape:
            raise LabelSetError(
                f"case {case}: {path} has shape {'x'.join(map(str, array.shape))}, {paths[0]} has "
                f"{'x'.join(map(str, arrays[0].shape))} (array order z, y, x)"
            )
        for key in ("spacing", "origin", "direction"):
            a, b = np.asarray(geometry[key]), np.asarray(geometries[0][key])
            if not np.allclose(a, b, rtol=SPACING_TOLERANCE, atol=SPACING_TOLERANCE):
                raise LabelSetError(
                    f"case {case}: {path} has {key} {tuple(round(float(v), 6) for v in a)}, {paths[0]} has "
                    f"{tuple(round(float(v), 6) for v in b)}"
                )


def score_folders(
    folders: Sequence[str | os.PathLike],
    provided: Sequence[int] = (0, 1),
    easy: float = EASY_THRESHOLD,
    erroneous: float = ERRONEOUS_THRESHOLD,
    labels: Iterable[int] | None = None,
    dice_classes: Iterable[int] | None = None,
    absent: str = "skip",
    file_ending: str | None = None,
    progress: bool | None = None,
    keep: bool = False,
) -> tuple[list[CaseDifficulty], dict[str, int], dict[str, np.ndarray]]:
    """Score every case of the label ``folders`` (Eq. 1, Eq. 2, group).

    Returns ``(scores, cleaned voxels per case, L_real per case if keep else {})``. ``labels``:
    the valid label values (others become background; default: no cleaning).
    ``dice_classes``/``absent``: see :func:`pgps.metrics.label_dice`. ``progress``: a tqdm bar on
    stderr (``None``: only on a terminal).
    """
    import SimpleITK as sitk

    check_thresholds(easy, erroneous)
    if len(folders) < 2:
        raise LabelSetError(f"the difficulty discriminator needs at least 2 label folders, got {len(folders)}")
    if any(not 0 <= p < len(folders) for p in provided):
        raise LabelSetError(f"provided sets {list(provided)} must index the {len(folders)} label folders")
    found = matched_cases(folders, file_ending)
    valid = None if labels is None else sorted(set(labels) | {0})
    scores, cleaned, real = [], {}, {}
    dice_kwargs = {"classes": None if dice_classes is None else list(dice_classes), "absent": absent}
    cases = sorted(found[0])
    for case in progress_of(cases, "difficulty", enabled=progress, unit="case"):
        paths = [files[case] for files in found]
        read = [_read(sitk, p) for p in paths]
        arrays, geometries = [a for a, _ in read], [g for _, g in read]
        _check_geometry(case, paths, arrays, geometries)
        if valid is not None:
            cleaned_arrays = [clean_labels(a, valid) for a in arrays]
            arrays = [a for a, _ in cleaned_arrays]
            cleaned[case] = sum(n for _, n in cleaned_arrays)
        score = score_case(case, arrays, provided, easy, erroneous, **dice_kwargs)
        scores.append(score)
        if keep:
            real[case] = arrays[score.real]
    return scores, cleaned, real


def write_difficulty_csv(
    path: str | os.PathLike, scores: Sequence[CaseDifficulty], names: Sequence[str], cleaned: dict[str, int]
) -> None:
    """``difficulty.csv`` (atomically); a ``cleaned_voxels`` column when labels were cleaned."""
    text = difficulty_csv(scores, names)
    if cleaned:
        lines = text.splitlines()
        lines[0] += ",cleaned_voxels"
        lines[1:] = [f"{line},{cleaned.get(s.case, 0)}" for line, s in zip(lines[1:], scores, strict=True)]
        text = "\n".join(lines) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def write_enhanced_dataset(
    images: str | os.PathLike,
    reference_folder: str | os.PathLike,
    scores: Sequence[CaseDifficulty],
    real: dict[str, np.ndarray],
    raw_dir: str | os.PathLike,
    dataset_id: int,
    name: str,
    source_json: dict[str, Any],
    set_names_: Sequence[str],
    drop_erroneous: bool = False,
    overwrite: bool = False,
    file_ending: str | None = None,
) -> Path:
    """Write ``raw_dir/DatasetXXX_NAME`` with ``images``' channels and each case's ``L_real`` as ``labelsTr``.

    The label files take the geometry of ``reference_folder``'s (the first label set). Images are
    hard-linked where the file system allows it, else copied. The dataset is built in a hidden
    sibling folder and renamed into place, so a partial one never appears.
    """
    import SimpleITK as sitk

    from pgps.data.synth import dataset_folder_name

    folder_name = dataset_folder_name(dataset_id, name)
    raw_dir = Path(raw_dir)
    target = raw_dir / folder_name
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise LabelSetError(f"{target} exists and is not empty (pass --overwrite to replace it)")
    clashes = sorted(p.name for p in raw_dir.glob(f"Dataset{int(dataset_id):03d}_*") if p.name != folder_name)
    if clashes:
        raise LabelSetError(f"{raw_dir} already holds {', '.join(clashes)} with dataset id {int(dataset_id):03d}")
    ending = file_ending or source_json.get("file_ending") or find_file_ending(Path(reference_folder))
    reference = case_files(reference_folder, ending)
    kept = [s for s in scores if not (drop_erroneous and s.group == "erroneous")]
    if not kept:
        raise LabelSetError("every case is erroneous: nothing to write (drop --drop-erroneous or lower the threshold)")
    images = Path(images)
    channels = {c: sorted(images.glob(f"{c}_[0-9][0-9][0-9][0-9]{ending}")) for c in (s.case for s in kept)}
    missing = [c for c, files in channels.items() if not files]
    if missing:
        raise LabelSetError(f"{images}: no image of case(s) {', '.join(missing[:5])} (<case>_0000{ending})")
    with atomic_directory(target) as partial:
        (partial / "imagesTr").mkdir()
        (partial / "labelsTr").mkdir()
        for s in kept:
            for f in channels[s.case]:
                dst = partial / "imagesTr" / f.name
                try:
                    os.link(f, dst)
                except OSError:
                    shutil.copy2(f, dst)
            geometry = sitk.ReadImage(str(reference[s.case]))
            out = sitk.GetImageFromArray(real[s.case].astype(np.uint8 if real[s.case].max() < 256 else np.uint16))
            out.CopyInformation(geometry)
            sitk.WriteImage(out, str(partial / "labelsTr" / f"{s.case}{ending}"), useCompression=True)
        meta = {k: v for k, v in source_json.items() if k not in ("numTraining", "pgps_difficulty")}
        meta["numTraining"] = len(kept)
        meta.setdefault("file_ending", ending)
        meta["pgps_difficulty"] = {
            "label_sets": list(set_names_),
            "real": {s.case: set_names_[s.real] for s in kept},
            "dropped": sorted(s.case for s in scores if s not in kept),
        }
        (partial / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return target


@dataclasses.dataclass
class DifficultyRun:
    """What :func:`score_difficulty` wrote: the scores per case, the label sets' names (a prediction last when one
    was made), voxels cleaned per case (values outside dataset.json's labels) and the enhanced dataset, if any."""

    out: Path
    scores: list
    names: list[str]
    cleaned: dict
    dataset: Path | None
    easy: float
    erroneous: float

    def summary(self) -> list[str]:
        """The lines ``pgps difficulty`` prints."""
        groups = Counter(s.group for s in self.scores)
        reals = Counter(self.names[s.real] for s in self.scores)
        mean = sum(s.ds for s in self.scores) / len(self.scores)
        lines = [
            f"{self.out}: {len(self.scores)} cases, mean DS {mean:.4f}; "
            + ", ".join(f"{groups.get(g, 0)} {g}" for g in ("easy", "hard", "erroneous"))
            + f" (easy: DS > {self.easy:g}, erroneous: DS <= {self.erroneous:g})",
            "L_real: " + ", ".join(f"{n} {reals.get(n, 0)}" for n in self.names),
        ]
        if self.cleaned and sum(self.cleaned.values()):
            lines.append(f"cleaned {sum(self.cleaned.values())} voxels with values outside dataset.json's labels")
        if self.dataset is not None:
            lines.append(f"enhanced labels: {self.dataset}")
        return lines


def score_difficulty(
    labels: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    dataset_json: str | os.PathLike | None = None,
    provided: int = 2,
    easy: float = EASY_THRESHOLD,
    erroneous: float = ERRONEOUS_THRESHOLD,
    dice_classes: Sequence[int] | None = None,
    absent: str = "skip",
    predict_with: str | None = None,
    folds: Sequence[int] | None = None,
    checkpoint: str = "checkpoint_final.pth",
    device: str = "cpu",
    enhanced_raw: str | os.PathLike | None = None,
    dataset_id: int | None = None,
    name: str | None = None,
    drop_erroneous: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> DifficultyRun:
    """Score the label sets ``labels`` (folders of one segmentation per case; the first ``provided`` are the
    dataset's own), optionally with a trained model's prediction as one more set (``predict_with``, on ``images``),
    write ``difficulty.csv`` to ``out`` and, with ``enhanced_raw``/``dataset_id``/``name``, a raw dataset whose labels
    are each case's most reliable set (``pgps difficulty``)."""
    folders = [Path(d) for d in labels]
    names = set_names(folders)
    enhanced = [enhanced_raw, dataset_id, name]
    if any(v is not None for v in enhanced) and not all(v is not None for v in enhanced):
        raise ValueError("--enhanced-raw, --dataset-id and --name go together")
    if (predict_with or enhanced_raw) and not images:
        raise ValueError("--predict-with and --enhanced-raw need --images (the cases' image folder)")
    if not 1 <= provided <= len(folders):
        raise ValueError(f"--provided must be 1..{len(folders)} (the number of --labels), got {provided}")
    if dataset_json and not Path(dataset_json).is_file():
        raise ValueError(f"{dataset_json} does not exist")
    dataset_json = dataset_json or find_dataset_json(folders, images)
    if enhanced_raw and dataset_json is None:
        raise ValueError("the enhanced dataset needs the source's dataset.json (give --dataset-json)")
    valid = valid_labels(dataset_json)
    source_json = json.loads(Path(dataset_json).read_text()) if dataset_json else {}
    ending = source_json.get("file_ending")
    out = Path(out)
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pgps-difficulty-", dir=out.resolve().parent) as tmp:
        if predict_with:
            from pgps.nnunet.inference.predict import Adaptation, make_predictor, predict_folder

            matched_cases(folders, ending)  # fail on mismatched folders before predicting
            predictor = make_predictor(
                predict_with, tuple(folds) if folds else None, checkpoint, Adaptation.off(), device=device,
                progress=bool(progress),
            )  # fmt: skip
            ending = ending or predictor.dataset_json["file_ending"]
            predict_folder(predictor, images, tmp)
            folders.append(Path(tmp))
            names.append("prediction")
        scores, cleaned, real = score_folders(
            folders, provided=range(provided), easy=easy, erroneous=erroneous, labels=valid,
            dice_classes=dice_classes, absent=absent, file_ending=ending, progress=progress,
            keep=enhanced_raw is not None,
        )  # fmt: skip
        dataset = None
        if enhanced_raw:
            dataset = write_enhanced_dataset(
                images, folders[0], scores, real, enhanced_raw, dataset_id, name, source_json, names,
                drop_erroneous=drop_erroneous, overwrite=overwrite, file_ending=ending,
            )  # fmt: skip
        write_difficulty_csv(out, scores, names, cleaned)
    return DifficultyRun(out, scores, names, cleaned, dataset, easy, erroneous)
