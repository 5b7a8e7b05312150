"""A miniature of the synthetic study through the real workflow (``snakemake study``): 2 imbalance levels x
CPS / PGPS-Efficiency / PGPS-Performance x 2 lengths, trained by nnU-Net on the CPU and scored on held-out
cases. Run twice with the same seeds and ``nnUNet_n_proc_DA=0``, it must give the same numbers (no number is
written into this test: the second run is compared with the first). Also: a run trained after others in one
``pgps train-evaluate`` process equals the same run alone, and the in-process evaluation equals nnU-Net's
own validation."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pgps.experiments import study
from pgps.nnunet import ext_trainer_path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

pytestmark = pytest.mark.nnunet

MINI = {
    "foreground_shares": [0.05, 0.005],
    "dataset_id": 680,
    "shape": [32, 32, 32],
    "cases": 8,
    "train_cases": 5,
    "patch_size": [16, 16, 16],
    "features": [4, 8, 16, 32],  # step 8: 4 stages from 8^3 to 16^3
    "epochs": 4,
    "iterations_per_epoch": 2,
    "lengths": [50, 100],
    "seeds": [3],
}
CONFIG = {
    "schedules": {"datasets": {"tiny": {"patch_size": [16, 16, 16], "steps": [8, 8, 8], "batch_size": 2}}},
    "demo": {"enabled": False},
    "study": MINI,
}
COMPARED = ["dice", "iterated_voxels", "mean_fg_voxel_share", "epochs", "first_batch_size"]
"""results.csv columns that must repeat exactly (times are measured and move)."""


def run_study(workdir: Path) -> subprocess.CompletedProcess:
    configfile = workdir / "config.test.yaml"
    configfile.write_text(json.dumps(CONFIG))
    command = [SNAKEMAKE, "study", "-s", ROOT / "Snakefile", "-d", workdir, "--cores", "2", "--configfile", configfile]
    proc = subprocess.run(command, capture_output=True, text=True)
    logs = "\n".join(p.read_text()[-3000:] for p in (workdir / "results" / "logs" / "study").glob("*.log"))
    assert proc.returncode == 0, proc.stderr[-4000:] + logs
    return proc


def collected(workdir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = workdir / "results" / "study" / "collected"
    return pd.read_csv(folder / "results.csv"), pd.read_csv(folder / "epochs.csv")


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """The miniature study run twice in one folder: the second time only the training (and what follows it)
    is redone, from the same synthetic data and preprocessing. Returns (folder, first results, first epochs)."""
    workdir = tmp_path_factory.mktemp("study")
    run_study(workdir)
    first = collected(workdir)
    shutil.copytree(workdir / "paper_figures" / "study", workdir / "first_render")
    shutil.rmtree(workdir / "results" / "study" / "nnunet" / "results")
    shutil.rmtree(workdir / "results" / "study" / "collected")
    shutil.rmtree(workdir / "paper_figures" / "study")
    run_study(workdir)
    return workdir, *first


def test_miniature_study_renders_every_output(mini):
    workdir, results, _ = mini
    out = workdir / "paper_figures" / "study"
    for name in study.study_outputs():
        assert (out / name).stat().st_size > 0, name
    assert len(results) == 2 * 3 * 2 and results["status"].eq("complete").all()
    assert results["dice"].between(0, 1).all()
    text = (out / "results.md").read_text()
    assert text.count("**Claim ") == 5 and f"{len(results)} of {len(results)} runs finished" in text
    # every run trained the epochs and iterations of its length, on the training split only
    for r in results.itertuples():
        assert r.epochs == MINI["epochs"] and r.iterations_per_epoch == study.iterations(MINI, r.length)
    split = json.loads(
        next((workdir / "results" / "study" / "nnunet" / "preprocessed").glob("*/splits_final.json")).read_text()
    )
    assert len(split) == 1 and len(split[0]["train"]) == MINI["train_cases"]
    # each dataset is the one its replicate's seed draws (the training seed is the same: PGPS_SEED)
    import SimpleITK as sitk

    from pgps.data import synth

    for replicate in study.replicates(MINI):
        config = synth.configure(
            "imbalance", replicate.level.share, num_cases=MINI["cases"], shape=tuple(MINI["shape"]), seed=replicate.seed
        )
        path = workdir / "results" / "study" / "nnunet" / "raw" / replicate.folder / "labelsTr" / "case_000.nii.gz"
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert np.array_equal(written, synth.make_label(config, 0)), replicate
        assert not np.array_equal(written, synth.make_label(dataclasses.replace(config, seed=replicate.seed + 1), 0))
    summary = json.loads(Path(results["fold_dir"].iloc[0], "validation", "summary.json").read_text())
    assert sorted(Path(c["reference_file"]).name for c in summary["metric_per_case"]) == [
        f"{case}.nii.gz" for case in split[0]["val"]
    ]


def test_same_seeds_give_the_same_numbers(mini):
    workdir, first, first_epochs = mini
    second, second_epochs = collected(workdir)
    key = ["dataset", "mode", "length", "seed"]
    a, b = first.set_index(key).sort_index(), second.set_index(key).sort_index()
    pd.testing.assert_frame_equal(a[COMPARED], b[COMPARED])
    epoch_key = [*key, "epoch"]
    columns = ["train_loss", "val_loss", "fg_voxel_share", "iterated_voxels", "pseudo_dice"]
    pd.testing.assert_frame_equal(
        first_epochs.set_index(epoch_key).sort_index()[columns],
        second_epochs.set_index(epoch_key).sort_index()[columns],
    )
    for name in (
        "study_tests.csv",
        "study_comparisons.csv",
        "study_spearman.csv",
        "study_claims.csv",
        "study_dice.csv",
    ):
        assert (workdir / "first_render" / "tables" / name).read_text() == (
            workdir / "paper_figures" / "study" / "tables" / name
        ).read_text(), name


def _env(workdir: Path, results_root: Path, length: int) -> dict:
    nnunet = workdir / "results" / "study" / "nnunet"
    return {
        **os.environ, "nnUNet_raw": str(nnunet / "raw"), "nnUNet_preprocessed": str(nnunet / "preprocessed"),
        "nnUNet_results": str(results_root), "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1",
        "PGPS_EPOCHS": str(MINI["epochs"]), "PGPS_ITERATIONS_PER_EPOCH": str(study.iterations(MINI, length)),
        "PGPS_VAL_ITERATIONS": "1", "PGPS_SEED": str(MINI["seeds"][0]), "PGPS_PROGRESS_EVERY": "0",
        "OMP_NUM_THREADS": "1",
        "nnUNet_extTrainer": ext_trainer_path(),
    }  # fmt: skip


AFTER_THE_STUDY = """
import os, sys
from pgps.cli import main
alone, evaluate, validation = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3]
assert main(["train-evaluate", *alone]) == 0  # the first run of this process
assert main(["train-evaluate", *evaluate, "--evaluate-only", "--mirroring", "--no-pairs"]) == 0
os.rename(validation, validation + "_no_pairs")  # the first evaluation's output, apart from the second's
assert main(["train-evaluate", *evaluate, "--evaluate-only", "--mirroring"]) == 0
"""


def _cps_run(results: pd.DataFrame) -> tuple[Path, list[str]]:
    """The fold folder and the ``train-evaluate`` arguments of the study's CPS run at the longest length."""
    row = results[(results["mode"] == "cps") & (results["length"] == MINI["lengths"][-1])].iloc[0]
    level = next(r for r in study.replicates(MINI) if r.level.name == row["dataset"] and r.seed == row["seed"])
    return Path(row["fold_dir"]), [str(level.dataset_id), "3d_study", "0", "-tr", row["trainer"]]


