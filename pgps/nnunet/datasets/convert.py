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
written under the hidden ``raw_dir/.DatasetXXX_Name.partial-PID/`` (archives are extracted there too) and
renamed into place at the end, so an interrupted conversion never leaves a dataset that looks done. The
conversion holds ``raw_dir/.DatasetXXX_Name.lock`` (:func:`pgps.io.writer_lock`): a second writer of the
same folder (``pgps convert`` or ``pgps synth``) fails at once naming the first.
``dataset.json`` gets a ``pgps_convert`` entry (format, source, converter).

``download(url, out, md5=...)`` fetches a public archive (``pgps download``): streamed to
``out.part``, resumed with an HTTP Range request, checked, renamed to ``out``.

Only the standard library and numpy are imported here; nibabel, SimpleITK, tqdm and nnunetv2 are
imported when used (none of them imports torch).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pgps.data.synth import dataset_folder_name
from pgps.io import fresh_partial, writer_lock
from pgps.nnunet.datasets.archives import ARCHIVE_SUFFIXES, extract, is_archive
from pgps.nnunet.datasets.base import Context, ConversionError, Format, annotate
from pgps.nnunet.datasets.checks import check_cases, check_raw_dataset, check_source_files
from pgps.nnunet.datasets.download import download
from pgps.nnunet.datasets.formats import BTCV_CLASSES, FORMATS, TOTALSEGMENTATOR_CLASSES

__all__ = [
    "ARCHIVE_SUFFIXES",
    "BTCV_CLASSES",
    "FORMATS",
    "TOTALSEGMENTATOR_CLASSES",
    "ConversionError",
    "Format",
    "check_cases",
    "check_raw_dataset",
    "convert_dataset",
    "download",
]


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
    if source.is_file() and not is_archive(source):
        raise ConversionError(f"source {source} is a file but not an archive ({', '.join(ARCHIVE_SUFFIXES)})")
    if fmt == "nnunet" and source.is_dir() and source.resolve() == target.resolve():
        check_raw_dataset(target)  # already in place: only check it
        check_cases(target, workers, progress)
        return target
    raw_dir.mkdir(parents=True, exist_ok=True)
    with writer_lock(target):  # one writer of this dataset folder at a time (a second fails naming the first)
        clashes = sorted(p.name for p in raw_dir.glob(f"Dataset{int(dataset_id):03d}_*") if p.name != folder_name)
        if clashes:
            raise ConversionError(f"{raw_dir} already holds {', '.join(clashes)} with dataset id {int(dataset_id):03d}")
        if target.exists() and not target.is_dir():
            raise ConversionError(f"{target} exists and is not a directory")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise ConversionError(f"{target} exists and is not empty (pass --overwrite to replace it)")

        staging = fresh_partial(target)  # (an interrupted run's is removed)
        try:
            extracted = source.is_file()
            root = spec.locate(extract(source, staging / "source", progress) if extracted else source)
            check_source_files(root, workers, progress)  # every image read to its end, named as the source has it
            out = staging / "out" / folder_name
            context = Context(staging=staging, workers=workers, progress=progress, source_is_extracted=extracted)
            converter = spec.convert(root, out, int(dataset_id), name, context)
            check_raw_dataset(out)
            check_cases(out, workers, progress)
            annotate(out, name, {"format": fmt, "source": str(source.resolve()), "converter": converter})
            if target.exists():
                target.rename(staging / "replaced")
            out.rename(target)
        except ConversionError as exc:  # name the source, or the dataset being written, never the staging folder
            text = str(exc).replace(str(staging / "source"), f"{source} (archive)")
            text = text.replace(str(staging / "out" / folder_name), f"{target} (being written)")
            raise ConversionError(text) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
