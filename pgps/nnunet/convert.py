"""Convert the article's datasets, as their publishers ship them, to nnU-Net v2's raw format.

``convert_dataset(format, source, raw_dir, dataset_id, name)`` writes ``raw_dir/DatasetXXX_Name/``
(``dataset.json``, ``imagesTr``, ``labelsTr``, ``imagesTs`` where the source has test images) and
returns that folder. ``source`` is the publisher's archive (``.tar``, ``.tar.gz``, ``.zip``) or the
extracted folder; the dataset root is found up to three folders deep. Formats (:data:`FORMATS`):

- ``msd``: a Medical Segmentation Decathlon task; nnU-Net's ``convert_msd_dataset``.
- ``btcv``: BTCV (Synapse "Multi-Atlas Labeling Beyond the Cranial Vault", Abdomen); our converter.
- ``kits23``: KiTS23; nnU-Net's ``Dataset220_KiTS2023.convert_kits2023`` (regions kidney/masses/tumor).
- ``amos22``: AMOS22 task 2 (CT and MRI, the article's "AMOS22 CT/MRI task"); nnU-Net's
  ``Dataset219_Amos2022_task2.convert_amos_task2`` (validation cases join the training cases).
- ``amos22_task1`` / ``amos22_task2``: AMOS22 with its official split kept, as the large-batch
  AMOS22 study uses it (Task 1: 200 CT training and 100 validation cases; Task 2: 200 CT + 40 MRI /
  100 CT + 20 MRI): training cases -> ``imagesTr``/``labelsTr``, validation cases -> ``imagesTs``/
  ``labelsTs`` (held out: predicted and scored, never trained on). Task 1 keeps the CT cases: AMOS
  ids 1-500 are CT, 501-600 MRI (the numbering nnU-Net's ``Dataset218_Amos2022_task1`` relies on).
  Our converter, with nnU-Net's choices for the rest (channel name, NibabelIOWithReorient).
- ``toothfairy2``: ToothFairy2; nnU-Net's ``Dataset119_ToothFairy2_All.process_ds`` with its
  ``mapping_DS119`` (42 classes, the "NA" ids dropped). Its single 70:30 ``splits_final.json`` is
  removed, because nnU-Net 2.8.1 would copy it into preprocessed and train one split instead of the
  5-fold cross-validation the article reports.
- ``totalsegmentator``: TotalSegmentator v2.0.1; our converter merges the 117 per-structure masks
  into one label map in the order of :data:`TOTALSEGMENTATOR_CLASSES`.
- ``nnunet``: a dataset already in nnU-Net v2's raw format; checked, then hard-linked (or copied).

nnU-Net's converters write into ``$nnUNet_raw/DatasetXXX_<their name>``; they run in a child Python
whose ``nnUNet_raw`` is a staging folder (and whose ``nnUNet_preprocessed``/``nnUNet_results`` are
empty), and the folder they write is renamed to the requested ``DatasetXXX_Name``. Everything is
written under the hidden ``raw_dir/.DatasetXXX_Name.partial/`` (archives are extracted there too) and
renamed into place at the end, so an interrupted conversion never leaves a dataset that looks done.
``dataset.json`` gets a ``pgps_convert`` entry (format, source, converter).

``download(url, out, md5=...)`` fetches a public archive (``pgps download``): streamed to
``out.part``, resumed with an HTTP Range request, checked, renamed to ``out``.

Only the standard library and numpy are imported here; nibabel, SimpleITK, tqdm and nnunetv2 are
imported when used (none of them imports torch).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pgps.synth import dataset_folder_name

# -- label tables --------------------------------------------------------------------------------

#: BTCV Abdomen labels 1..13 (Synapse syn3193805, wiki 217789).
BTCV_CLASSES: tuple[str, ...] = (
    "spleen",
    "right_kidney",
    "left_kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior_vena_cava",
    "portal_vein_and_splenic_vein",
    "pancreas",
    "right_adrenal_gland",
    "left_adrenal_gland",
)

_RIBS = tuple(f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13))
_VERTEBRAE = (
    "sacrum",
    "vertebrae_S1",
    *(f"vertebrae_L{i}" for i in range(5, 0, -1)),
    *(f"vertebrae_T{i}" for i in range(12, 0, -1)),
    *(f"vertebrae_C{i}" for i in range(7, 0, -1)),
)

#: TotalSegmentator v2 classes; label ``i + 1`` is ``TOTALSEGMENTATOR_CLASSES[i]``, the order of the
#: ``"total"`` task in TotalSegmentator's ``totalsegmentator/map_to_binary.py`` (so label maps match
#: TotalSegmentator's own multilabel output). Each name is a mask file ``segmentations/<name>.nii.gz``.
TOTALSEGMENTATOR_CLASSES: tuple[str, ...] = (
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
    "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
    "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left",
    "kidney_cyst_right", *_VERTEBRAE, "heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk",
    "subclavian_artery_right", "subclavian_artery_left", "common_carotid_artery_right",
    "common_carotid_artery_left", "brachiocephalic_vein_left", "brachiocephalic_vein_right",
    "atrial_appendage_left", "superior_vena_cava", "inferior_vena_cava", "portal_vein_and_splenic_vein",
    "iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right", "humerus_left",
    "humerus_right", "scapula_left", "scapula_right", "clavicula_left", "clavicula_right", "femur_left",
    "femur_right", "hip_left", "hip_right", "spinal_cord", "gluteus_maximus_left", "gluteus_maximus_right",
    "gluteus_medius_left", "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right",
    "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain", "skull", *_RIBS,
    "sternum", "costal_cartilages",
)  # fmt: skip
assert len(TOTALSEGMENTATOR_CLASSES) == 117 == len(set(TOTALSEGMENTATOR_CLASSES))

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
_SEARCH_DEPTH = 3
_NNUNET_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


class ConversionError(ValueError):
    """A source that cannot be converted (missing, unexpected layout, existing output, ...)."""


# -- formats -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Format:
    """One source format: the layout it expects, where to get such data, and its converter."""

    name: str
    layout: str
    obtain: str
    locate: Callable[[Path], Path]
    convert: Callable[[Path, Path, int, str, _Context], str]

    def layout_error(self, where: Path, problem: str = "") -> ConversionError:
        """The error for a source without this format's layout: what was expected and where to get it."""
        problem = f"{problem}. " if problem else ""
        return ConversionError(
            f"{where}: not a {self.name} source. {problem}Expected {self.layout}. Get the data: {self.obtain}"
        )


