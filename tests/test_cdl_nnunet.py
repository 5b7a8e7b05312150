"""CDL-UNet on nnU-Net (CPU, tiny dataset): the data-curriculum trainers draw only the current phase's cases
(measured from the batches the loader returned), restart the learning rate per phase, resume in the same
phase; ``pgps difficulty`` on raw label folders; ``pgps predict`` equals nnUNetPredictor with adaptation off."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from tests import nnunet_env as nn

pytestmark = pytest.mark.nnunet

TRAIN = [f"case_{i:03d}" for i in range(5)]  # fold 0 of our own splits_final.json; case_005 validates
DS = {"case_000": 0.97, "case_001": 0.95, "case_002": 0.86, "case_003": 0.84, "case_004": 0.40, "case_005": 0.99}
EASY, HARD = {"case_000", "case_001"}, {"case_002", "case_003"}  # case_004 erroneous, case_005 not in training


@pytest.fixture(scope="module")
def tiny(tiny_nnunet, tmp_path_factory):
    """A copy of the session's tiny dataset (raw and preprocessed) with our own split and difficulty.csv."""
    import shutil

    root = tmp_path_factory.mktemp("cdl")
    for part in ("raw", "preprocessed"):
        shutil.copytree(tiny_nnunet / part, root / part)
    pre = root / "preprocessed" / nn.DATASET
    (pre / "splits_final.json").write_text(json.dumps([{"train": TRAIN, "val": ["case_005"]}]))
    lines = ["case,ds"] + [f"{c},{v}" for c, v in DS.items()]
    (pre / "difficulty.csv").write_text("\n".join(lines) + "\n")
    return root


def run(root, trainer, results, keys_file, stop_after=-1, resume=False, **env):
    """nnU-Net's run_training with every batch's keys recorded by the harness (not by the trainer); no progress.png
    (matplotlib, 0.6 s of CPU an epoch; nothing here reads it)."""
    args = (str(stop_after), str(keys_file), "resume" if resume else "new")
    return nn.train_only(root, trainer, *args, results=results, **{"PGPS_PROGRESS_EVERY": "0", **env})


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """``trained(trainer) -> (results folder, keys file)`` of a whole 4-epoch run with PGPS_SEED=3, run once."""
    done: dict[str, tuple] = {}

    def get(trainer):
        if trainer not in done:
            folder = tmp_path_factory.mktemp(trainer)
            check(run(tiny, trainer, folder / "results", folder / "keys.jsonl", PGPS_SEED="3"))
            done[trainer] = folder / "results", folder / "keys.jsonl"
        return done[trainer]

    return get


def check(proc, code=0):
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]


def drawn_keys(path):
    epochs: dict[int, list[str]] = {}
    for line in path.read_text().splitlines():
        epoch, keys = json.loads(line)
        epochs.setdefault(epoch, []).extend(keys)
    return epochs


def log_rows(results, trainer):
    with open(nn.fold_folder(results, trainer) / "pgps_data_curriculum.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "trainer",
    [
        "nnUNetTrainer_PGPS_Performance_DataCurriculumRestart",  # Split-Crop, batch 16 -> 2, LR restart
        "nnUNetTrainer_PGPS_RPSS_DataCurriculum",  # nnU-Net's own loader, one per randomly drawn stage
    ],
)
def test_loader_draws_only_the_phase_cases(trained, trainer):
    results, keys_file = trained(trainer)
    drawn = drawn_keys(keys_file)
    # easy_then_hard over 4 epochs: round(0.4 * 4) = 2 easy epochs, then easy + hard; never erroneous or validation
    assert sorted(drawn) == [0, 1, 2, 3]
    for epoch, keys in drawn.items():
        allowed = EASY if epoch < 2 else EASY | HARD
        assert set(keys) <= allowed, (epoch, keys)
    assert set(drawn[2] + drawn[3]) & HARD  # the hard course really draws hard cases
    rows = log_rows(results, trainer)
    assert [int(r["phase"]) for r in rows] == [0, 0, 1, 1]
    assert [int(r["cases_allowed"]) for r in rows] == [2, 2, 4, 4]
    assert all(int(r["keys_outside_phase"]) == 0 for r in rows)
    assert [sorted(r["drawn"].split(";")) for r in rows] == [sorted(set(drawn[e])) for e in range(4)]
    lrs = [float(r["lr"]) for r in rows]
    if trainer.endswith("Restart"):  # poly LR restarted at the phase switch: 0.01 (1 - t/2)^0.9, t = 0, 1, 0, 1
        assert lrs == pytest.approx([0.01, 0.01 * 0.5**0.9] * 2)
    else:  # nnU-Net's poly LR over the 4 epochs
        assert lrs == pytest.approx([0.01 * (1 - e / 4) ** 0.9 for e in range(4)])


