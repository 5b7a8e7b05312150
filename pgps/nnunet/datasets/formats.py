"""The source formats :func:`pgps.nnunet.datasets.convert.convert_dataset` converts (:data:`FORMATS`): each one's
expected layout, where to get it, how to find its root, and its converter (ours, or nnU-Net's in a child
process); and the label tables of BTCV and TotalSegmentator."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np

from pgps.nnunet.datasets.archives import find_root
from pgps.nnunet.datasets.base import (
    Context,
    ConversionError,
    Format,
    files_in,
    make_raw_dirs,
    place,
    read_source_json,
    subfolders,
    write_dataset_json,
)
from pgps.nnunet.datasets.checks import NNUNET_KEYS, check_cases, check_raw_dataset, run_jobs
from pgps.nnunet.datasets.child import run_nnunet
from pgps.progress import Progress

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


def _locate_msd(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        return (d / "dataset.json").is_file() and (d / "imagesTr").is_dir() and (d / "labelsTr").is_dir()

    root = find_root(base, is_root, FORMATS["msd"])
    meta = read_source_json(root / "dataset.json")
    if "modality" not in meta or "labels" not in meta:
        hint = " (it looks like nnU-Net v2's format: use --format nnunet)" if "channel_names" in meta else ""
        raise FORMATS["msd"].layout_error(root, f"dataset.json has no 'modality'/'labels'{hint}")
    if not files_in(root / "labelsTr", ".nii.gz"):
        raise FORMATS["msd"].layout_error(root, "labelsTr/ holds no .nii.gz files")
    return root


def _convert_msd(root: Path, out: Path, dataset_id: int, name: str, ctx: Context) -> str:
    # convert_msd_dataset wants a folder named TaskXX_Name (one '_') with an imagesTs/: give it a
    # shim of symbolic links, so any folder name works and the source stays untouched.
    shim = ctx.staging / "shim" / f"Task{dataset_id:03d}_shim"
    shim.mkdir(parents=True)
    for entry in ("dataset.json", "imagesTr", "labelsTr", "imagesTs"):
        if (root / entry).exists():
            (shim / entry).symlink_to((root / entry).resolve())
    if not (shim / "imagesTs").exists():
        (shim / "imagesTs").mkdir()
    channels = len(read_source_json(root / "dataset.json")["modality"])
    images = len(files_in(root / "imagesTr", ".nii.gz")) + len(files_in(root / "imagesTs", ".nii.gz"))
    expected = channels * images + len(files_in(root / "labelsTr", ".nii.gz"))
    call = {"kind": "msd", "source": str(shim), "dataset_id": dataset_id, "workers": ctx.workers}
    run_nnunet(call, out, dataset_id, expected, ctx)
    return "nnunetv2.dataset_conversion.convert_MSD_dataset.convert_msd_dataset"


def _locate_btcv(base: Path) -> Path:
    root = find_root(base, lambda d: bool(_btcv_pairs(d)), FORMATS["btcv"])
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
    for p in files_in(folder, ".nii.gz"):
        m = re.fullmatch(rf"{prefix}(\d+)\.nii\.gz", p.name)
        if m:
            found[m.group(1)] = p
    return found


def _convert_btcv(root: Path, out: Path, dataset_id: int, name: str, ctx: Context) -> str:

    pairs = _btcv_pairs(root)
    _, labels_dir, test_dir = _btcv_dirs(root)
    unpaired = sorted(set(_numbered(labels_dir, "label")) - set(pairs))
    if unpaired:
        raise FORMATS["btcv"].layout_error(root, f"labels without an image: {unpaired[:5]}")
    make_raw_dirs(out, test=test_dir is not None)
    bar = Progress(f"BTCV -> {out.name}", len(pairs), ctx.progress, unit="case")
    for number, (image, label) in pairs.items():  # shapes and label values: check_cases, after the conversion
        case = f"BTCV_{number}"
        place(image, out / "imagesTr" / f"{case}_0000.nii.gz", ctx)
        place(label, out / "labelsTr" / f"{case}.nii.gz", ctx)
        bar.advance()
    bar.close()
    if test_dir is not None:
        for number, image in _numbered(test_dir, "img").items():
            place(image, out / "imagesTs" / f"BTCV_{number}_0000.nii.gz", ctx)
    labels = {"background": 0, **{c: i + 1 for i, c in enumerate(BTCV_CLASSES)}}
    reference = "https://www.synapse.org/#!Synapse:syn3193805/wiki/217789"
    write_dataset_json(out, name, {"0": "CT"}, labels, len(pairs), reference=reference)
    return "pgps.nnunet.datasets.convert (BTCV)"


def _locate_kits23(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        return any((c / "segmentation.nii.gz").is_file() for c in subfolders(d) if c.name.startswith("case_"))

    root = find_root(base, is_root, FORMATS["kits23"])
    cases = [c for c in subfolders(root) if c.name.startswith("case_")]
    lacking = [
        c.name for c in cases if not (c / "imaging.nii.gz").is_file() or not (c / "segmentation.nii.gz").is_file()
    ]
    if lacking:
        raise FORMATS["kits23"].layout_error(
            root, f"{len(lacking)} of {len(cases)} cases lack imaging.nii.gz or segmentation.nii.gz (e.g. {lacking[0]})"
        )
    return root


def _convert_kits23(root: Path, out: Path, dataset_id: int, name: str, ctx: Context) -> str:
    cases = [c for c in subfolders(root) if c.name.startswith("case_")]
    call = {"kind": "kits23", "source": str(root), "dataset_id": dataset_id}
    run_nnunet(call, out, dataset_id, 2 * len(cases), ctx)
    return "nnunetv2.dataset_conversion.Dataset220_KiTS2023.convert_kits2023"


_AMOS_DIRS = ("imagesTr", "labelsTr", "imagesVa", "labelsVa")


def _locate_amos22(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        return (d / "dataset.json").is_file() and all((d / s).is_dir() for s in _AMOS_DIRS)

    root = find_root(base, is_root, FORMATS["amos22"])
    meta = read_source_json(root / "dataset.json")
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


def _convert_amos22(root: Path, out: Path, dataset_id: int, name: str, ctx: Context) -> str:
    meta = read_source_json(root / "dataset.json")
    expected = 2 * (len(meta["training"]) + len(meta["validation"])) + len(meta["test"])
    call = {"kind": "amos22", "source": str(root), "dataset_id": dataset_id}
    run_nnunet(call, out, dataset_id, expected, ctx)
    return "nnunetv2.dataset_conversion.Dataset219_Amos2022_task2.convert_amos_task2"


AMOS_CT_IDS = range(1, 501)
"""AMOS22 case numbers of CT scans (``amos_0001`` ... ``amos_0500``); MRI scans are 501-600."""


def _amos22_split(task: int):
    """Converter of AMOS22 task ``task`` with the official training/validation split kept."""

    def convert(root: Path, out: Path, dataset_id: int, name: str, ctx: Context) -> str:
        meta = read_source_json(root / "dataset.json")
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
                place(root / images / f"{case}.nii.gz", out / images_out / f"{case}_0000.nii.gz", ctx)
                place(root / labels / f"{case}.nii.gz", out / labels_out / f"{case}.nii.gz", ctx)
            counts[section] = len(cases)
        labels = {v: int(k) for k, v in meta["labels"].items()}
        channel = {"0": "CT"} if task == 1 else {"0": "either_CT_or_MR"}
        write_dataset_json(
            out, name, channel, labels, counts["training"], overwrite_image_reader_writer="NibabelIOWithReorient",
            reference="https://amos22.grand-challenge.org/", release="https://zenodo.org/record/7262581",
            pgps_heldout={"images": "imagesTs", "labels": "labelsTs", "cases": counts["validation"],
                          "split": "AMOS22's official validation cases"},
        )  # fmt: skip
        return (
            f"pgps.nnunet.datasets.convert (AMOS22 task {task}, official split: {counts['training']} training, "
            f"{counts['validation']} held-out validation cases)"
        )

    return convert


def _locate_toothfairy2(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        return (d / "dataset.json").is_file() and (d / "imagesTr").is_dir() and (d / "labelsTr").is_dir()

    root = find_root(base, is_root, FORMATS["toothfairy2"])
    meta = read_source_json(root / "dataset.json")
    if not isinstance(meta.get("labels"), dict) or not all(isinstance(v, int) for v in meta["labels"].values()):
        raise FORMATS["toothfairy2"].layout_error(root, "dataset.json has no 'labels' mapping names to integers")
    if not files_in(root / "labelsTr"):
        raise FORMATS["toothfairy2"].layout_error(root, "labelsTr/ is empty")
    return root


def _convert_toothfairy2(root: Path, out: Path, dataset_id: int, name: str, ctx: Context) -> str:
    try:  # the source's labels against its dataset.json: nnU-Net's mapping turns an undeclared value into background
        check_cases(root, ctx.workers, ctx.progress)
    except ConversionError as exc:
        raise ConversionError(f"{root}: {exc}") from None
    expected = len(files_in(root / "labelsTr")) + len(files_in(root / "imagesTr"))
    call = {"kind": "toothfairy2", "source": str(root), "dataset_id": dataset_id, "workers": ctx.workers}
    run_nnunet(call, out, dataset_id, expected, ctx)
    (out / "splits_final.json").unlink(missing_ok=True)  # a single 70:30 split; the article uses 5 folds
    return "nnunetv2.dataset_conversion.Dataset119_ToothFairy2_All.process_ds (mapping_DS119)"


_SUBJECT = re.compile(r"s\d+")


def _locate_totalsegmentator(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        return any(_SUBJECT.fullmatch(s.name) and (s / "ct.nii.gz").is_file() for s in subfolders(d))

    root = find_root(base, is_root, FORMATS["totalsegmentator"])
    subjects = _totalseg_subjects(root)
    for subject in subjects:
        if not (root / subject / "ct.nii.gz").is_file() or not (root / subject / "segmentations").is_dir():
            raise FORMATS["totalsegmentator"].layout_error(root, f"{subject}/ lacks ct.nii.gz or segmentations/")
    return root


def _totalseg_subjects(root: Path) -> list[str]:
    """Subject folders, in meta.csv's order when it is there (``image_id`` column, ';' or ',' separated)."""
    meta = root / "meta.csv"
    if not meta.is_file():
        return sorted(s.name for s in subfolders(root) if _SUBJECT.fullmatch(s.name))
    with open(meta, newline="") as f:
        text = f.read()
    delimiter = ";" if text.split("\n", 1)[0].count(";") > text.split("\n", 1)[0].count(",") else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows or "image_id" not in rows[0]:
        raise FORMATS["totalsegmentator"].layout_error(root, "meta.csv has no image_id column")
    return [row["image_id"] for row in rows]


