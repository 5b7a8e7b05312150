"""Synthetic nnU-Net datasets (``pgps.data.synth``, ``pgps synth``): determinism, class balance knobs,
orientation-defined classes, the raw format nnU-Net accepts, and the CLI's errors."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pgps.cli import main
from pgps.data import synth
from pgps.data.synth import PRESETS, SynthConfig, class_statistics, generate_dataset, make_case

SMALL = SynthConfig(num_cases=3, shape=(24, 28, 26), num_classes=2, radii=((3.0, 5.0),), objects_per_class=(1, 2))


def labels_of(config, cases=None):
    return [make_case(config, i)[1] for i in range(config.num_cases if cases is None else cases)]


def stats_of(config, cases=None):
    return class_statistics(labels_of(config, cases), config.num_classes)


# -- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_same_seed_gives_identical_arrays(name):
    config = PRESETS[name]
    for index in (0, 5):
        (image_a, label_a), (image_b, label_b) = make_case(config, index), make_case(config, index)
        assert image_a.dtype == np.float32 and label_a.dtype == np.uint8
        assert image_a.tobytes() == image_b.tobytes() and label_a.tobytes() == label_b.tobytes()


def test_other_seed_or_index_gives_other_arrays():
    image, label = make_case(PRESETS["organs"], 0)
    other_image, other_label = make_case(synth.preset("organs", seed=1), 0)
    assert image.shape != other_image.shape or not np.array_equal(label, other_label)
    assert image.shape != other_image.shape or not np.array_equal(image, other_image)
    assert not np.array_equal(make_case(SMALL, 0)[1], make_case(SMALL, 1)[1])


def test_case_does_not_depend_on_number_of_cases():
    few, many = synth.preset("lesions", num_cases=2), synth.preset("lesions", num_cases=50)
    assert make_case(few, 1)[0].tobytes() == make_case(many, 1)[0].tobytes()


def test_shape_and_jitter():
    assert all(label.shape == SMALL.shape for label in labels_of(SMALL))
    config = synth.preset("lesions", shape=(40, 44, 48), shape_jitter=(0, 2, 3), num_cases=20)
    shapes = {label.shape for label in labels_of(config)}
    assert len(shapes) > 1
    for shape in shapes:
        assert shape[0] == 40 and 42 <= shape[1] <= 46 and 45 <= shape[2] <= 51


# -- class balance follows the knobs -------------------------------------------------------


def test_bigger_radii_give_bigger_foreground_share():
    small = stats_of(synth.preset("lesions", radii=((2.0, 3.0),), num_cases=6))
    large = stats_of(synth.preset("lesions", radii=((5.0, 7.0),), num_cases=6))
    assert large.foreground_share > 4 * small.foreground_share


def test_more_objects_give_bigger_foreground_share():
    few = stats_of(synth.preset("lesions", objects_per_class=(1, 1), num_cases=6))
    many = stats_of(synth.preset("lesions", objects_per_class=(8, 8), num_cases=6))
    assert many.foreground_share > 4 * few.foreground_share


@pytest.mark.parametrize("num_classes", [1, 3, 7])
def test_every_class_is_present_in_every_case(num_classes):
    config = SynthConfig(num_cases=4, shape=(48, 48, 48), num_classes=num_classes, radii=((3.0, 6.0),))
    stats = stats_of(config)
    assert stats.case_share == (1.0,) * num_classes and stats.present_classes == 1.0
    assert len(stats.voxel_share) == num_classes + 1 and sum(stats.voxel_share) == pytest.approx(1.0)


def test_lesions_are_far_rarer_than_organs():
    organs, lesions = stats_of(PRESETS["organs"]), stats_of(PRESETS["lesions"])
    assert 0.05 <= organs.foreground_share <= 0.15  # the brief's target for a multi-organ-like set
    assert lesions.foreground_share < 0.01
    assert organs.foreground_share > 10 * lesions.foreground_share
    assert organs.smallest_class_share > 2 * lesions.smallest_class_share


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_descriptions_state_the_measured_shares(name):
    """The shares written in PRESET_DESCRIPTIONS are what the presets produce (to 0.01 percentage points)."""
    text = synth.PRESET_DESCRIPTIONS[name]
    stated_fg = float(re.search(r"foreground share ([\d.]+)%", text).group(1))
    stated_classes = [float(v) for v in re.findall(r"([\d.]+)%", re.search(r"\(classes ([^)]*)\)", text).group(1))]
    stats = stats_of(PRESETS[name])
    assert stated_fg == round(100 * stats.foreground_share, 2)
    assert stated_classes == [round(100 * v, 2) for v in stats.voxel_share[1:]]


def test_class_means_follow_contrast():
    config = synth.preset("organs", num_cases=2, contrast=3.0, noise_sd=0.5)
    image, label = make_case(config, 0)
    for c in range(config.num_classes + 1):
        assert image[label == c].mean() == pytest.approx(3.0 * c, abs=0.1)
        assert image[label == c].std() == pytest.approx(0.5, rel=0.1)
    flat = synth.preset("organs", distinct_intensity=False)
    assert {flat.mean_intensity(c) for c in range(1, 5)} == {flat.contrast}


# -- orientation-defined classes -----------------------------------------------------------


@pytest.mark.parametrize("width", [64, 65])
def test_orientation_classes_depend_only_on_side(width):
    config = synth.preset("orientation", shape=(48, 48, width), shape_jitter=0, num_cases=6)
    assert config.mean_intensity(1) == config.mean_intensity(2)
    assert config.labels == {"background": 0, "left": 1, "right": 2}
    for label in labels_of(config):
        _, _, x = np.nonzero(label == 1)
        _, _, x2 = np.nonzero(label == 2)
        assert x.size and x2.size
        assert x.max() < width // 2 and x2.min() >= (width + 1) // 2
        mirrored = np.flip(label, axis=2)
        assert np.array_equal(mirrored == 1, np.flip(label == 1, axis=2))
        _, _, xm = np.nonzero(mirrored == 1)
        _, _, xm2 = np.nonzero(mirrored == 2)
        assert xm.min() >= (width + 1) // 2 and xm2.max() < width // 2  # mirroring swaps the sides


def test_orientation_bands_are_mirror_symmetric_for_more_classes():
    config = SynthConfig(num_cases=4, shape=(32, 32, 61), num_classes=3, radii=((2.0, 4.0),), orientation=True)
    for label in labels_of(config):
        for c in (1, 2, 3):
            start, stop = config.band(c, 2, label.shape[2])
            assert not (label[..., :start] == c).any() and not (label[..., stop:] == c).any()
        assert (label == 2).any()
    for c in (1, 2, 3):
        start, stop = config.band(c, 2, 61)
        assert config.band(4 - c, 2, 61) == (61 - stop, 61 - start)


def test_orientation_along_another_axis():
    config = SynthConfig(num_cases=2, shape=(40, 24, 24), radii=((2.0, 3.0),), orientation=True, orientation_axis=0)
    for label in labels_of(config):
        assert np.nonzero(label == 1)[0].max() < 20 and np.nonzero(label == 2)[0].min() >= 20


# -- statistics ----------------------------------------------------------------------------


def test_class_statistics_by_hand():
    a = np.zeros((2, 2, 2), dtype=np.uint8)
    a[0, 0, 0] = 1
    b = np.zeros((2, 2, 4), dtype=np.int64)
    b[0, 0, :2] = 2
    stats = class_statistics([a, b], 2)
    assert stats.num_cases == 2 and stats.num_classes == 2
    assert stats.voxel_share == pytest.approx((7 / 8, 1 / 16, 1 / 16))  # class 2 is 1/8 of b, 0 of a
    assert stats.case_share == (0.5, 0.5) and stats.present_classes == 0.5
    assert stats.foreground_share == pytest.approx(1 / 8) and stats.smallest_class_share == pytest.approx(1 / 16)
    assert class_statistics(a, 1).voxel_share == (7 / 8, 1 / 8)  # one volume
    assert class_statistics(np.stack([a, a]), 1).num_cases == 2  # a stack


@pytest.mark.parametrize(
    "labels, num_classes",
    [
        ([np.full((2, 2, 2), 3)], 2),
        ([np.full((2, 2, 2), -1)], 2),
        ([], 1),
        ([np.zeros((2, 2))], 1),
        ([np.zeros((2, 2, 2))], 1),
    ],
)
def test_class_statistics_rejects_bad_input(labels, num_classes):
    with pytest.raises(ValueError):
        class_statistics(labels, num_classes)


# -- config validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"shape": (64, 64)}, "3 axes"),
        ({"shape": (64, 0, 64)}, "shape axis 1"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_cases": 0}, "num_cases"),
        ({"radii": ((5.0, 3.0),)}, "radii"),
        ({"radii": ()}, "radii"),
        ({"objects_per_class": (2, 1)}, "objects_per_class"),
        ({"noise_sd": -1.0}, "noise_sd"),
        ({"shapes": "cube"}, "shapes"),
        ({"shape": (16, 64, 64), "radii": ((8.0, 10.0),)}, "shape axis 0"),
        ({"shape_jitter": (0, 64, 0)}, "shape_jitter"),
        ({"orientation": True, "radii": ((2.0, 3.0), (3.0, 4.0))}, "orientation"),
        ({"orientation": True, "shape": (64, 64, 20), "radii": ((5.0, 6.0),)}, "band"),
        ({"class_names": ("a",)}, "class_names"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_knobs_raise(knobs, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig(**{"num_classes": 2, **knobs})


def test_config_round_trips_through_json():
    for config in [*PRESETS.values(), SMALL]:
        assert SynthConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert SynthConfig(radii=(2, 3)).radii == ((2.0, 3.0),)  # a single pair serves every class


# -- nnU-Net raw format --------------------------------------------------------------------


def test_written_dataset_matches_arrays_and_layout(tmp_path):
    import SimpleITK as sitk

    config = dataclasses.replace(SMALL, spacing=(2.0, 1.0, 0.5))
    path = generate_dataset(config, tmp_path, 7, "SynthSmall")
    assert path == tmp_path / "Dataset007_SynthSmall"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset007_SynthSmall"]  # no partial folder left
    assert sorted(p.name for p in (path / "imagesTr").iterdir()) == [f"case_00{i}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (path / "labelsTr").iterdir()) == [f"case_00{i}.nii.gz" for i in range(3)]
    meta = json.loads((path / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "class_1": 1, "class_2": 2}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz" and meta["channel_names"] == {"0": "zscore"}
    assert SynthConfig.from_dict(meta["pgps_synth"]["config"]) == config
    assert meta["pgps_synth"]["statistics"] == stats_of(config).to_dict()
    for i in range(3):
        image, label = make_case(config, i)
        read_image = sitk.ReadImage(str(path / "imagesTr" / f"case_00{i}_0000.nii.gz"))
        read_label = sitk.ReadImage(str(path / "labelsTr" / f"case_00{i}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(read_image), image)
        assert np.array_equal(sitk.GetArrayFromImage(read_label), label)
        for read in (read_image, read_label):
            assert read.GetSpacing()[::-1] == pytest.approx(config.spacing)  # SimpleITK orders x, y, z


def test_existing_dataset_needs_overwrite(tmp_path):
    path = generate_dataset(SMALL, tmp_path, 8, "A")
    with pytest.raises(ValueError, match="not empty"):
        generate_dataset(SMALL, tmp_path, 8, "A")
    with pytest.raises(ValueError, match="Dataset008_A"):
        generate_dataset(SMALL, tmp_path, 8, "B")  # a second name for the same id confuses nnU-Net
    (path / "stale.txt").write_text("x")
    assert generate_dataset(synth.preset("lesions", num_cases=2), tmp_path, 8, "A", overwrite=True) == path
    assert not (path / "stale.txt").exists() and len(list((path / "imagesTr").iterdir())) == 2
    (tmp_path / "empty" / "Dataset009_E").mkdir(parents=True)
    generate_dataset(SMALL, tmp_path / "empty", 9, "E")  # an empty target is fine


@pytest.mark.parametrize("dataset_id, name", [(0, "A"), (1000, "A"), (5, ""), (5, "a b"), (5, "_a"), (True, "A")])
def test_bad_dataset_id_or_name(tmp_path, dataset_id, name):
    with pytest.raises(ValueError):
        generate_dataset(SMALL, tmp_path, dataset_id, name)


def test_nnunet_integrity_check_passes(tmp_path):
    """nnU-Net's own verify_dataset_integrity accepts the dataset (run in a subprocess: nnU-Net reads its paths
    from the environment and verifies with a spawn pool)."""
    config = SynthConfig(num_cases=3, shape=(24, 24, 32), num_classes=2, radii=((3.0, 5.0),), orientation=True)
    path = generate_dataset(config, tmp_path / "raw", 501, "SynthCheck")
    env = dict(os.environ)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir(exist_ok=True)
        env[var] = str(tmp_path / ("raw" if var == "nnUNet_raw" else var))
    code = (
        "from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity\n"
        f"verify_dataset_integrity({str(path)!r}, num_processes=1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verify_dataset_integrity Done" in done.stdout
    assert "Error" not in done.stdout and "Warning" not in done.stdout


def test_import_stays_light():
    heavy = ("torch", "SimpleITK", "nibabel", "tqdm")
    code = f"import sys, pgps.data.synth; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- command line --------------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_configure_label_noise_and_describe_without_the_command_line(tmp_path):
    """What ``pgps synth`` does with its options, as library calls: unset options keep the preset's values, another
    class count drops the preset's class names, label sets only when asked; the summary is the written dataset's."""
    config = synth.configure("lesions", None, num_cases=3, shape=(24, 24, 24), seed=None, num_classes=None)
    assert config == synth.preset("lesions", num_cases=3, shape=(24, 24, 24))
    organs = synth.configure("organs", None, num_classes=2)
    assert organs.num_classes == 2 and len(organs.labels) == 3 and "liver" not in organs.labels
    assert synth.label_noise() is None
    noise = synth.label_noise(factors=[1.0, 0.5])
    assert (noise.count, noise.levels, noise.factors) == (2, (0.0, 1.0), (1.0, 0.5))
    assert synth.label_noise(count=4).count == 4
    path = synth.generate_dataset(config, tmp_path, 7, "Tiny", progress=False)
    stats = json.loads((path / "dataset.json").read_text())["pgps_synth"]["statistics"]
    lines = synth.describe("lesions", config, stats, noise, test_cases=2)
    assert lines[0].startswith("preset lesions: 3 cases, shape 24x24x24") and lines[-1].startswith("2 test cases")
    assert f"foreground share {stats['foreground_share']:.3%}" in lines[1]
    assert "2 noisy label sets per case" in lines[-2]


def test_cli_writes_dataset_and_summary(capsys, tmp_path):
    code, out, err = run(
        capsys, "synth", "--preset", "lesions", "--out", str(tmp_path), "--dataset-id", "501",
        "--cases", "3", "--shape", "32", "32", "32", "--shape-jitter", "2", "--seed", "3", "--no-progress",
    )  # fmt: skip
    assert code == 0 and err == ""
    lines = out.splitlines()
    path = Path(lines[0])
    assert path == tmp_path / "Dataset501_SynthLesions" and (path / "dataset.json").is_file()
    config = synth.preset("lesions", num_cases=3, shape=(32, 32, 32), shape_jitter=2, seed=3)
    share = stats_of(config).foreground_share
    assert f"foreground share {share:.3%}" in out
    assert re.search(r"^\s+1\s+lesion\s+[\d.]+%\s+3/3$", out, re.M)
    assert len(list((path / "imagesTr").iterdir())) == 3


def test_cli_overrides_and_json(capsys, tmp_path):
    code, out, _ = run(
        capsys, "synth", "--preset", "orientation", "--out", str(tmp_path), "--dataset-id", "12", "--name", "Mine",
        "--cases", "2", "--classes", "3", "--shape", "32", "32", "60", "--radius", "2", "4", "--objects", "2", "3",
        "--contrast", "1.5", "--noise", "0.5", "--shapes", "ellipsoid", "--spacing", "1", "1", "2", "--json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["path"] == str(tmp_path / "Dataset012_Mine")
    config = SynthConfig.from_dict(data["config"])
    assert config.num_classes == 3 and config.orientation and config.radii == ((2.0, 4.0),)
    assert config.objects_per_class == (2, 3) and config.spacing == (1.0, 1.0, 2.0) and config.shapes == "ellipsoid"
    assert list(config.labels) == ["background", "class_1", "class_2", "class_3"]
    assert data["statistics"]["case_share"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--shape", "64", "64"], "3 axes"),
        (["--shape", "64", "-1", "64"], "shape axis 1"),
        (["--classes", "0"], "num_classes"),
        (["--dataset-id", "0"], "1..999"),
        (["--dataset-id", "1000"], "1..999"),
        (["--radius", "30", "40"], "do not fit"),
        (["--orientation"], "orientation"),  # organs has four radius ranges
    ],
)
def test_cli_errors_exit_2(capsys, tmp_path, extra, message):
    argv = ["synth", "--out", str(tmp_path), "--dataset-id", "5", "--cases", "1", *extra]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("pgps synth: error:") and message in err


def test_cli_refuses_non_empty_target_without_overwrite(capsys, tmp_path):
    argv = ["synth", "--preset", "lesions", "--out", str(tmp_path), "--dataset-id", "5", "--cases", "1"]
    assert run(capsys, *argv)[0] == 0
    code, _, err = run(capsys, *argv)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert run(capsys, *argv, "--overwrite")[0] == 0


def test_cli_argparse_errors_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path)])  # no --dataset-id
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path), "--dataset-id", "5", "--preset", "nope"])
    assert exc.value.code == 2


# -- one writer per dataset folder (pgps.io.writer_lock) ---------------------------------------------------------
HOLD_WRITER = """
import sys, time
from pgps.io import writer_lock
with writer_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def synth_command(out, *extra):
    return [sys.executable, "-m", "pgps", "synth", "--preset", "lesions", "--cases", "4", "--shape", "24", "24",
            "24", "--out", str(out), "--dataset-id", "7", "--name", "Race", "--no-progress", *extra]  # fmt: skip