def test_resume_keeps_the_phase(tiny, trained, tmp_path):
    trainer = "nnUNetTrainer_PGPS_Performance_DataCurriculumRestart"
    whole, split = trained(trainer)[0], tmp_path / "split"
    # stop right after epoch 1, the last easy epoch, and resume: the resumed run starts in the hard course
    check(run(tiny, trainer, split, tmp_path / "split.jsonl", stop_after=1, PGPS_SEED="3"), code=17)
    assert len(log_rows(split, trainer)) == 2
    resumed = run(tiny, trainer, split, tmp_path / "split.jsonl", resume=True, PGPS_SEED="3")
    check(resumed)
    assert "PGPS data curriculum: resuming at epoch 2" in resumed.stdout
    a, b = log_rows(whole, trainer), log_rows(split, trainer)
    assert [(r["epoch"], r["phase"], r["cases_allowed"], r["lr"]) for r in a] == [
        (r["epoch"], r["phase"], r["cases_allowed"], r["lr"]) for r in b
    ]
    measured = drawn_keys(tmp_path / "split.jsonl")
    assert all(set(measured[e]) <= EASY | HARD for e in (2, 3)) and set(measured[2] + measured[3]) & HARD
    # with in-process loading and the RNG states restored, the resumed run draws the same cases
    assert [r["drawn"] for r in a] == [r["drawn"] for r in b]
    # a changed difficulty.csv is refused on resume
    changed = tmp_path / "changed.csv"
    changed.write_text("case,ds\n" + "".join(f"{c},{0.99 if c == 'case_002' else v}\n" for c, v in DS.items()))
    refused = run(tiny, trainer, split, tmp_path / "x.jsonl", resume=True, PGPS_DIFFICULTY=str(changed), PGPS_SEED="3")
    assert refused.returncode != 0 and "different data curriculum" in refused.stderr, refused.stderr[-2000:]


# Start each trainer up to its first batch with the given settings and print the error (one process for all).
FAILURES = """
import json, os, sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
for name, trainer_name, settings in json.loads(sys.argv[1]):
    for variable in ("PGPS_DIFFICULTY", "PGPS_INIT_WEIGHTS"):
        os.environ.pop(variable, None)
    os.environ.update(settings)
    trainer = get_trainer_from_args("1", "3d_fullres", 0, trainer_name, device=torch.device("cpu"))
    try:
        trainer.on_train_start()
        print(name, "STARTED")
    except ValueError as exc:
        print(name, "ERROR", str(exc).splitlines()[0])
"""


@pytest.fixture(scope="module")
def refusals(tiny, tmp_path_factory):
    """``{name: line}``: what each trainer start of the two tests below printed (STARTED or ERROR and the message's
    first line), all started in one process: a bad or missing difficulty.csv, a bad or missing initial checkpoint."""
    import torch

    work = tmp_path_factory.mktemp("refusals")
    partial = work / "partial.csv"
    partial.write_text("case,ds\ncase_000,0.95\ncase_001,0.95\n")
    one_easy = work / "one_easy.csv"  # Split-Crop needs two cases in every phase
    one_easy.write_text("case,ds\n" + "".join(f"{c},{0.85 if c == 'case_001' else v}\n" for c, v in DS.items()))
    other = work / "other.pth"
    torch.save({"network_weights": {"weight": torch.zeros(1)}}, other)
    difficulty = {"PGPS_EPOCHS": "4"}
    continued = {"PGPS_EPOCHS": "2"}
    runs = [
        ("partial", "nnUNetTrainer_PGPS_CPS_DataCurriculum", {**difficulty, "PGPS_DIFFICULTY": str(partial)}),
        ("none", "nnUNetTrainer_PGPS_CPS_DataCurriculum", {**difficulty, "PGPS_DIFFICULTY": str(work / "none.csv")}),
        ("one_easy", "nnUNetTrainer_PGPS_Performance_DataCurriculum", {**difficulty, "PGPS_DIFFICULTY": str(one_easy)}),
        # nnU-Net's loader draws with replacement
        ("one_easy_loader", "nnUNetTrainer_PGPS_Efficiency_DataCurriculum",
         {**difficulty, "PGPS_DIFFICULTY": str(one_easy)}),
        ("other_network", "nnUNetTrainer_PGPS_Performance_DataCurriculum",
         {**continued, "PGPS_INIT_WEIGHTS": str(other)}),
        ("no_checkpoint", "nnUNetTrainer_PGPS_Performance_DataCurriculum",
         {**continued, "PGPS_INIT_WEIGHTS": str(work / "no.pth")}),
    ]  # fmt: skip
    env = nn.env(tiny, work / "results", nnUNet_n_proc_DA="0")
    proc = subprocess.run([sys.executable, "-c", FAILURES, json.dumps(runs)], env=env, capture_output=True, text=True)
    check(proc)
    found = {}
    for line in proc.stdout.splitlines():
        name, _, rest = line.partition(" ")
        if rest.startswith(("ERROR", "STARTED")):
            found[name] = rest
    assert list(found) == [name for name, _, _ in runs], proc.stdout[-3000:]
    return found