@dataclasses.dataclass
class _Context:
    staging: Path
    workers: int
    progress: bool | None
    source_is_extracted: bool


# -- public API ----------------------------------------------------------------------------------


def convert_dataset(
    fmt: str,
    source: str | os.PathLike[str],
    raw_dir: str | os.PathLike[str],
    dataset_id: int,
    name: str,
    *,
    overwrite: bool = False,
    workers: int = 1,
    progress: bool | None = None,
) -> Path:
    """Convert ``source`` (archive or folder) of format ``fmt`` to ``raw_dir/DatasetXXX_name`` and return it.

    ``workers`` processes convert cases in parallel where the converter can; ``progress`` shows a tqdm
    bar on stderr (``None``: a bar on a terminal, a line per ~10% otherwise; ``False``: silent).
    Raises :class:`ConversionError` for a missing source, a source without the format's layout, an
    existing non-empty output without ``overwrite``, or another dataset with the same id in ``raw_dir``.
    """
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    if workers < 1:
        raise ConversionError(f"workers must be >= 1, got {workers}")
    folder_name = dataset_folder_name(dataset_id, name)
    source = Path(source).expanduser()
    raw_dir = Path(raw_dir).expanduser()
    target = raw_dir / folder_name
    if not source.exists():
        raise ConversionError(f"source {source} does not exist. Expected {spec.layout}. Get the data: {spec.obtain}")
    if source.is_file() and not _is_archive(source):
        raise ConversionError(f"source {source} is a file but not an archive ({', '.join(ARCHIVE_SUFFIXES)})")
    if fmt == "nnunet" and source.is_dir() and source.resolve() == target.resolve():
        check_raw_dataset(target)  # already in place: only check it
        check_cases(target, workers, progress)
        return target
    if raw_dir.is_dir():
        clashes = sorted(p.name for p in raw_dir.glob(f"Dataset{int(dataset_id):03d}_*") if p.name != folder_name)
        if clashes:
            raise ConversionError(f"{raw_dir} already holds {', '.join(clashes)} with dataset id {int(dataset_id):03d}")
    if target.exists() and not target.is_dir():
        raise ConversionError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ConversionError(f"{target} exists and is not empty (pass --overwrite to replace it)")

    staging = raw_dir / f".{folder_name}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # left over by an interrupted run
    staging.mkdir(parents=True)
    try:
        extracted = source.is_file()
        root = spec.locate(_extract(source, staging / "source", progress) if extracted else source)
        out = staging / "out" / folder_name
        context = _Context(staging=staging, workers=workers, progress=progress, source_is_extracted=extracted)
        converter = spec.convert(root, out, int(dataset_id), name, context)
        check_raw_dataset(out)
        check_cases(out, workers, progress)
        _annotate(out, name, {"format": fmt, "source": str(source.resolve()), "converter": converter})
        if target.exists():
            target.rename(staging / "replaced")
        out.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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
    missing = [k for k in _NNUNET_KEYS if k not in meta]
    if missing:
        raise ConversionError(f"{folder}/dataset.json lacks {', '.join(missing)} (nnU-Net v2 needs {_NNUNET_KEYS})")
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
        labels = {p.name[: -len(ending)] for p in _files(folder / "labelsTr") if p.name.endswith(ending)}
        images = {p.name[: -len(ending)] for p in _files(folder / "imagesTr") if p.name.endswith(ending)}
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
    bar = _Progress(f"check {folder.name}", len(jobs), progress, unit="case")
    try:
        for problem in _map(_check_case, jobs, workers):
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