def test_a_second_writer_of_a_dataset_folder_fails_naming_the_first_and_changes_nothing(tmp_path):
    assert subprocess.run(synth_command(tmp_path), capture_output=True).returncode == 0
    target = tmp_path / "Dataset007_Race"
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run(synth_command(tmp_path, "--overwrite"), capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"pgps synth: error: {target} is being written by host {os.uname().nodename}, pid {holder.pid}, since "
        f"{json.loads((tmp_path / '.Dataset007_Race.lock').read_text())['started']}; wait until it ends"]  # fmt: skip
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert not list(tmp_path.glob(".*partial*"))


def test_concurrent_writers_of_one_dataset_never_leave_it_empty(tmp_path):
    """Two `pgps synth --overwrite` into one folder at once, three rounds: each either writes the whole dataset or
    fails naming the other; the folder always holds a whole dataset afterwards."""
    for _ in range(3):
        procs = [subprocess.Popen(synth_command(tmp_path, "--overwrite"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        assert any(code == 0 for code, _ in results), results
        for code, err in results:
            assert code == 0 or (code == 2 and "is being written by host" in err), err
        target = tmp_path / "Dataset007_Race"
        assert (target / "dataset.json").is_file() and len(list((target / "labelsTr").iterdir())) == 4
        assert not list(tmp_path.glob(".*partial*"))