def test_missing_or_incomplete_difficulty_fails_before_training(refusals):
    assert "has no difficulty for 3 training case(s) of fold 0: case_002, case_003, case_004" in refusals["partial"]
    assert "none.csv (from $PGPS_DIFFICULTY) does not exist" in refusals["none"]
    assert "data curriculum phase 0 (epochs 0-1, 1 cases) with PGPS stage 0" in refusals["one_easy"]
    assert refusals["one_easy_loader"] == "STARTED"


def test_difficulty_cli_on_raw_label_folders(tiny, tmp_path, capsys):
    import SimpleITK as sitk

    from pgps.cli import main

    labels = tiny / "raw" / nn.DATASET / "labelsTr"
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    for f in sorted(labels.glob("*.nii.gz")):
        image = sitk.ReadImage(str(f))
        array = sitk.GetArrayFromImage(image)
        array[array == 2] = 0  # the second set misses class 2 in every case
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(noisy / f.name))
    out = tmp_path / "out" / "difficulty.csv"
    code = main(["difficulty", "--labels", str(labels), str(noisy), str(labels), "--out", str(out), "--no-progress"])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["case"] for r in rows] == [f"case_{i:03d}" for i in range(nn.NUM_CASES)]
    # sets: labelsTr, a copy without class 2, labelsTr again (same folder names: set1..set3). Per case
    # Dice(set1, set3) = 1 and Dice(set1, set2) = (1 + 0) / 2 = 0.5 (class 1 equal, class 2 missing), so
    # RS = (0.75, 0.5, 0.75): L_real = set1 (the tie goes to the first); DS = (1 + 0.5) / 2 = 0.75: erroneous
    for row in rows:
        assert (row["real"], row["group"]) == ("set1", "erroneous")
        assert [float(row[k]) for k in ("rs_set1", "rs_set2", "rs_set3", "ds")] == [0.75, 0.5, 0.75, 0.75]
    # the same as a library call (what the command runs), with its summary
    from pgps.nnunet.datasets.labelsets import score_difficulty

    run = score_difficulty([labels, noisy, labels], tmp_path / "lib.csv", provided=2, progress=False)
    assert (tmp_path / "lib.csv").read_text() == out.read_text()
    assert run.summary()[0] == f"{tmp_path / 'lib.csv'}: {nn.NUM_CASES} cases, mean DS 0.7500; 0 easy, 0 hard, " \
        f"{nn.NUM_CASES} erroneous (easy: DS > 0.9, erroneous: DS <= 0.8)"  # fmt: skip
    # a spacing mismatch names the case and both files; nothing is written
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in sorted(labels.glob("*.nii.gz")):
        image = sitk.ReadImage(str(f))
        if f.name == "case_003.nii.gz":
            image.SetSpacing((1.0, 1.0, 2.5))
        sitk.WriteImage(image, str(bad / f.name))
    target = tmp_path / "bad.csv"
    assert main(["difficulty", "--labels", str(labels), str(bad), "--out", str(target), "--no-progress"]) == 2
    assert not target.exists() and not list(tmp_path.glob(".pgps-difficulty-*"))
    assert "case case_003: " in capsys.readouterr().err  # names the case and both files
    # a shape mismatch too
    image = sitk.ReadImage(str(bad / "case_003.nii.gz"))
    sitk.WriteImage(image[:, :, :20], str(bad / "case_003.nii.gz"))
    assert main(["difficulty", "--labels", str(labels), str(bad), "--out", str(target), "--no-progress"]) == 2
    assert "has shape 20x24x24" in capsys.readouterr().err and not target.exists()


