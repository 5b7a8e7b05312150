"""Dataset conversion to nnU-Net's raw format (``pgps.nnunet.datasets.convert``, ``pgps convert``), ``pgps download``.

Each source format gets a tiny fake in the layout its publisher ships (2-3 cases of 8^3 voxels); the
converted datasets must pass nnU-Net 2.8.1's own ``verify_dataset_integrity``. The fakes follow the
layouts documented in ``pgps.nnunet.datasets.convert.FORMATS`` (MSD's 4D NIfTI and ``._`` resource forks,
BTCV's RawData zip, kits23's case folders, AMOS22's dataset.json lists, ToothFairy2's .mha files,
TotalSegmentator's per-structure masks and ``;``-separated meta.csv).
"""

import dataclasses
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pgps.cli import main
from pgps.data import synth
from pgps.nnunet.datasets import convert
from pgps.nnunet.datasets.convert import (
    BTCV_CLASSES,
    FORMATS,
    TOTALSEGMENTATOR_CLASSES,
    ConversionError,
    check_raw_dataset,
    convert_dataset,
    download,
)

SHAPE = (8, 8, 8)


def nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), path)
    return path


def label_volume(rng: np.random.Generator, values: list[int]) -> np.ndarray:
    """An 8^3 uint8 volume holding each of ``values`` (and 0)."""
    label = np.zeros(SHAPE, np.uint8)
    flat = label.reshape(-1)
    flat[rng.choice(flat.size, len(values), replace=False)] = values
    return label


def image_volume(rng: np.random.Generator, channels: int = 0) -> np.ndarray:
    shape = (*SHAPE, channels) if channels else SHAPE
    return rng.normal(size=shape).astype(np.float32)


# -- fake sources in each publisher's layout ---------------------------------------------------