@pytest.fixture(scope="module")
def after_study(mini, tmp_path_factory):
    """One ``pgps train-evaluate`` process (the import of nnU-Net is most of one) under a results root of its own:
    first PGPS-Performance of the second dataset at the longest length trained and scored alone, then a copy of the
    CPS run at that length scored again (--evaluate-only) with mirroring, without and with tile pairs. Returns
    (root, Performance's fold folder, the CPS copy's fold folder)."""
    workdir, results, _ = mini
    root = tmp_path_factory.mktemp("after_study")
    replicate = study.replicates(MINI)[1]
    alone = [str(replicate.dataset_id), "3d_study", "0", "-tr", study.trainer("performance")]
    source, evaluate = _cps_run(results)
    copy = root / source.relative_to(source.parents[2])
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("validation"))
    command = [sys.executable, "-c", AFTER_THE_STUDY, " ".join(alone), " ".join(evaluate), str(copy / "validation")]
    proc = subprocess.run(command, capture_output=True, text=True, env=_env(workdir, root, MINI["lengths"][-1]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    performance = next(p.parent for p in root.rglob("pgps_telemetry.csv") if study.trainer("performance") in str(p))
    return root, performance, copy


def test_a_run_does_not_depend_on_the_runs_before_it_in_the_process(mini, after_study):
    """The study trains CPS, Efficiency and Performance in one process; Performance alone gives the same run."""
    _, results, _ = mini
    replicate = study.replicates(MINI)[1]
    length = MINI["lengths"][-1]
    alone = after_study[1]
    row = results[
        (results["dataset"] == replicate.level.name)
        & (results["mode"] == "performance")
        & (results["length"] == length)
    ]
    in_study = Path(row["fold_dir"].iloc[0])
    assert alone.relative_to(after_study[0]) == in_study.relative_to(in_study.parents[2])  # the same run
    columns = ["train_loss", "fg_voxel_share", "iterated_voxels", "batch_size"]
    pd.testing.assert_frame_equal(
        pd.read_csv(alone / "pgps_telemetry.csv")[columns], pd.read_csv(in_study / "pgps_telemetry.csv")[columns]
    )
    dice = [
        json.loads((f / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"]
        for f in (alone, in_study)
    ]
    assert dice[0] == dice[1]


def test_in_process_evaluation_equals_nnunets_validation(mini, after_study, tmp_path):
    """nnUNetv2_train --val (nnU-Net's perform_actual_validation: mirroring, worker pools) and pgps's in-process
    evaluation with mirroring and without tile pairs score the same checkpoint identically, case by case; with
    tile pairs (the default on the CPU) the Dice agree to float rounding of the logits. pgps's evaluations ran in
    :func:`after_study`."""
    workdir, results, _ = mini
    source, run = _cps_run(results)
    target = tmp_path / source.relative_to(source.parents[2])
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("validation"))
    command = [Path(sys.executable).parent / "nnUNetv2_train", *run, "--val", "-device", "cpu"]
    proc = subprocess.run(command, capture_output=True, text=True, env=_env(workdir, tmp_path, MINI["lengths"][-1]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ours = after_study[2]
    scores = {}
    for name, folder in (("nnunet", target / "validation"), ("ours", ours / "validation_no_pairs"),
                         ("pairs", ours / "validation")):  # fmt: skip
        summary = json.loads((folder / "summary.json").read_text())
        scores[name] = {Path(c["prediction_file"]).name: c["metrics"]["1"] for c in summary["metric_per_case"]}
    assert scores["ours"] == scores["nnunet"]
    assert scores["pairs"].keys() == scores["nnunet"].keys()
    for case, metrics in scores["nnunet"].items():
        assert abs(scores["pairs"][case]["TP"] - metrics["TP"]) <= 2, case  # a voxel or two at a decision tie