def test_predict_without_adaptation_equals_nnunet_predictor(tiny, trained, tmp_path):
    """--no-adaptive is nnUNetPredictor; the adaptations run from the command line (sequential and with workers),
    and small-component removal is applied to exactly what nnU-Net predicted."""
    import shutil

    import SimpleITK as sitk

    from pgps.metrics import label_dice

    trainer = "nnUNetTrainer_PGPS_RPSS_DataCurriculum"
    results = trained(trainer)[0]
    model = nn.fold_folder(results, trainer).parent
    raw = tiny / "raw" / nn.DATASET
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    cases = ["case_000", "case_001"]
    for case in cases:
        shutil.copy(raw / "imagesTr" / f"{case}_0000.nii.gz", images)
        shutil.copy(raw / "labelsTr" / f"{case}.nii.gz", labels)
    shutil.copy(raw / "dataset.json", tmp_path)  # the labels' dataset.json, one folder up
    code = f"""
import os, torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from pgps.cli import main
from pgps.nnunet.inference.predict import Adaptation, make_predictor, predict_folder
plain = nnUNetPredictor(tile_step_size=0.5, use_mirroring=True, perform_everything_on_device=False,
                        device=torch.device("cpu"), allow_tqdm=False)
plain.initialize_from_trained_model_folder({str(model)!r}, (0,))
os.makedirs({str(tmp_path / "plain")!r})  # the sequential path writes into an existing folder
plain.predict_from_files_sequential({str(images)!r}, {str(tmp_path / "plain")!r})
del os.environ["nnUNet_extTrainer"]  # stock nnU-Net needed it; pgps finds its trainers itself
ours = make_predictor({str(model)!r}, (0,), adaptation=Adaptation.off())
report = predict_folder(ours, {str(images)!r}, {str(tmp_path / "ours")!r})
print("REPORT", [(r["case"], r["windows_planned"], r["windows_evaluated"]) for r in report])
# a third label set predicted by the model: pgps difficulty --predict-with
code = main(["difficulty", "--labels", {str(labels)!r}, {str(labels)!r}, "--predict-with", {str(model)!r},
             "--folds", "0", "--images", {str(images)!r}, "--out", {str(tmp_path / "difficulty.csv")!r},
             "--no-progress"])
print("DIFFICULTY", code)
# pgps predict from the command line with the adaptations on: every default (nnU-Net's sequential path), and
# without centre-first skipping through nnU-Net's worker processes
for name, extra in (("adaptive", []), ("removal", ["--no-centre-first", "--processes", "1"])):
    print(name.upper(), main(["predict", "-i", {str(images)!r}, "-o", os.path.join({str(tmp_path)!r}, name),
                              "-m", {str(model)!r}, "-f", "0", *extra]))
"""
    proc = subprocess.run([sys.executable, "-c", code], env=nn.env(tiny, results), capture_output=True, text=True)
    check(proc)
    for case in cases:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain" / f"{case}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ours" / f"{case}.nii.gz")))
        assert np.array_equal(a, b), case
    # 24^3 volumes, 16^3 patch, step 0.5: 2 windows per axis, all evaluated
    assert "('case_000', 8, 8)" in proc.stdout and "DIFFICULTY 0" in proc.stdout
    with open(tmp_path / "ours" / "pgps_predict_report.csv") as f:
        assert [int(r["windows_skipped"]) for r in csv.DictReader(f)] == [0, 0]
    # the adaptations from the command line: 8 windows are below the threshold (fine step); without skipping,
    # the output is nnU-Net's with our small-component removal applied to it
    assert "ADAPTIVE 0" in proc.stdout and "REMOVAL 0" in proc.stdout
    from pgps.nnunet.inference.predict import remove_small_components

    for name in ("adaptive", "removal"):
        with open(tmp_path / name / "pgps_predict_report.csv") as f:
            report = {r["case"]: r for r in csv.DictReader(f)}
        assert sorted(report) == cases
        for case, row in report.items():
            assert float(row["step"]) == 0.5 and int(row["windows_planned"]) == 8
            assert int(row["windows_evaluated"]) + int(row["windows_skipped"]) == 8
            if name == "removal":
                plain = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain" / f"{case}.nii.gz")))
                cleaned, removed = remove_small_components(plain)
                ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name / f"{case}.nii.gz")))
                assert np.array_equal(ours, cleaned) and int(row["components_removed"]) == removed, case
    # sets: the labels twice (set1, set2) and the model's prediction; Dice(set1, set2) = 1, so L_real = set1 and
    # DS = (1 + 1) / 2 = 1; the prediction's Dice with the labels is that of the exported segmentation
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "difficulty.csv"))}
    for case in cases:
        row = rows[case]
        assert (row["real"], float(row["ds"]), row["group"]) == ("set1", 1.0, "easy")
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(labels / f"{case}.nii.gz")))
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ours" / f"{case}.nii.gz")))
        assert float(row["dice_set1_prediction"]) == pytest.approx(label_dice(truth, predicted), abs=1e-6)