def _convert_totalsegmentator(root: Path, out: Path, dataset_id: int, name: str, ctx: Context) -> str:
    subjects = _totalseg_subjects(root)
    make_raw_dirs(out, test=False)
    jobs = [(str(root / s), str(out), s, ctx.source_is_extracted) for s in subjects]
    bar = Progress(f"TotalSegmentator -> {out.name}", len(jobs), ctx.progress, unit="subject")
    for _ in run_jobs(_totalseg_subject, jobs, ctx.workers):
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
    write_dataset_json(out, name, {"0": "CT"}, labels, len(subjects), reference=reference, description=description)
    return "pgps.nnunet.datasets.convert (TotalSegmentator)"


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
    place(subject_path / "ct.nii.gz", out_path / "imagesTr" / f"{subject}_0000.nii.gz", move=move)


def _locate_nnunet(base: Path) -> Path:
    def is_root(d: Path) -> bool:
        if not (d / "dataset.json").is_file():
            return False
        try:
            meta = json.loads((d / "dataset.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        return isinstance(meta, dict) and all(k in meta for k in NNUNET_KEYS)

    root = find_root(base, is_root, FORMATS["nnunet"])
    check_raw_dataset(root)
    return root


def _convert_nnunet(root: Path, out: Path, dataset_id: int, name: str, ctx: Context) -> str:
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p != root / "dataset.json"]
    out.mkdir(parents=True)
    bar = Progress(f"nnU-Net -> {out.name}", len(files), ctx.progress, unit="file")
    for f in files:
        dst = out / f.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        place(f, dst, ctx)
        bar.advance()
    bar.close()
    shutil.copyfile(root / "dataset.json", out / "dataset.json")  # a copy: annotate must not edit the source
    return "pgps.nnunet.datasets.convert (nnU-Net raw: hard links or copies)"


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
