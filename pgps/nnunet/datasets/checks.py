"""Checks of a dataset in nnU-Net's raw format: ``dataset.json`` and the files it promises, then every case (the
image channels have the label's shape and spacing, the label holds only declared values)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pgps.nnunet.datasets.base import ConversionError, files_in
from pgps.progress import Progress

NNUNET_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


def check_raw_dataset(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Check the structure of an nnU-Net v2 raw dataset without reading images; return a summary.

    Checks ``dataset.json``'s required keys, that label values are ``0..K`` (an ``ignore`` label may
    follow), that every case in ``labelsTr`` has one image per channel in ``imagesTr`` and vice versa,
    and ``numTraining``. Datasets listing files under ``dataset`` are checked for those files. The
    summary holds ``cases``, ``channels`` and ``labels`` (the ``labels`` mapping). Raises
    :class:`ConversionError` naming the first problem.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / "dataset.json").read_text())
    except FileNotFoundError:
        raise ConversionError(f"{folder}: no dataset.json") from None
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{folder}/dataset.json is not JSON: {exc}") from None
    missing = [k for k in NNUNET_KEYS if k not in meta]
    if missing:
        raise ConversionError(f"{folder}/dataset.json lacks {', '.join(missing)} (nnU-Net v2 needs {NNUNET_KEYS})")
    values: set[int] = set()
    for label_name, value in meta["labels"].items():
        if label_name != "ignore":
            values.update(int(v) for v in (value if isinstance(value, list | tuple) else [value]))
    if values != set(range(len(values))):
        raise ConversionError(f"{folder}/dataset.json: label values {sorted(values)} are not 0..K")
    channels = len(meta["channel_names"])
    ending = meta["file_ending"]
    if "dataset" in meta:
        for case, entry in meta["dataset"].items():
            for f in [*entry["images"], entry["label"]]:
                path = Path(os.path.expandvars(f))
                if not (path if path.is_absolute() else folder / path).is_file():
                    raise ConversionError(f"{folder}: case {case} lists {f}, which does not exist")
        cases = len(meta["dataset"])
    else:
        for sub in ("imagesTr", "labelsTr"):
            if not (folder / sub).is_dir():
                raise ConversionError(f"{folder}: no {sub}/ folder")
        labels = {p.name[: -len(ending)] for p in files_in(folder / "labelsTr") if p.name.endswith(ending)}
        images = {p.name[: -len(ending)] for p in files_in(folder / "imagesTr") if p.name.endswith(ending)}
        expected = {f"{case}_{c:04d}" for case in labels for c in range(channels)}
        if images != expected:
            extra, lacking = sorted(images - expected), sorted(expected - images)
            detail = f"missing images {lacking[:3]}" if lacking else f"images without a label {extra[:3]}"
            raise ConversionError(f"{folder}: imagesTr and labelsTr do not match ({channels} channel(s)): {detail}")
        cases = len(labels)
    if cases != meta["numTraining"]:
        raise ConversionError(
            f"{folder}: {cases} training cases, but dataset.json says numTraining {meta['numTraining']}"
        )
    return {"cases": cases, "channels": channels, "labels": meta["labels"]}


def check_cases(folder: str | os.PathLike[str], workers: int = 1, progress: bool | None = None) -> int:
    """Check every training case of an nnU-Net v2 raw dataset; return the number of cases.

    As nnU-Net's ``verify_dataset_integrity`` (whose case listing and image readers are used): every
    image channel has the label's shape and spacing, and the label holds only values ``dataset.json``
    declares (its labels, regions' values and ``ignore``). Image headers are read without their voxels;
    each label is read once, in ``workers`` processes. Raises :class:`ConversionError` naming the case
    and the file.
    """
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    folder = Path(folder)
    meta = json.loads((folder / "dataset.json").read_text())
    allowed: set[int] = set()
    for value in meta["labels"].values():
        allowed.update(int(v) for v in (value if isinstance(value, list | tuple) else [value]))
    cases = get_filenames_of_train_images_and_targets(str(folder), meta)
    jobs = [(case, cases[case]["images"], cases[case]["label"], sorted(allowed), str(folder)) for case in sorted(cases)]
    bar = Progress(f"check {folder.name}", len(jobs), progress, unit="case")
    return _first_problem(_check_case, jobs, workers, bar)


def _first_problem(function: Callable[[Any], str | None], jobs: list, workers: int, bar: Progress) -> int:
    """Run ``function`` on every job (:func:`run_jobs`); raise :class:`ConversionError` with the first problem it
    reports; return the number of jobs."""
    try:
        for problem in run_jobs(function, jobs, workers):
            if problem:
                raise ConversionError(problem)
            bar.advance()
    finally:
        bar.close()
    return len(jobs)


def _check_case(job: tuple[str, list[str], str, list[int], str]) -> str | None:
    """What is wrong with one case (``(case, image files, label file, allowed values, dataset folder)``), or None."""
    case, images, label, allowed, folder = job

    def name(path: str) -> str:
        return os.path.relpath(path, folder)

    seg_shape, seg_spacing, seg = _read_image(label, voxels=True)
    for image in images:
        shape, spacing, _ = _read_image(image, voxels=False)
        if shape != seg_shape:
            return f"case {case}: {name(image)} has shape {shape}, its label {name(label)} {seg_shape}"
        if not np.allclose(spacing, seg_spacing, rtol=1e-3, atol=1e-5):
            return f"case {case}: {name(image)} has spacing {spacing}, its label {name(label)} {seg_spacing}"
    values = np.unique(seg)
    bad = [v for v in values.tolist() if v not in allowed]
    if bad:
        return (
            f"case {case}: {name(label)} holds label value(s) {bad[:10]} that dataset.json does not declare "
            f"(labels {allowed})"
        )
    return None


def _read_image(path: str, voxels: bool) -> tuple[tuple[int, ...], tuple[float, ...], np.ndarray | None]:
    """``(shape, spacing, voxels or None)`` of an image file in array (z, y, x) order; only the header unless
    ``voxels``. SimpleITK reads what it can (NIfTI, MHA, NRRD, ...)."""
    import SimpleITK as sitk

    if not voxels:
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise ConversionError(f"{path}: cannot read this image ({exc})") from None
        return tuple(reader.GetSize())[::-1], tuple(reader.GetSpacing())[::-1], None
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise ConversionError(f"{path}: cannot read this image ({exc})") from None
    return tuple(image.GetSize())[::-1], tuple(image.GetSpacing())[::-1], sitk.GetArrayFromImage(image)


def run_jobs(function: Callable[[Any], Any], jobs: list, workers: int) -> Iterator[Any]:
    """``map(function, jobs)``, in ``workers`` spawned processes when more than one, results in order."""
    if workers == 1 or len(jobs) < 2:
        yield from map(function, jobs)
        return
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(function, jobs)


# -- the source files, read to the end before any converter touches them --------------------------------------------
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
"""Image files of a source dataset that :func:`check_source_files` reads to the end."""


def check_source_files(root: str | os.PathLike[str], workers: int = 1, progress: bool | None = None) -> int:
    """Read every image file under ``root`` (a located source dataset) to its end; return how many. A file that
    cannot be (a ``.gz`` stream cut short or corrupt, a NIfTI whose voxels stop before its header says, a header
    SimpleITK cannot read) raises :class:`ConversionError` naming it, before a converter copies it under another
    name or reads it with a traceback."""
    files = sorted(str(p) for p in Path(root).rglob("*") if p.name.endswith(IMAGE_SUFFIXES) and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))  # fmt: skip
    bar = Progress(f"read {Path(root).name}", len(files), progress, unit="file")
    return _first_problem(_source_problem, files, workers, bar)


def _source_problem(path: str) -> str | None:
    """What keeps one source image file from being read to its end, or None."""
    import gzip
    import zlib

    try:
        size = os.path.getsize(path)
        if path.endswith(".gz"):  # the whole stream: a cut or corrupt one fails here
            size = 0
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    size += len(chunk)
        if path.endswith((".nii", ".nii.gz")):
            return _nifti_problem(path, size)
        import SimpleITK as sitk

        try:  # .mha, .nrrd: SimpleITK reads the voxels to their end
            sitk.ReadImage(path)
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            return f"{path}: cannot be read to its end (SimpleITK: {reason}); is it cut short?"
    except (EOFError, OSError, zlib.error) as exc:
        return f"{path}: cannot be read to its end ({exc}); is it cut short?"
    return None


def _nifti_problem(path: str, size: int) -> str | None:
    """A NIfTI file (``size`` bytes, uncompressed) whose voxel data is shorter than its header says (the header
    read with nibabel)."""
    import nibabel as nib

    try:
        image = nib.load(path)
    except Exception as exc:
        return f"{path}: not a NIfTI image ({exc})"
    header = image.header
    needed = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    if size < needed:
        return f"{path}: holds {size} bytes of voxel data and header, its header needs {needed}; is it cut short?"
    return None