def test_continuations_start_from_the_same_easy_model_with_a_new_learning_rate(tiny, trained, refusals, tmp_path):
    """The CDL experiment's two arms (pgps.experiments.cdl): one easy model's checkpoint_final.pth continued on easy +
    hard cases and on easy cases only; each loads every weight of that file (head included) and restarts the LR."""
    import hashlib

    import torch

    from pgps.nnunet.data_curriculum import INIT_FILE, weights_sha256
    from pgps.report import cdl as report

    assert report.INIT_FILE == INIT_FILE  # the report reads the record without importing torch
    weight = torch.randn(8, 4, 1, 1, 1)  # a 1x1x1 convolution in channels-last: not viewable as bytes as it is
    assert weights_sha256({"w": weight.to(memory_format=torch.channels_last_3d)}) == weights_sha256({"w": weight})
    assert weights_sha256({"w": weight}) != weights_sha256({"w": weight * 1.001})

    source_results = trained("nnUNetTrainer_PGPS_Performance_DataCurriculumRestart")[0]
    source = nn.fold_folder(source_results, "nnUNetTrainer_PGPS_Performance_DataCurriculumRestart")
    checkpoint = source / "checkpoint_final.pth"
    file_sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    assert any(".seg_layers." in k for k in saved)  # the head, which nnU-Net's -pretrained_weights leaves out
    trainer = "nnUNetTrainer_PGPS_Performance_DataCurriculum"
    arms = {"hard": {"PGPS_DATA_PACING": "none"}, "easy": {"PGPS_DATA_PACING_PARAMS": '{"easy_fraction": 1.0}'}}
    records = {}
    for arm, pacing in arms.items():
        check(run(tiny, trainer, tmp_path / arm, tmp_path / f"{arm}.jsonl", PGPS_SEED="3", PGPS_EPOCHS="2",
                  PGPS_INIT_WEIGHTS=str(checkpoint), **pacing))  # fmt: skip
        records[arm] = json.loads((nn.fold_folder(tmp_path / arm, trainer) / INIT_FILE).read_text())
        assert records[arm]["sha256"] == file_sha
        assert records[arm]["weights_sha256"] == weights_sha256(saved)  # the network held the file's weights
        assert records[arm]["source_epochs"] == 4
        lrs = [float(r["lr"]) for r in log_rows(tmp_path / arm, trainer)]
        assert lrs == pytest.approx([0.01, 0.01 * 0.5**0.9])  # a new poly schedule over the continuation's 2 epochs
        drawn = drawn_keys(tmp_path / f"{arm}.jsonl")
        allowed = EASY | HARD if arm == "hard" else EASY
        assert all(set(keys) <= allowed for keys in drawn.values())
    assert set(drawn_keys(tmp_path / "hard.jsonl")[0] + drawn_keys(tmp_path / "hard.jsonl")[1]) & HARD
    source_lrs = [
        float(r["lr"]) for r in log_rows(source_results, "nnUNetTrainer_PGPS_Performance_DataCurriculumRestart")
    ]
    assert source_lrs[-1] < 0.01  # the source run ended lower: the continuation's 0.01 is a restart
    # a fresh run records nothing; a checkpoint of another network is refused by name
    assert not (
        nn.fold_folder(source_results, "nnUNetTrainer_PGPS_Performance_DataCurriculumRestart") / INIT_FILE
    ).exists()
    line = refusals["other_network"]
    assert line.startswith("ERROR") and "does not match this trainer's (3d_fullres)" in line, line
    assert "no.pth does not exist" in refusals["no_checkpoint"]