def fake_msd(root: Path, task: str = "Task05_Fake") -> Path:
    """An MSD task as shipped: 2-channel 4D images, 3D labels 0..2, imagesTs, a '._' resource fork."""
    rng = np.random.default_rng(0)
    folder = root / task
    cases = ["fake_001", "fake_002", "fake_003"]
    for case in cases:
        nifti(folder / "imagesTr" / f"{case}.nii.gz", image_volume(rng, channels=2))
        nifti(folder / "labelsTr" / f"{case}.nii.gz", label_volume(rng, [1, 2]))
    nifti(folder / "imagesTs" / "fake_004.nii.gz", image_volume(rng, channels=2))
    (folder / "imagesTr" / "._fake_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    meta = {
        "name": "FAKE",
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": 3,
        "numTest": 1,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
        "test": ["./imagesTs/fake_004.nii.gz"],
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def fake_btcv_zip(root: Path) -> Path:
    """RawData.zip as in Synapse's Abdomen folder, nested one level deeper (Abdomen/RawData/...)."""
    rng = np.random.default_rng(1)
    staging = root / "btcv_files"
    for number in ("0001", "0002"):
        nifti(staging / "Training" / "img" / f"img{number}.nii.gz", image_volume(rng))
        nifti(staging / "Training" / "label" / f"label{number}.nii.gz", label_volume(rng, list(range(1, 14))))
    nifti(staging / "Testing" / "img" / "img0061.nii.gz", image_volume(rng))
    archive = root / "RawData.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(staging.rglob("*.nii.gz")):
            z.write(f, f"Abdomen/RawData/{f.relative_to(staging)}")
    return archive


def fake_kits23(root: Path) -> Path:
    rng = np.random.default_rng(2)
    folder = root / "kits23" / "dataset"
    for i in range(3):
        case = folder / f"case_{i:05d}"
        nifti(case / "imaging.nii.gz", image_volume(rng))
        nifti(case / "segmentation.nii.gz", label_volume(rng, [1, 2, 3]))
    (folder / "kits23.json").write_text("[]")
    return root / "kits23"


def fake_amos22(root: Path) -> Path:
    """amos22/ after the challenge: dataset.json lists training, validation (with labels) and test."""
    rng = np.random.default_rng(3)
    folder = root / "amos22"
    entries: dict[str, list] = {"training": [], "validation": [], "test": []}
    for case, section, images, labels in (
        ("amos_0001", "training", "imagesTr", "labelsTr"),
        ("amos_0507", "training", "imagesTr", "labelsTr"),  # an MRI case: kept by task 2
        ("amos_0008", "validation", "imagesVa", "labelsVa"),
        ("amos_0010", "test", "imagesTs", None),
    ):
        nifti(folder / images / f"{case}.nii.gz", image_volume(rng))
        entry = {"image": f"./{images}/{case}.nii.gz"}
        if labels:
            nifti(folder / labels / f"{case}.nii.gz", label_volume(rng, list(range(1, 16))))
            entry["label"] = f"./{labels}/{case}.nii.gz"
        entries[section].append(entry)
    organs = "spleen,right kidney,left kidney,gall bladder,esophagus,liver,stomach,arota,postcava,pancreas"
    organs += ",right adrenal gland,left adrenal gland,duodenum,bladder,prostate/uterus"
    labels = {"0": "background", **{str(i + 1): n for i, n in enumerate(organs.split(","))}}
    meta = {"name": "AMOS", "labels": labels, "modality": {"0": "CT"}, **entries}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


TOOTHFAIRY_IDS = [*range(1, 21), *range(21, 31), *range(31, 41), *range(41, 49)]


def fake_toothfairy2(root: Path) -> Path:
    """Dataset112_ToothFairy2 as shipped: .mha files, labels 1..48 with the 'NA' gaps 19/20, 29/30, 39/40."""
    rng = np.random.default_rng(4)
    folder = root / "ToothFairy2_Dataset" / "Dataset112_ToothFairy2"
    for i in (1, 2):
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        image = sitk.GetImageFromArray(rng.normal(size=SHAPE).astype(np.int16))
        label = sitk.GetImageFromArray(label_volume(rng, [1, 2, 19, 21, 48]))
        for im in (image, label):
            im.SetSpacing((0.3, 0.3, 0.3))
        sitk.WriteImage(image, str(folder / "imagesTr" / f"ToothFairy2F_{i:03d}_0000.mha"))
        sitk.WriteImage(label, str(folder / "labelsTr" / f"ToothFairy2F_{i:03d}.mha"))
    labels = {
        "background": 0,
        **{(f"NA_{i}" if i in (19, 20, 29, 30, 39, 40) else f"structure_{i}"): i for i in TOOTHFAIRY_IDS},
    }
    meta = {"channel_names": {"0": "CBCT"}, "labels": labels, "numTraining": 2, "file_ending": ".mha"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder.parent


def fake_totalsegmentator(root: Path) -> Path:
    """Totalsegmentator_dataset_v201/: per-subject ct.nii.gz + 117 uint8 0/1 masks, ';'-separated meta.csv."""
    rng = np.random.default_rng(5)
    folder = root / "Totalsegmentator_dataset_v201"
    for subject in ("s0001", "s0002"):
        nifti(folder / subject / "ct.nii.gz", rng.integers(-1000, 1000, SHAPE).astype(np.int16), (1.5, 1.5, 1.5))
        for index, name in enumerate(TOTALSEGMENTATOR_CLASSES, start=1):
            mask = np.zeros(SHAPE, np.uint8)
            mask.reshape(-1)[index % 512] = 1
            if name == "spleen":
                mask[:4, :4, :4] = 1
            if name == "heart":  # overlaps the spleen: the later class (heart, 51) wins
                mask[2:6, 2:6, 2:6] = 1
            nifti(folder / subject / "segmentations" / f"{name}.nii.gz", mask, (1.5, 1.5, 1.5))
    (folder / "meta.csv").write_text("image_id;age;gender;split\ns0001;61;m;train\ns0002;70;f;test\n")
    return folder


def fake_nnunet(root: Path) -> Path:
    config = synth.SynthConfig(num_cases=2, shape=SHAPE, num_classes=2, radii=((1.0, 2.0),), objects_per_class=(1, 1))
    return synth.generate_dataset(config, root, 321, "Source")


FAKES = {
    "msd": lambda root: fake_msd(root),
    "msd_tar": lambda root: tar_of(fake_msd(root / "tar_src", "Task02_Tarred"), root / "Task02_Tarred.tar"),
    "btcv": fake_btcv_zip,
    "kits23": fake_kits23,
    "amos22": fake_amos22,
    "toothfairy2": fake_toothfairy2,
    "totalsegmentator": fake_totalsegmentator,
    "nnunet": fake_nnunet,
}
IDS = {"msd": 5, "msd_tar": 2, "btcv": 17, "kits23": 220, "amos22": 219, "toothfairy2": 119,
       "totalsegmentator": 611, "nnunet": 42}  # fmt: skip


def tar_of(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as t:
        t.add(folder, arcname=folder.name)
    return archive


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Every format's fake, converted into one nnU-Net raw folder (one run for all tests)."""
    root = tmp_path_factory.mktemp("convert")
    raw = root / "nnUNet_raw"
    out = {}
    for key, make in FAKES.items():
        source = make(root / "sources" / key)
        fmt = "msd" if key == "msd_tar" else key
        out[key] = convert_dataset(fmt, source, raw, IDS[key], f"Pgps{key.replace('_', '')}", progress=False)
    return out


def meta_of(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def labels_in(path: Path) -> set[int]:
    return {int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))}


# -- each converter --------------------------------------------------------------------------


def test_every_output_is_a_raw_dataset_named_as_asked(converted):
    raw = next(iter(converted.values())).parent
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        f"Dataset{IDS[k]:03d}_Pgps{k.replace('_', '')}" for k in converted
    )  # nothing else left behind: no staging folder, no nnU-Net-named folder
    for key, folder in converted.items():
        summary = check_raw_dataset(folder)
        meta = meta_of(folder)
        assert meta["name"] == folder.name.split("_", 1)[1]
        assert meta["pgps_convert"]["format"] == ("msd" if key == "msd_tar" else key)
        assert summary["cases"] == meta["numTraining"] >= 2


def test_nnunet_verify_dataset_integrity_accepts_every_output(converted):
    # nnU-Net's own check (labels, shapes, spacings, channel count); its spawn pool is swapped for threads
    script = (
        "import json, multiprocessing.dummy, sys, types\n"
        "import nnunetv2.experiment_planning.verify_dataset_integrity as v\n"
        "v.multiprocessing = types.SimpleNamespace(get_context=lambda method: multiprocessing.dummy)\n"
        "for folder in json.loads(sys.argv[1]):\n"
        "    v.verify_dataset_integrity(folder, 1)\n"
    )
    folders = json.dumps([str(p) for p in converted.values()])
    result = subprocess.run([sys.executable, "-c", script, folders], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count("verify_dataset_integrity Done") == len(converted)
    assert "Error" not in result.stdout and "Warning" not in result.stdout  # e.g. no origin/direction mismatch


def test_msd_splits_4d_images_into_channels(converted):
    for key in ("msd", "msd_tar"):
        folder = converted[key]
        meta = meta_of(folder)
        assert meta["channel_names"] == {"0": "T2", "1": "ADC"}
        assert meta["labels"] == {"background": 0, "PZ": 1, "TZ": 2}
        images = sorted(p.name for p in (folder / "imagesTr").iterdir())
        assert images == [f"fake_{i:03d}_{c:04d}.nii.gz" for i in (1, 2, 3) for c in (0, 1)]  # '._' fork skipped
        assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [
            "fake_004_0000.nii.gz",
            "fake_004_0001.nii.gz",
        ]
        assert sitk.ReadImage(str(folder / "imagesTr" / "fake_001_0001.nii.gz")).GetDimension() == 3
    assert converted["msd_tar"].name == "Dataset002_Pgpsmsdtar"  # our id and name, not Task02's


def test_btcv_cases_labels_and_test_images(converted):
    folder = converted["btcv"]
    meta = meta_of(folder)
    assert meta["channel_names"] == {"0": "CT"}
    assert list(meta["labels"]) == ["background", *BTCV_CLASSES] and len(BTCV_CLASSES) == 13
    assert meta["labels"]["left_adrenal_gland"] == 13 and meta["labels"]["spleen"] == 1
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["BTCV_0001.nii.gz", "BTCV_0002.nii.gz"]
    assert [p.name for p in (folder / "imagesTs").iterdir()] == ["BTCV_0061_0000.nii.gz"]
    assert labels_in(folder / "labelsTr" / "BTCV_0001.nii.gz") == set(range(14))


def test_kits23_uses_nnunet_regions(converted):
    meta = meta_of(converted["kits23"])
    assert meta["labels"] == {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}
    assert meta["regions_class_order"] == [1, 3, 2]
    assert meta["overwrite_image_reader_writer"] == "NibabelIOWithReorient"
    assert sorted(p.name for p in (converted["kits23"] / "labelsTr").iterdir()) == [
        f"case_{i:05d}.nii.gz" for i in range(3)
    ]


def test_amos22_task2_keeps_mri_and_adds_validation_cases(converted):
    folder = converted["amos22"]
    meta = meta_of(folder)
    assert meta["numTraining"] == 3 and meta["channel_names"] == {"0": "either_CT_or_MR"}
    assert len(meta["labels"]) == 16 and meta["labels"]["prostate/uterus"] == 15
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [
        "amos_0001.nii.gz",
        "amos_0008.nii.gz",
        "amos_0507.nii.gz",
    ]
    assert [p.name for p in (folder / "imagesTs").iterdir()] == ["amos_0010_0000.nii.gz"]


def test_toothfairy2_maps_to_42_classes_and_drops_the_single_split(converted):
    folder = converted["toothfairy2"]
    meta = meta_of(folder)
    assert len(meta["labels"]) == 43 and max(meta["labels"].values()) == 42
    assert not any(name.startswith("NA") for name in meta["labels"])
    assert meta["file_ending"] == ".nii.gz"
    assert not (folder / "splits_final.json").exists()
    # source values 1, 2, 19 (NA), 21, 48 -> 1, 2, background, 19, 42 (nnU-Net's mapping_DS119)
    assert labels_in(folder / "labelsTr" / "ToothFairy2F_001.nii.gz") == {0, 1, 2, 19, 42}


def test_totalsegmentator_merges_117_masks_in_total_order(converted):
    folder = converted["totalsegmentator"]
    meta = meta_of(folder)
    # label values from TotalSegmentator's map_to_binary.py, class_map["total"]
    assert len(meta["labels"]) == 118
    expected = {"spleen": 1, "vertebrae_C1": 50, "heart": 51, "skull": 91, "rib_left_1": 92, "costal_cartilages": 117}
    assert {k: meta["labels"][k] for k in expected} == expected
    label = nib.load(folder / "labelsTr" / "s0001.nii.gz")
    ct = nib.load(folder / "imagesTr" / "s0001_0000.nii.gz")
    data = np.asanyarray(label.dataobj)
    assert label.get_data_dtype() == np.uint8 and np.allclose(label.affine, ct.affine)
    assert data[0, 0, 0] == 1 and data[3, 3, 3] == 51 and data[5, 5, 5] == 51  # heart overwrites spleen
    assert set(np.unique(data)) >= {0, 1, 51, 117}
    assert (folder / "meta.csv").read_text().startswith("image_id;")


def test_totalsegmentator_with_worker_processes_matches_one_process(converted, tmp_path):
    source = fake_totalsegmentator(tmp_path / "src")
    folder = convert_dataset("totalsegmentator", source, tmp_path / "raw", 611, "Par", workers=2, progress=False)
    for subject in ("s0001", "s0002"):
        a = np.asanyarray(nib.load(folder / "labelsTr" / f"{subject}.nii.gz").dataobj)
        b = np.asanyarray(nib.load(converted["totalsegmentator"] / "labelsTr" / f"{subject}.nii.gz").dataobj)
        assert np.array_equal(a, b)


def test_nnunet_passthrough_links_files_and_leaves_the_source_alone(converted):
    folder = converted["nnunet"]
    source = next(p for p in (folder.parent.parent / "sources" / "nnunet").iterdir())
    before = (source / "dataset.json").read_text()
    image = "imagesTr/case_000_0000.nii.gz"
    assert (
        os.path.samefile(folder / image, source / image)
        or (folder / image).read_bytes() == (source / image).read_bytes()
    )
    assert (source / "dataset.json").read_text() == before and "pgps_convert" not in before
    assert meta_of(folder)["pgps_synth"] == json.loads(before)["pgps_synth"]


def test_nnunet_passthrough_in_place_only_checks(converted):
    folder = converted["nnunet"]
    assert convert_dataset("nnunet", folder, folder.parent, 42, "Pgpsnnunet") == folder


# -- errors and atomicity --------------------------------------------------------------------


def test_missing_source_says_where_to_get_the_data(tmp_path, capsys):
    code = main(["convert", "--format", "btcv", "--source", str(tmp_path / "nope"), "--raw", str(tmp_path),
                 "--dataset-id", "17", "--name", "BTCV"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Synapse" in err and "Training/img" in err


@pytest.mark.parametrize("fmt", ["msd", "btcv", "kits23", "amos22", "toothfairy2", "totalsegmentator", "nnunet"])
def test_unexpected_layout_names_the_expected_one(tmp_path, fmt):
    (tmp_path / "src" / "something").mkdir(parents=True)
    (tmp_path / "src" / "something" / "file.txt").write_text("x")
    with pytest.raises(ConversionError) as info:
        convert_dataset(fmt, tmp_path / "src", tmp_path / "raw", 7, "X", progress=False)
    assert f"not a {fmt} source" in str(info.value) and FORMATS[fmt].layout in str(info.value)
    assert FORMATS[fmt].obtain in str(info.value)
    assert not (tmp_path / "raw" / "Dataset007_X").exists()


def test_layout_problems_are_specific(tmp_path):
    kits = fake_kits23(tmp_path / "k")
    (kits / "dataset" / "case_00001" / "imaging.nii.gz").unlink()
    with pytest.raises(ConversionError, match=r"1 of 3 cases lack imaging\.nii\.gz"):
        convert_dataset("kits23", kits, tmp_path / "raw", 220, "KiTS2023", progress=False)
    msd = fake_msd(tmp_path / "m")
    meta = json.loads((msd / "dataset.json").read_text())
    meta["channel_names"] = meta.pop("modality")
    (msd / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ConversionError, match="use --format nnunet"):
        convert_dataset("msd", msd, tmp_path / "raw", 5, "Prostate", progress=False)
    source = fake_nnunet(tmp_path / "n")
    (source / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(ConversionError, match="images without a label"):
        convert_dataset("nnunet", source, tmp_path / "raw", 8, "Broken", progress=False)


def test_existing_output_needs_overwrite(tmp_path, capsys):
    source = fake_kits23(tmp_path / "src")
    argv = ["convert", "--format", "kits23", "--source", str(source), "--raw", str(tmp_path / "raw"),
            "--dataset-id", "220", "--name", "KiTS2023", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out == f"{tmp_path / 'raw' / 'Dataset220_KiTS2023'}\n"
    marker = tmp_path / "raw" / "Dataset220_KiTS2023" / "old_marker"
    marker.write_text("old")
    assert main(argv) == 2
    assert "exists and is not empty" in capsys.readouterr().err and marker.exists()
    assert main([*argv, "--overwrite"]) == 0
    assert not marker.exists() and check_raw_dataset(tmp_path / "raw" / "Dataset220_KiTS2023")["cases"] == 3
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset220_KiTS2023"]


@pytest.mark.parametrize("fmt", ["msd", "kits23", "amos22", "toothfairy2", "totalsegmentator", "nnunet"])
def test_a_label_cut_short_is_named_as_the_source_has_it(tmp_path, fmt):
    """Half of a source label's bytes: the conversion stops naming that source file (not a staging copy),
    before any converter reads it, and writes nothing."""
    source = FAKES[fmt](tmp_path / "sources" / fmt)
    files = sorted(p for p in source.rglob("*") if p.name.endswith((".nii.gz", ".mha")))
    labels = [p for p in files if re.search(r"label|segmentation", str(p.relative_to(source)))]
    cut = (labels or files)[0]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    raw = tmp_path / "raw"
    with pytest.raises(ConversionError) as raised:
        convert_dataset(fmt, source, raw, IDS[fmt], "Cut", progress=False)
    assert str(raised.value).startswith(f"{cut}: cannot be read to its end"), str(raised.value)
    assert "is it cut short?" in str(raised.value) and ".partial" not in str(raised.value)
    assert not raw.exists() or not any(p for p in raw.iterdir() if not p.name.startswith("."))


def test_toothfairy2_refuses_an_undeclared_label_value_before_nnunets_mapping_erases_it(tmp_path):
    source = fake_toothfairy2(tmp_path / "sources")
    label = next((source / "Dataset112_ToothFairy2" / "labelsTr").glob("*.mha"))
    image = sitk.ReadImage(str(label))
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] = 77
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(label))
    with pytest.raises(ConversionError, match=r"holds label value\(s\) \[77\] that dataset.json does not declare"):
        convert_dataset("toothfairy2", source, tmp_path / "raw", 119, "Cut", progress=False)


def test_an_archived_nnunet_dataset_without_images_names_the_archive_not_a_staging_path(tmp_path):
    import shutil

    source = fake_nnunet(tmp_path / "n")
    shutil.rmtree(source / "imagesTr")
    archive = tar_of(source, tmp_path / "broken.tar")
    with pytest.raises(ConversionError) as raised:
        convert_dataset("nnunet", archive, tmp_path / "raw", 8, "Broken", progress=False)
    assert f"{archive} (archive)" in str(raised.value) and ".partial" not in str(raised.value), str(raised.value)


def test_same_id_other_name_is_refused(tmp_path):
    (tmp_path / "raw" / "Dataset017_Other").mkdir(parents=True)
    with pytest.raises(ConversionError, match="Dataset017_Other with dataset id 017"):
        convert_dataset("btcv", fake_btcv_zip(tmp_path), tmp_path / "raw", 17, "BTCV", progress=False)


def test_interrupted_conversion_leaves_no_dataset(tmp_path, monkeypatch):
    def interrupted(root, out, dataset_id, name, ctx):
        (out / "imagesTr").mkdir(parents=True)
        (out / "dataset.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setitem(convert.FORMATS, "btcv", dataclasses.replace(FORMATS["btcv"], convert=interrupted))
    with pytest.raises(KeyboardInterrupt):
        convert_dataset("btcv", fake_btcv_zip(tmp_path), tmp_path / "raw", 17, "BTCV", progress=False)
    assert list((tmp_path / "raw").iterdir()) == []  # neither the dataset nor the hidden staging folder


def test_failing_nnunet_converter_reports_its_error(tmp_path):
    amos = fake_amos22(tmp_path / "src")
    (amos / "labelsTr" / "amos_0507.nii.gz").unlink()
    with pytest.raises(ConversionError, match=r"labelsTr/amos_0507\.nii\.gz, not found"):
        convert_dataset("amos22", amos, tmp_path / "raw", 219, "AMOS", progress=False)


def test_progress_lines_when_not_a_terminal_and_none_with_q(tmp_path, capsys):
    """stderr is not a terminal under pytest: the command logs progress lines, prefixed with its name; ``-q`` keeps
    them off; stdout holds only the result (the dataset folder)."""
    source = fake_btcv_zip(tmp_path)
    argv = ["convert", "--format", "btcv", "--source", str(source), "--dataset-id", "17", "--name", "BTCV"]
    assert main([*argv, "--raw", str(tmp_path / "raw")]) == 0
    out, err = capsys.readouterr()
    assert "pgps convert: extract RawData.zip" in err and "pgps convert: BTCV -> Dataset017_BTCV: 2/2 case" in err
    assert out.strip() == str(tmp_path / "raw" / "Dataset017_BTCV")
    assert main([*argv, "--raw", str(tmp_path / "quiet"), "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.strip() == str(tmp_path / "quiet" / "Dataset017_BTCV")


def test_convert_cli_help_lists_formats(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    out = capsys.readouterr().out
    assert all(fmt in out for fmt in FORMATS) and "--overwrite" in out and "--workers" in out


def test_import_pgps_stays_light():
    heavy = "{'torch', 'nnunetv2', 'nibabel', 'SimpleITK'}"
    code = f"import sys, pgps, pgps.cli, pgps.nnunet.datasets.convert; print(sorted({heavy} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


# -- download --------------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 40  # 10 KiB
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    """A local HTTP server for /data.bin that honours Range requests unless told not to."""
    state = {"ranges": [], "honour_range": True}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requested = self.headers.get("Range")
            state["ranges"].append(requested)
            start = int(re.match(r"bytes=(\d+)-", requested).group(1)) if requested else 0
            if requested and state["honour_range"]:
                if start >= len(PAYLOAD):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                body = PAYLOAD[start:]
            else:
                self.send_response(200)
                body = PAYLOAD
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/data.bin"
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_download_checks_md5_and_renames_at_the_end(server, tmp_path):
    out = download(server["url"], tmp_path / "d" / "data.bin", md5=PAYLOAD_MD5, progress=False)
    assert out.read_bytes() == PAYLOAD and not (tmp_path / "d" / "data.bin.part").exists()
    assert server["ranges"] == [None]
    assert download(server["url"], out, md5=PAYLOAD_MD5) == out and len(server["ranges"]) == 1  # already there


def test_download_md5_mismatch_keeps_nothing(server, tmp_path):
    with pytest.raises(ConversionError, match="does not match"):
        download(server["url"], tmp_path / "data.bin", md5="0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_resumes_a_part_file(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:3000])
    out = download(server["url"], tmp_path / "data.bin", md5=PAYLOAD_MD5, progress=False)
    assert server["ranges"] == ["bytes=3000-"] and out.read_bytes() == PAYLOAD


def test_download_restarts_when_the_server_ignores_range(server, tmp_path):
    server["honour_range"] = False
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes")
    out = download(server["url"], tmp_path / "data.bin", md5=PAYLOAD_MD5, progress=False)
    assert server["ranges"] == ["bytes=11-"] and out.read_bytes() == PAYLOAD


def test_download_of_a_complete_part_file(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # interrupted between the last byte and the rename
    out = download(server["url"], tmp_path / "data.bin", md5=PAYLOAD_MD5, progress=False)
    assert out.read_bytes() == PAYLOAD and server["ranges"] == [f"bytes={len(PAYLOAD)}-"]


def test_download_file_url_into_a_folder(tmp_path):
    source = tmp_path / "src" / "archive.tar"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    (tmp_path / "out").mkdir()
    out = download(source.as_uri(), tmp_path / "out", md5=PAYLOAD_MD5, progress=False)
    assert out == tmp_path / "out" / "archive.tar" and out.read_bytes() == PAYLOAD


def test_download_cli(server, tmp_path, capsys):
    out = tmp_path / "data.bin"
    assert main(["download", server["url"], str(out), "--md5", PAYLOAD_MD5.upper(), "--no-progress"]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    assert main(["download", server["url"], str(tmp_path / "other.bin"), "--md5", "f" * 32, "--no-progress"]) == 2
    assert "does not match" in capsys.readouterr().err
    assert main(["download", server["url"].replace("data.bin", "missing"), str(tmp_path / "x"), "--md5", "zz"]) == 2
    assert "32 hex digits" in capsys.readouterr().err