def _map(function: Callable[[Any], Any], jobs: list, workers: int) -> Iterator[Any]:
    """``map(function, jobs)``, in ``workers`` spawned processes when more than one, results in order."""
    if workers == 1 or len(jobs) < 2:
        yield from map(function, jobs)
        return
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(function, jobs)


def download(
    url: str,
    out: str | os.PathLike[str],
    md5: str | None = None,
    *,
    progress: bool | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``out`` (a file, or a folder to put the URL's file name in) and return the file.

    Bytes go to ``out.part``; a ``.part`` left by an interrupted download is resumed with an HTTP
    Range request (or restarted when the server ignores it). The file is renamed to ``out`` only when
    complete and, with ``md5``, when its MD5 matches; a mismatch removes the ``.part`` and raises
    :class:`ConversionError`. An existing ``out`` is kept (and checked against ``md5``).
    """
    into_folder = os.fspath(out).endswith(("/", os.sep))
    out = Path(out).expanduser()
    if out.is_dir() or into_folder:
        basename = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
        if not basename:
            raise ConversionError(f"cannot name a file after {url}; give OUT as a file path")
        out = out / basename
    md5 = md5.lower() if md5 else None
    if md5 is not None and not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise ConversionError(f"--md5 must be 32 hex digits, got {md5!r}")
    if out.is_file():
        if md5 is not None and (got := _md5_of(out)) != md5:
            raise ConversionError(f"{out} exists with md5 {got}, expected {md5}; remove it to download again")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    for attempt in range(2):  # a second, full attempt after a 416 on a stale .part
        have = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "pgps-download"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have and attempt == 0:
                if md5 is not None and _md5_of(part) == md5:
                    break  # the .part was already complete
                part.unlink()
                continue
            raise ConversionError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:  # no network, unknown host, refused, timed out
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ConversionError(
                f"{url}: cannot download ({reason}); check the network, or fetch the file yourself and point "
                "the dataset's raw_path at it"
            ) from None
        with response:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            resumed = have > 0 and getattr(response, "status", None) == 206 and start and int(start.group(1)) == have
            if have and not resumed:
                have = 0  # the server sent the whole file
            digest = _md5_of(part, hashlib.md5()) if resumed else hashlib.md5()
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            bar = _Progress(f"download {out.name}", total, progress, unit="B", initial=have)
            try:
                with open(part, "ab" if resumed else "wb") as f:
                    while chunk := response.read(chunk_size):
                        f.write(chunk)
                        digest.update(chunk)
                        bar.advance(len(chunk))
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                raise ConversionError(f"{url}: the download broke off ({exc}); run again to resume it") from None
            finally:
                bar.close()
        if total is not None and part.stat().st_size != total:
            raise ConversionError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume")
        if md5 is not None and (got := digest.hexdigest()) != md5:
            part.unlink()
            raise ConversionError(f"{url}: md5 {got} does not match the expected {md5}; removed {part}")
        break
    os.replace(part, out)
    return out


# -- converters ----------------------------------------------------------------------------------


def _locate_msd(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        return (d / "dataset.json").is_file() and (d / "imagesTr").is_dir() and (d / "labelsTr").is_dir()

    root = _find_root(base, is_root, FORMATS["msd"])
    meta = _read_json(root / "dataset.json")
    if "modality" not in meta or "labels" not in meta:
        hint = " (it looks like nnU-Net v2's format: use --format nnunet)" if "channel_names" in meta else ""
        raise FORMATS["msd"].layout_error(root, f"dataset.json has no 'modality'/'labels'{hint}")
    if not _files(root / "labelsTr", ".nii.gz"):
        raise FORMATS["msd"].layout_error(root, "labelsTr/ holds no .nii.gz files")
    return root


def _convert_msd(root: Path, out: Path, dataset_id: int, name: str, ctx: _Context) -> str:
    # convert_msd_dataset wants a folder named TaskXX_Name (one '_') with an imagesTs/: give it a
    # shim of symbolic links, so any folder name works and the source stays untouched.
    shim = ctx.staging / "shim" / f"Task{dataset_id:03d}_shim"
    shim.mkdir(parents=True)
    for entry in ("dataset.json", "imagesTr", "labelsTr", "imagesTs"):
        if (root / entry).exists():
            (shim / entry).symlink_to((root / entry).resolve())
    if not (shim / "imagesTs").exists():
        (shim / "imagesTs").mkdir()
    channels = len(_read_json(root / "dataset.json")["modality"])
    images = len(_files(root / "imagesTr", ".nii.gz")) + len(_files(root / "imagesTs", ".nii.gz"))
    expected = channels * images + len(_files(root / "labelsTr", ".nii.gz"))
    call = {"kind": "msd", "source": str(shim), "dataset_id": dataset_id, "workers": ctx.workers}
    _run_nnunet(call, out, dataset_id, expected, ctx)
    return "nnunetv2.dataset_conversion.convert_MSD_dataset.convert_msd_dataset"


def _locate_btcv(base: Path) -> Path:
    root = _find_root(base, lambda d: bool(_btcv_pairs(d)), FORMATS["btcv"])
    return root


def _btcv_dirs(root: Path) -> tuple[Path, Path, Path | None]:
    """(images, labels, test images or None) of a BTCV root in one of the layouts it ships in."""
    for images, labels, test in (
        ("Training/img", "Training/label", "Testing/img"),
        ("img", "label", None),
        ("imagesTr", "labelsTr", "imagesTs"),
    ):
        if (root / images).is_dir() and (root / labels).is_dir():
            test_dir = root / test if test and (root / test).is_dir() else None
            return root / images, root / labels, test_dir
    raise FileNotFoundError(root)


def _btcv_pairs(root: Path) -> dict[str, tuple[Path, Path]]:
    """Case number -> (image, label) for ``img0001.nii.gz`` / ``label0001.nii.gz`` files of a BTCV root."""
    try:
        images, labels, _ = _btcv_dirs(root)
    except FileNotFoundError:
        return {}
    image_of = _numbered(images, "img")
    label_of = _numbered(labels, "label")
    return {n: (image_of[n], label_of[n]) for n in sorted(image_of.keys() & label_of.keys())}


def _numbered(folder: Path, prefix: str) -> dict[str, Path]:
    found = {}
    for p in _files(folder, ".nii.gz"):
        m = re.fullmatch(rf"{prefix}(\d+)\.nii\.gz", p.name)
        if m:
            found[m.group(1)] = p
    return found


def _convert_btcv(root: Path, out: Path, dataset_id: int, name: str, ctx: _Context) -> str:

    pairs = _btcv_pairs(root)
    _, labels_dir, test_dir = _btcv_dirs(root)
    unpaired = sorted(set(_numbered(labels_dir, "label")) - set(pairs))
    if unpaired:
        raise FORMATS["btcv"].layout_error(root, f"labels without an image: {unpaired[:5]}")
    _make_dirs(out, test=test_dir is not None)
    bar = _Progress(f"BTCV -> {out.name}", len(pairs), ctx.progress, unit="case")
    for number, (image, label) in pairs.items():  # shapes and label values: check_cases, after the conversion
        case = f"BTCV_{number}"
        _place(image, out / "imagesTr" / f"{case}_0000.nii.gz", ctx)
        _place(label, out / "labelsTr" / f"{case}.nii.gz", ctx)
        bar.advance()
    bar.close()
    if test_dir is not None:
        for number, image in _numbered(test_dir, "img").items():
            _place(image, out / "imagesTs" / f"BTCV_{number}_0000.nii.gz", ctx)
    labels = {"background": 0, **{c: i + 1 for i, c in enumerate(BTCV_CLASSES)}}
    reference = "https://www.synapse.org/#!Synapse:syn3193805/wiki/217789"
    _write_dataset_json(out, name, {"0": "CT"}, labels, len(pairs), reference=reference)
    return "pgps.nnunet.convert (BTCV)"


def _locate_kits23(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        return any((c / "segmentation.nii.gz").is_file() for c in _dirs(d) if c.name.startswith("case_"))

    root = _find_root(base, is_root, FORMATS["kits23"])
    cases = [c for c in _dirs(root) if c.name.startswith("case_")]
    lacking = [
        c.name for c in cases if not (c / "imaging.nii.gz").is_file() or not (c / "segmentation.nii.gz").is_file()
    ]
    if lacking:
        raise FORMATS["kits23"].layout_error(
            root, f"{len(lacking)} of {len(cases)} cases lack imaging.nii.gz or segmentation.nii.gz (e.g. {lacking[0]})"
        )
    return root


def _convert_kits23(root: Path, out: Path, dataset_id: int, name: str, ctx: _Context) -> str:
    cases = [c for c in _dirs(root) if c.name.startswith("case_")]
    call = {"kind": "kits23", "source": str(root), "dataset_id": dataset_id}
    _run_nnunet(call, out, dataset_id, 2 * len(cases), ctx)
    return "nnunetv2.dataset_conversion.Dataset220_KiTS2023.convert_kits2023"


_AMOS_DIRS = ("imagesTr", "labelsTr", "imagesVa", "labelsVa")


def _locate_amos22(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        return (d / "dataset.json").is_file() and all((d / s).is_dir() for s in _AMOS_DIRS)

    root = _find_root(base, is_root, FORMATS["amos22"])
    meta = _read_json(root / "dataset.json")
    missing = [k for k in ("training", "validation", "test", "labels") if k not in meta]
    if missing:
        raise FORMATS["amos22"].layout_error(root, f"dataset.json lacks {', '.join(missing)}")
    sections = {"training": ("imagesTr", "labelsTr"), "validation": ("imagesVa", "labelsVa"), "test": ("imagesTs",)}
    for section, folders in sections.items():
        for entry in meta[section]:
            file_name = Path(entry["image"]).name
            for folder in folders:
                if not (root / folder / file_name).is_file():
                    raise FORMATS["amos22"].layout_error(root, f"dataset.json lists {folder}/{file_name}, not found")
    return root


def _convert_amos22(root: Path, out: Path, dataset_id: int, name: str, ctx: _Context) -> str:
    meta = _read_json(root / "dataset.json")
    expected = 2 * (len(meta["training"]) + len(meta["validation"])) + len(meta["test"])
    call = {"kind": "amos22", "source": str(root), "dataset_id": dataset_id}
    _run_nnunet(call, out, dataset_id, expected, ctx)
    return "nnunetv2.dataset_conversion.Dataset219_Amos2022_task2.convert_amos_task2"


AMOS_CT_IDS = range(1, 501)
"""AMOS22 case numbers of CT scans (``amos_0001`` ... ``amos_0500``); MRI scans are 501-600."""


def _amos22_split(task: int):
    """Converter of AMOS22 task ``task`` with the official training/validation split kept."""

    def convert(root: Path, out: Path, dataset_id: int, name: str, ctx: _Context) -> str:
        meta = _read_json(root / "dataset.json")
        keep = (lambda case: int(case.rsplit("_", 1)[-1]) in AMOS_CT_IDS) if task == 1 else (lambda case: True)
        for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        counts = {}
        for section, (images, labels), (images_out, labels_out) in (
            ("training", ("imagesTr", "labelsTr"), ("imagesTr", "labelsTr")),
            ("validation", ("imagesVa", "labelsVa"), ("imagesTs", "labelsTs")),
        ):
            cases = [Path(e["image"]).name.removesuffix(".nii.gz") for e in meta[section]]
            cases = [c for c in cases if keep(c)]
            for case in cases:
                _place(root / images / f"{case}.nii.gz", out / images_out / f"{case}_0000.nii.gz", ctx)
                _place(root / labels / f"{case}.nii.gz", out / labels_out / f"{case}.nii.gz", ctx)
            counts[section] = len(cases)
        labels = {v: int(k) for k, v in meta["labels"].items()}
        channel = {"0": "CT"} if task == 1 else {"0": "either_CT_or_MR"}
        _write_dataset_json(
            out, name, channel, labels, counts["training"], overwrite_image_reader_writer="NibabelIOWithReorient",
            reference="https://amos22.grand-challenge.org/", release="https://zenodo.org/record/7262581",
            pgps_heldout={"images": "imagesTs", "labels": "labelsTs", "cases": counts["validation"],
                          "split": "AMOS22's official validation cases"},
        )  # fmt: skip
        return (
            f"pgps.nnunet.convert (AMOS22 task {task}, official split: {counts['training']} training, "
            f"{counts['validation']} held-out validation cases)"
        )

    return convert


def _locate_toothfairy2(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        return (d / "dataset.json").is_file() and (d / "imagesTr").is_dir() and (d / "labelsTr").is_dir()

    root = _find_root(base, is_root, FORMATS["toothfairy2"])
    meta = _read_json(root / "dataset.json")
    if not isinstance(meta.get("labels"), dict) or not all(isinstance(v, int) for v in meta["labels"].values()):
        raise FORMATS["toothfairy2"].layout_error(root, "dataset.json has no 'labels' mapping names to integers")
    if not _files(root / "labelsTr"):
        raise FORMATS["toothfairy2"].layout_error(root, "labelsTr/ is empty")
    return root


def _convert_toothfairy2(root: Path, out: Path, dataset_id: int, name: str, ctx: _Context) -> str:
    expected = len(_files(root / "labelsTr")) + len(_files(root / "imagesTr"))
    call = {"kind": "toothfairy2", "source": str(root), "dataset_id": dataset_id, "workers": ctx.workers}
    _run_nnunet(call, out, dataset_id, expected, ctx)
    (out / "splits_final.json").unlink(missing_ok=True)  # a single 70:30 split; the article uses 5 folds
    return "nnunetv2.dataset_conversion.Dataset119_ToothFairy2_All.process_ds (mapping_DS119)"


_SUBJECT = re.compile(r"s\d+")


def _locate_totalsegmentator(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        return any(_SUBJECT.fullmatch(s.name) and (s / "ct.nii.gz").is_file() for s in _dirs(d))

    root = _find_root(base, is_root, FORMATS["totalsegmentator"])
    subjects = _totalseg_subjects(root)
    for subject in subjects:
        if not (root / subject / "ct.nii.gz").is_file() or not (root / subject / "segmentations").is_dir():
            raise FORMATS["totalsegmentator"].layout_error(root, f"{subject}/ lacks ct.nii.gz or segmentations/")
    return root


def _totalseg_subjects(root: Path) -> list[str]:
    """Subject folders, in meta.csv's order when it is there (``image_id`` column, ';' or ',' separated)."""
    meta = root / "meta.csv"
    if not meta.is_file():
        return sorted(s.name for s in _dirs(root) if _SUBJECT.fullmatch(s.name))
    with open(meta, newline="") as f:
        text = f.read()
    delimiter = ";" if text.split("\n", 1)[0].count(";") > text.split("\n", 1)[0].count(",") else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows or "image_id" not in rows[0]:
        raise FORMATS["totalsegmentator"].layout_error(root, "meta.csv has no image_id column")
    return [row["image_id"] for row in rows]


def _convert_totalsegmentator(root: Path, out: Path, dataset_id: int, name: str, ctx: _Context) -> str:
    subjects = _totalseg_subjects(root)
    _make_dirs(out, test=False)
    jobs = [(str(root / s), str(out), s, ctx.source_is_extracted) for s in subjects]
    bar = _Progress(f"TotalSegmentator -> {out.name}", len(jobs), ctx.progress, unit="subject")
    for _ in _map(_totalseg_subject, jobs, ctx.workers):
        bar.advance()
    bar.close()
    if (root / "meta.csv").is_file():
        shutil.copyfile(root / "meta.csv", out / "meta.csv")
    labels = {"background": 0, **{c: i + 1 for i, c in enumerate(TOTALSEGMENTATOR_CLASSES)}}
    description = (
        "TotalSegmentator v2.0.1; per-structure masks merged in TotalSegmentator's 'total' class order, "
        "a later class overwriting an earlier one where masks overlap"
    )
    reference = "https://zenodo.org/records/10047292"
    _write_dataset_json(out, name, {"0": "CT"}, labels, len(subjects), reference=reference, description=description)
    return "pgps.nnunet.convert (TotalSegmentator)"


def _totalseg_subject(job: tuple[str, str, str, bool]) -> None:
    """Copy one subject's CT and write its merged uint8 label map (one mask in memory at a time)."""
    import nibabel as nib

    subject_dir, out, subject, move = job
    subject_path, out_path = Path(subject_dir), Path(out)
    ct = nib.load(subject_path / "ct.nii.gz")
    label = np.zeros(ct.shape, dtype=np.uint8)
    for value, class_name in enumerate(TOTALSEGMENTATOR_CLASSES, start=1):
        mask_file = subject_path / "segmentations" / f"{class_name}.nii.gz"
        if not mask_file.is_file():
            raise ConversionError(f"{subject}: missing mask segmentations/{class_name}.nii.gz")
        mask = np.asanyarray(nib.load(mask_file).dataobj)
        if mask.shape != label.shape:
            raise ConversionError(f"{mask_file}: shape {mask.shape} differs from ct.nii.gz's {label.shape}")
        np.copyto(label, np.uint8(value), where=mask != 0)
        del mask
    image = nib.Nifti1Image(label, ct.affine, header=ct.header)
    image.set_data_dtype(np.uint8)
    nib.save(image, out_path / "labelsTr" / f"{subject}.nii.gz")
    _place(subject_path / "ct.nii.gz", out_path / "imagesTr" / f"{subject}_0000.nii.gz", move=move)


def _locate_nnunet(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        if not (d / "dataset.json").is_file():
            return False
        try:
            meta = json.loads((d / "dataset.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        return isinstance(meta, dict) and all(k in meta for k in _NNUNET_KEYS)

    root = _find_root(base, is_root, FORMATS["nnunet"])
    check_raw_dataset(root)
    return root


def _convert_nnunet(root: Path, out: Path, dataset_id: int, name: str, ctx: _Context) -> str:
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p != root / "dataset.json"]
    out.mkdir(parents=True)
    bar = _Progress(f"nnU-Net -> {out.name}", len(files), ctx.progress, unit="file")
    for f in files:
        dst = out / f.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        _place(f, dst, ctx)
        bar.advance()
    bar.close()
    shutil.copyfile(root / "dataset.json", out / "dataset.json")  # a copy: _annotate must not edit the source
    return "pgps.nnunet.convert (nnU-Net raw: hard links or copies)"


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "msd",
            "a Medical Segmentation Decathlon task: TaskXX_Name/ with dataset.json (MSD keys 'modality', 'labels', "
            "'training'), imagesTr/*.nii.gz (3D or 4D), labelsTr/*.nii.gz and imagesTs/, or the task's .tar",
            "http://medicaldecathlon.com (public .tar per task; the workflow config lists the URLs)",
            _locate_msd,
            _convert_msd,
        ),
        Format(
            "btcv",
            "BTCV Abdomen RawData: Training/img/img0001.nii.gz and Training/label/label0001.nii.gz (optional "
            "Testing/img/), e.g. RawData.zip, or img/+label/ or imagesTr/+labelsTr/ with the same file names",
            "Synapse syn3193805 (free account; accept the data terms): "
            "https://www.synapse.org/#!Synapse:syn3193805/wiki/217789, Files > Abdomen > RawData.zip",
            _locate_btcv,
            _convert_btcv,
        ),
        Format(
            "kits23",
            "the kits23 repository's dataset/ folder: one case_XXXXX/ per case with imaging.nii.gz and "
            "segmentation.nii.gz",
            "git clone https://github.com/neheller/kits23 && cd kits23 && pip install -e . && kits23_download_data "
            "(writes the images into kits23/dataset/)",
            _locate_kits23,
            _convert_kits23,
        ),
        Format(
            "amos22",
            "AMOS22 as released after the challenge: amos22/ with dataset.json ('training', 'validation', 'test', "
            "'labels'), imagesTr/, labelsTr/, imagesVa/, labelsVa/, imagesTs/ (amos22.zip)",
            "Zenodo record 7262581 (amos22.zip, public; the workflow config has the URL), see https://amos22.grand-challenge.org",
            _locate_amos22,
            _convert_amos22,
        ),
        *(
            Format(
                f"amos22_task{task}",
                "AMOS22 as released after the challenge (as for amos22): amos22/ with dataset.json, imagesTr/, "
                "labelsTr/, imagesVa/, labelsVa/ (amos22.zip)",
                "Zenodo record 7262581 (amos22.zip, public; the workflow config has the URL)",
                _locate_amos22,
                _amos22_split(task),
            )
            for task in (1, 2)
        ),
        Format(
            "toothfairy2",
            "ToothFairy2 in nnU-Net layout: Dataset112_ToothFairy2/ with dataset.json, imagesTr/*_0000.mha and "
            "labelsTr/*.mha (label ids 1-48, FDI tooth numbering)",
            "https://ditto.ing.unimore.it/toothfairy2 (free account, accept the licence; Download Dataset)",
            _locate_toothfairy2,
            _convert_toothfairy2,
        ),
        Format(
            "totalsegmentator",
            "TotalSegmentator v2.0.1: sXXXX/ct.nii.gz and sXXXX/segmentations/<structure>.nii.gz (117 masks per "
            "subject) plus meta.csv (Totalsegmentator_dataset_v201.zip)",
            "Zenodo record 10047292 (public; the workflow config has the URL)",
            _locate_totalsegmentator,
            _convert_totalsegmentator,
        ),
        Format(
            "nnunet",
            "an nnU-Net v2 raw dataset: dataset.json (channel_names, labels, numTraining, file_ending), "
            "imagesTr/{case}_{XXXX}{file_ending} and labelsTr/{case}{file_ending}",
            "a dataset you already converted (see nnU-Net's documentation/dataset_format.md)",
            _locate_nnunet,
            _convert_nnunet,
        ),
    )
}


# -- nnU-Net's converters in a child process -----------------------------------------------------


def _run_nnunet(call: dict[str, Any], out: Path, dataset_id: int, expected_files: int, ctx: _Context) -> None:
    """Run one of nnU-Net's converters in a child Python with ``nnUNet_raw`` set to a staging folder.

    The folder it writes (``DatasetXXX_<nnU-Net's name>``) is renamed to ``out``. Progress counts the
    files appearing in it against ``expected_files``; the child's output goes to a log file whose tail
    is shown if it fails.
    """
    raw = ctx.staging / "nnunet_raw"
    raw.mkdir()
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(ctx.staging / "nnunet_preprocessed"),  # absent: no id clashes from there
        "nnUNet_results": str(ctx.staging / "nnunet_results"),
        "PYTHONPATH": os.pathsep.join([package_root, *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    if call["kind"] == "toothfairy2":
        call = {**call, "out": str(raw / f"Dataset{dataset_id:03d}_ToothFairy2_All")}
    log = ctx.staging / "nnunet_converter.log"
    bar = _Progress(f"{call['kind']} -> {out.name} (nnU-Net)", expected_files, ctx.progress, unit="file")
    with open(log, "wb") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "pgps.nnunet.convert", json.dumps(call)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            while child.poll() is None:
                time.sleep(0.5)
                bar.update(_count_files(raw))
        finally:
            if child.poll() is None:  # interrupted: stop the child before the staging folder goes
                child.kill()
                child.wait()
    bar.update(_count_files(raw))
    bar.close()
    if child.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-6:]
        raise ConversionError(
            f"nnU-Net's {call['kind']} converter failed (exit {child.returncode}): " + " | ".join(tail)
        )
    produced = sorted(raw.glob(f"Dataset{dataset_id:03d}_*"))
    if len(produced) != 1:
        raise ConversionError(f"nnU-Net's {call['kind']} converter wrote {[p.name for p in produced]} into {raw}")
    out.parent.mkdir(parents=True, exist_ok=True)
    produced[0].rename(out)


def _child_main(argv: list[str]) -> None:
    """Entry point of the child process: call the nnU-Net converter described by ``argv[0]`` (JSON)."""
    call = json.loads(argv[0])
    kind = call["kind"]
    if kind == "msd":
        from nnunetv2.dataset_conversion.convert_MSD_dataset import convert_msd_dataset

        convert_msd_dataset(call["source"], overwrite_target_id=call["dataset_id"], num_processes=call["workers"])
    elif kind == "kits23":
        from nnunetv2.dataset_conversion.Dataset220_KiTS2023 import convert_kits2023

        convert_kits2023(call["source"], call["dataset_id"])
    elif kind == "amos22":
        from nnunetv2.dataset_conversion.Dataset219_Amos2022_task2 import convert_amos_task2

        convert_amos_task2(call["source"], call["dataset_id"])
    elif kind == "toothfairy2":
        from nnunetv2.dataset_conversion import Dataset119_ToothFairy2_All as toothfairy

        # process_ds starts 12 processes; this child is ours, so its helpers can be given our count
        for helper in ("process_images", "process_labels"):
            setattr(toothfairy, helper, _with_processes(getattr(toothfairy, helper), call["workers"]))
        # os.path.join(root, absolute) is the absolute path: source and output may live anywhere
        toothfairy.process_ds(os.sep, call["source"], call["out"], toothfairy.mapping_DS119(), None)
    else:
        raise ValueError(f"unknown converter {kind!r}")


def _with_processes(helper: Callable[..., Any], processes: int) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        kwargs["n_processes"] = processes
        return helper(*args, **kwargs)

    return wrapped


# -- helpers -------------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on stderr (``progress`` True, or None on a terminal), lines per ~10% (None otherwise), or nothing."""

    def __init__(self, desc: str, total: int | None, progress: bool | None, unit: str, initial: int = 0) -> None:
        self.desc, self.total, self.unit, self.n = desc, total, unit, initial
        self.bar = None
        self.lines = False
        self.next_line = 0.0
        tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        if progress or (progress is None and tty):
            from tqdm import tqdm

            scale = unit == "B"
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=scale, file=sys.stderr)
        elif progress is None:
            self.lines = True
            smallest = 1 << 24 if unit == "B" else 1
            self.step = max(smallest, total // 10) if total else 1000 * smallest
            self.next_line = initial + self.step

    def advance(self, n: int = 1) -> None:
        self.update(self.n + n)

    def update(self, n: int) -> None:
        if n == self.n:
            return
        if self.bar is not None:
            self.bar.update(n - self.n)
        self.n = n
        if self.lines and n >= self.next_line:
            self.next_line = n + self.step
            of = f"/{self.total}" if self.total else ""
            print(f"{self.desc}: {n}{of} {self.unit}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _extract(archive: Path, into: Path, progress: bool | None) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip archive into ``into`` (refusing paths outside it); return ``into``."""
    into.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                members = z.infolist()
                bar = _Progress(f"extract {archive.name}", len(members), progress, unit="file")
                for member in members:
                    z.extract(member, into)  # zipfile drops absolute and '..' parts
                    bar.advance()
        else:
            with tarfile.open(archive, "r:*") as t:
                bar = _Progress(f"extract {archive.name}", None, progress, unit="file")
                for member in t:
                    t.extract(member, into, filter="data")
                    bar.advance()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ConversionError(f"{archive}: cannot extract ({exc})") from None
    bar.close()
    return into


def _find_root(base: Path, is_root: Callable[[Path], bool], spec: Format) -> Path:
    """The shallowest folder under ``base`` (``base`` included, up to 3 levels down) that ``is_root``."""
    level = [base]
    for _ in range(_SEARCH_DEPTH + 1):
        found = [d for d in level if is_root(d)]
        if len(found) == 1:
            return found[0]
        if found:
            raise ConversionError(f"{base}: several {spec.name} datasets found: {', '.join(map(str, found))}")
        level = [c for d in level for c in _dirs(d)]
    raise spec.layout_error(base, f"No such folder in it or up to {_SEARCH_DEPTH} levels below")


def _dirs(folder: Path) -> list[Path]:
    """Sub-folders, skipping hidden ones and macOS's __MACOSX."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return []


def _files(folder: Path, suffix: str = "") -> list[Path]:
    """Files (not hidden, not starting with '_', e.g. MSD's '._' resource forks) ending with ``suffix``."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix) and p.name[0] not in "._")


def _count_files(folder: Path) -> int:
    """Image and label files written so far (dataset.json and splits files are not counted)."""
    return sum(not f.endswith(".json") for _, _, files in os.walk(folder) for f in files)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path} is not JSON: {exc}") from None


def _make_dirs(out: Path, test: bool) -> None:
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    if test:
        (out / "imagesTs").mkdir()


def _place(src: Path, dst: Path, ctx: _Context | None = None, move: bool = False) -> None:
    """Move ``src`` to ``dst`` when it is our extracted copy; otherwise hard-link it, or copy it across devices."""
    if move or (ctx is not None and ctx.source_is_extracted):
        os.replace(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_dataset_json(
    out: Path, name: str, channels: dict[str, str], labels: dict[str, int], cases: int, **extra: Any
) -> None:
    meta = {
        "channel_names": channels,
        "labels": labels,
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "name": name,
        **extra,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n")


def _annotate(out: Path, name: str, provenance: dict[str, str]) -> None:
    """Set ``name`` and add the ``pgps_convert`` provenance to ``out/dataset.json``."""
    path = out / "dataset.json"
    meta = _read_json(path)
    meta["name"] = name
    meta["pgps_convert"] = provenance
    tmp = path.with_name("dataset.json.tmp")
    tmp.write_text(json.dumps(meta, indent=4) + "\n")
    os.replace(tmp, path)  # a new file: never writes through a hard link into a source


def _md5_of(path: Path, digest: Any = None, chunk_size: int = 1 << 20) -> Any:
    """MD5 of a file: a hex string, or ``digest`` updated with the file's bytes when one is given."""
    own = digest is None
    digest = hashlib.md5() if own else digest
    with open(path, "rb") as f:
        for chunk in _chunks(f, chunk_size):
            digest.update(chunk)
    return digest.hexdigest() if own else digest


def _chunks(f: Any, size: int) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


if __name__ == "__main__":
    _child_main(sys.argv[1:])
