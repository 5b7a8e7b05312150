"""NSD in collect: ``pgps surface`` on a fold folder's validation (a cube shifted by one voxel, anisotropic
spacing read with nnU-Net's reader) and ``pgps collect`` carrying it into results.csv and surface.csv."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pgps.cli import main
from pgps.report.results import MANIFEST_COLUMNS


def write_label(path, array, spacing_xyz):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path))


def cube(corner, n=4, shape=(8, 8, 8)):
    a = np.zeros(shape, np.uint8)
    a[tuple(slice(c, c + n) for c in corner)] = 1
    return a


@pytest.fixture
def fold(tmp_path):
    """A trained-looking fold folder: one validation case, class 1 a 4^3 cube shifted by one voxel along array
    axis 0 (z), whose spacing is 2 mm (SimpleITK spacing x, y, z = 1, 1, 2); class 2 absent from both."""
    model = tmp_path / "results" / "Dataset001_Cube" / "T__nnUNetPlans__3d_fullres"
    fold = model / "fold_0"
    (fold / "validation").mkdir(parents=True)
    gt = tmp_path / "gt"
    gt.mkdir()
    labels = {"background": 0, "a": 1, "b": 2}
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    (model / "dataset.json").write_text(json.dumps(meta))
    write_label(gt / "case_000.nii.gz", cube((2, 2, 2)), (1.0, 1.0, 2.0))
    write_label(fold / "validation" / "case_000.nii.gz", cube((3, 2, 2)), (1.0, 1.0, 2.0))
    summary = {"metric_per_case": [{"prediction_file": "/elsewhere/validation/case_000.nii.gz",  # moved fold folder
                                    "reference_file": str(gt / "case_000.nii.gz")}]}  # fmt: skip
    (fold / "validation" / "summary.json").write_text(json.dumps(summary))
    return fold


def test_surface_table_of_a_fold_and_collect(fold, tmp_path, capsys):
    assert main(["surface", "--fold-dir", str(fold), "--tolerance", "1.9", "--no-progress"]) == 0
    table = pd.read_csv(fold / "validation" / "pgps_surface.csv")
    one, two = table[table["class"] == 1].iloc[0], table[table["class"] == 2].iloc[0]
    # overlap 3 of 4 layers: Dice = 2 * 48 / (64 + 64) = 0.75. The shift is 2 mm: below 2 mm only the shared
    # boundary rings (36 per cube) and, from 1 mm, the 4 inner face voxels per cube reach the other boundary:
    # (36 + 4) * 2 / (56 * 2) = 5/7 (9/14 below 1 mm; 1 from 2 mm) -- so the spacing is read in array order
    assert (one["dice"], one["nsd"], one["tolerance_mm"]) == pytest.approx((0.75, 5 / 7, 1.9), abs=1e-6)
    assert (one["reference_voxels"], one["prediction_voxels"]) == (64, 64)
    assert math.isnan(two["dice"]) and math.isnan(two["nsd"])
    main(["surface", "--fold-dir", str(fold), "--tolerance", "0.9", "--no-progress"])
    assert pd.read_csv(fold / "validation" / "pgps_surface.csv")["nsd"].iloc[0] == pytest.approx(9 / 14, abs=1e-6)

    manifest = tmp_path / "runs.csv"
    row = {"dataset": "Cube", "backbone": "unet", "mode": "cps", "sampler": "default", "mirroring": True,
           "length": 100, "fold": 0, "seed": 0, "trainer": "T", "plans": "nnUNetPlans",
           "configuration": "3d_fullres", "fold_dir": str(fold)}  # fmt: skip
    pd.DataFrame([row], columns=list(MANIFEST_COLUMNS)).to_csv(manifest, index=False)
    assert main(["collect", "--runs", str(manifest), "--out", str(tmp_path / "res"), "--quiet"]) == 0
    results = pd.read_csv(tmp_path / "res" / "results.csv")
    assert results["nsd"].iloc[0] == pytest.approx(9 / 14, abs=1e-6)
    assert json.loads(results["nsd_per_class"].iloc[0]) == pytest.approx({"1": 9 / 14}, abs=1e-6)
    assert results["nsd_tolerance_mm"].iloc[0] == 0.9
    surface = pd.read_csv(tmp_path / "res" / "surface.csv")
    assert list(surface.columns[:3]) == ["run", "dataset", "backbone"] and len(surface) == 2
    assert "surface.csv" in capsys.readouterr().out


def test_surface_of_two_folders_and_errors(fold, tmp_path, capsys):
    pred = fold / "validation"
    (pred / "dataset.json").write_text((fold.parent / "dataset.json").read_text())
    out = tmp_path / "t" / "surface.csv"
    args = ["surface", "--pred", str(pred), "--ref", str(tmp_path / "gt"), "--out", str(out), "--no-progress"]
    assert main([*args, "--tolerance", "2"]) == 0
    assert "1 cases, mean Dice 0.7500, mean NSD 1.0000 at 2 mm" in capsys.readouterr().out
    assert main(["surface", "--fold-dir", str(fold), "--pred", str(pred)]) == 2
    assert main(["surface", "--pred", str(tmp_path / "gt"), "--ref", str(pred), "--out", str(out),
                 "--dataset-json", str(pred / "dataset.json")]) == 0  # fmt: skip
    (tmp_path / "gt" / "case_001.nii.gz").write_bytes((tmp_path / "gt" / "case_000.nii.gz").read_bytes())
    assert main(args) == 2
    assert "no prediction for 1 case(s): case_001.nii.gz" in capsys.readouterr().err
