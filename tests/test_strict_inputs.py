"""Strict inputs (issue 13): no silent overwrite, no silent acceptance, every error names its file,
column or argument (one line on stderr, exit 2), and ``pgps gpu-slot`` keeps its GPU until its command
has exited. Each test reproduces one failure of the issue's list."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pgps.cli import main
from tests import nnunet_env as nn
from tests.report_fixtures import write_run
from tests.test_convert import fake_msd, fake_nnunet, label_volume, nifti

ROOT = Path(__file__).resolve().parents[1]
PLANS = Path(__file__).parent / "data" / "nnUNetPlans_3d.json"
EXPLICIT = ["--patch-size", "64", "64", "64", "--steps", "16", "16", "16", "--batch-size", "2"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``pgps ARGV`` in-process: (exit status, stdout, stderr); usage errors exit through argparse."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *names: str) -> str:
    """The ``pgps ...: error: ...`` line of stderr, checked to name every one of ``names``."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert all(name in lines[0] for name in names), (names, lines[0])
    return lines[0]


# -- 4. strict configuration: at DAG construction, naming the key ---------------------------------------------
def dry_run(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "-n",
               "--cores", "1", "--configfile", str(path)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def base_config(tmp_path: Path) -> dict:
    return {
        "results": str(tmp_path / "results"),
        "paper_figures": str(tmp_path / "figures"),
        "schedules": {"datasets": {"Hippocampus": {"patch_size": [40, 56, 40], "steps": [8, 8, 8], "batch_size": 9}}},
        "demo": {"enabled": False},
    }


@pytest.mark.parametrize("key", ["demos", "paper_figure"])
def test_a_misspelled_top_level_section_stops_the_dry_run_naming_it(tmp_path, key):
    config = {**base_config(tmp_path), key: {"enabled": True}}
    proc = dry_run(tmp_path, config)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Error validating config file" in out and f"'{key}' was unexpected" in out


def test_a_patch_that_is_not_a_multiple_of_its_steps_fails_the_dry_run(tmp_path):
    config = base_config(tmp_path)
    config["schedules"]["datasets"]["Odd"] = {"patch_size": [40, 50, 40], "steps": [8, 8, 8], "batch_size": 9}
    proc = dry_run(tmp_path, config)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "schedules.datasets.Odd" in out and "axis 1 (= 50) is not divisible by its step 8" in out


def test_two_demo_datasets_with_one_id_fail_the_dry_run(tmp_path):
    config = base_config(tmp_path)
    config["demo"] = {"datasets": {"one": {"preset": "lesions", "dataset_id": 502},
                                   "two": {"preset": "organs", "dataset_id": 502}}}  # fmt: skip
    proc = dry_run(tmp_path, config)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "demo.datasets.two: dataset_id 502 is already demo.datasets.one's" in out


def test_a_key_repeated_in_the_config_file_fails_the_dry_run_naming_file_and_line(tmp_path):
    """A second ``demo:`` block used to replace the first silently (turning the demo off)."""
    config = base_config(tmp_path)
    text = yaml.safe_dump(config) + "demo:\n  enabled: true\n"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "-n",
               "--cores", "1", "--configfile", str(path)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    first = 1 + text.splitlines().index("demo:")
    last = len(text.splitlines()) - 1
    assert proc.returncode != 0
    message = f"{path}, line {last}: key 'demo' appears twice in one mapping (first at line {first})"
    assert message in proc.stdout + proc.stderr


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_number_that_is_not_finite_fails_the_dry_run_naming_the_key(tmp_path, value):
    config = base_config(tmp_path)
    config["demo"] = {"enabled": True, "checkpoint_minutes": value}
    proc = dry_run(tmp_path, config)
    assert proc.returncode != 0 and f"config demo.checkpoint_minutes: a number must be finite, not {value}" in (
        proc.stdout + proc.stderr)  # fmt: skip


def test_the_repository_configs_pass_the_config_checks():
    from pgps.experiments.config_files import check_config_files
    from pgps.experiments.grid import check_config

    for path in (ROOT / "config.yaml", ROOT / ".test" / "config.yaml", ROOT / "workflow" / "configs" / "article.yaml"):
        check_config_files([path])
        config = yaml.safe_load(path.read_text())
        config["schedules"].setdefault("modes", ["cps", "efficiency", "performance"])
        config["schedules"].setdefault("epochs", 1000)
        config["schedules"].setdefault("iterations_per_epoch", 250)
        check_config(config)


# -- 5. no silent overwrite; counts must be positive ----------------------------------------------------------
def test_light_plans_refuses_to_replace_a_different_configuration(tmp_path, capsys):
    from tests.test_light import demo_plans

    plans = tmp_path / "nnUNetPlans.json"
    plans.write_text(json.dumps(demo_plans()))
    assert run(capsys, "light-plans", "--plans", str(plans))[0] == 0
    first = plans.read_text()
    code, out, _ = run(capsys, "light-plans", "--plans", str(plans))  # the same again: kept as it is
    assert code == 0 and "(unchanged)" in out and plans.read_text() == first
    code, _, err = run(capsys, "light-plans", "--plans", str(plans), "--convs", "2")
    one_line_error(err, str(plans), "3d_light", "--overwrite")
    assert code == 2 and plans.read_text() == first  # a later --c of a 3d_light run still loads
    assert run(capsys, "light-plans", "--plans", str(plans), "--convs", "2", "--overwrite")[0] == 0
    light = [json.loads(text)["configurations"]["3d_light"] for text in (first, plans.read_text())]
    assert light[0] != light[1]


def test_backbone_plans_refuses_to_drop_a_configuration_its_output_holds(tmp_path, capsys):
    out = tmp_path / "nnUNetTransformerPlans.json"
    source = ["backbone-plans", "--plans", str(PLANS), "--out", str(out)]
    assert run(capsys, *source, "--backbone", "unetr")[0] == 0
    first = out.read_text()
    code, _, err = run(capsys, *source, "--backbone", "swinunetr")  # would drop 3d_unetr
    one_line_error(err, str(out), "3d_unetr", "--overwrite")
    assert code == 2 and out.read_text() == first
    assert run(capsys, *source, "--backbone", "unetr", "swinunetr")[0] == 0  # keeps 3d_unetr: fine
    assert run(capsys, *source, "--backbone", "swinunetr", "--overwrite")[0] == 0
    assert "3d_unetr" not in json.loads(out.read_text())["configurations"]


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--iterations-per-epoch", "0"], ["--iterations-per-epoch", "'0'"]),
        (["--iterations-per-epoch", "-3"], ["--iterations-per-epoch"]),
        (["--epochs", "0"], ["--epochs"]),
        (["--seed", "-1", "--mode", "rpss"], ["--seed", "'-1'"]),
        (["--batch-size-cap", "0"], ["--batch-size-cap"]),
    ],
)
def test_schedule_refuses_zero_or_negative_counts_naming_the_argument(capsys, argv, names):
    code, out, err = run(capsys, "schedule", *EXPLICIT, *argv)
    assert code == 2 and out == ""
    one_line_error(err, *names)


# -- 6. every error names its file, column or argument ---------------------------------------------------------
def test_schedule_plans_that_are_not_json_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"configurations":')
    code, _, err = run(capsys, "schedule", "--plans", str(bad))
    assert code == 2
    one_line_error(err, str(bad), "not JSON")


def test_download_without_network_names_the_url(tmp_path, capsys):
    url = "http://127.0.0.1:9/Task04_Hippocampus.tar"  # the discard port: nothing listens, the connection is refused
    code, _, err = run(capsys, "download", url, str(tmp_path / "x.tar"))
    assert code == 2
    one_line_error(err, url, "cannot download")
    assert not (tmp_path / "x.tar").exists()


def manifest_with_runs(root: Path, epochs_kept: int | None = None) -> Path:
    """A run manifest of two finished synthetic runs (CPS, Efficiency), the second cut to ``epochs_kept``."""
    rng = np.random.default_rng(0)
    rows = []
    for i, mode in enumerate(("cps", "efficiency")):
        run = {"dataset": "lesions", "backbone": "unet", "mode": mode, "sampler": "default", "mirroring": True,
               "length": 100, "fold": 0, "seed": 0, "trainer": f"nnUNetTrainer_PGPS_{mode.title()}",
               "plans": "nnUNetPlans", "configuration": "3d_fullres", "fold_dir": str(root / f"run{i}")}  # fmt: skip
        write_run(Path(run["fold_dir"]), run, rng)
        rows.append(run)
    if epochs_kept is not None:
        telemetry = Path(rows[1]["fold_dir"]) / "pgps_telemetry.csv"
        lines = telemetry.read_text().splitlines()
        telemetry.write_text("\n".join(lines[: 1 + epochs_kept]) + "\n")
    path = root / "runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def collected(tmp_path: Path, capsys) -> Path:
    """The results folder ``pgps collect`` writes for :func:`manifest_with_runs`."""
    runs = manifest_with_runs(tmp_path)
    assert run(capsys, "collect", "--runs", str(runs), "--out", str(tmp_path / "res"), "--quiet")[0] == 0
    return tmp_path / "res"


def test_collect_names_a_truncated_validation_summary(tmp_path, capsys):
    runs = manifest_with_runs(tmp_path)
    summary = tmp_path / "run1" / "validation" / "summary.json"
    summary.write_text(summary.read_text()[:20])
    code, _, err = run(capsys, "collect", "--runs", str(runs), "--out", str(tmp_path / "res"), "--quiet")
    assert code == 2
    one_line_error(err, str(summary), "not valid JSON")


def test_report_names_the_file_and_column_a_results_table_lacks(tmp_path, capsys):
    results = collected(tmp_path, capsys) / "results.csv"
    pd.read_csv(results).drop(columns=["mode"]).to_csv(results, index=False)
    code, _, err = run(capsys, "report", "--results", str(results.parent), "--out", str(tmp_path / "out"))
    assert code == 2
    one_line_error(err, str(results), "mode")


def test_report_names_a_corrupt_schedules_file(tmp_path, capsys):
    schedules = collected(tmp_path, capsys) / "schedules.json"
    schedules.write_text(schedules.read_text()[:-40])
    code, _, err = run(capsys, "report", "--results", str(schedules.parent), "--out", str(tmp_path / "out"))
    assert code == 2
    one_line_error(err, str(schedules))


# -- 7. incomplete is never complete; no silent acceptance -------------------------------------------------------
def test_a_run_whose_telemetry_was_cut_is_incomplete(tmp_path, capsys):
    from tests.report_fixtures import EPOCHS

    runs = manifest_with_runs(tmp_path, epochs_kept=EPOCHS // 2)
    assert run(capsys, "collect", "--runs", str(runs), "--out", str(tmp_path / "res"), "--quiet")[0] == 0
    results = pd.read_csv(tmp_path / "res" / "results.csv").set_index("mode")
    assert results.loc["cps", "status"] == "complete"
    assert results.loc["efficiency", "status"] == "incomplete"
    assert np.isnan(results.loc["efficiency", "relative_runtime"])


def damage(path: Path, how: str) -> str:
    """Damage one file of a run as a crash or a bad disk would; returns what the warning must say."""
    text = path.read_text()
    if how == "cut":  # the last row loses its tail (its last number too) and its line end
        path.write_text(text[:-40])
        return f"{path}, line {text.count(chr(10))}: cut short"
    if how == "nul":
        path.write_bytes(text.encode().replace(b"epoch_time_s", b"epoch_\0\0\0e_s", 1))
        return f"{path}, line 1: NUL bytes"
    if how == "field":
        lines = text.splitlines()
        stage = lines[3].split(",")[1]
        lines[3] = lines[3].replace(",", ",x", 1)  # the stage of the third epoch: "x" before it
        path.write_text("\n".join(lines) + "\n")
        return f"{path}, line 4, column stage: 'x{stage}' is not a number"
    if how == "list":
        path.write_text(json.dumps([json.loads(text)]))
        return f"{path}: not a pgps summary (a JSON object), but a JSON list"
    path.write_text(json.dumps(json.loads(text) | {"epochs_done": "40"}))
    return f"{path}: epochs_done is '40', not a number"


@pytest.mark.parametrize("how", ["cut", "nul", "field", "list", "number"])
def test_a_damaged_run_is_collected_as_damaged_naming_file_line_and_column(tmp_path, capsys, how):
    runs = manifest_with_runs(tmp_path)
    name = "pgps_summary.json" if how in ("list", "number") else "pgps_telemetry.csv"
    said = damage(tmp_path / "run1" / name, how)
    code, _, err = run(capsys, "collect", "--runs", str(runs), "--out", str(tmp_path / "res"), "--quiet")
    assert code == 0 and f"pgps collect: warning: damaged run: {said}" in err, err
    results = pd.read_csv(tmp_path / "res" / "results.csv").set_index("mode")
    assert results.loc["cps", "status"] == "complete" and results.loc["efficiency", "status"] == "damaged"
    assert results.loc["efficiency", ["dice", "relative_runtime", "iterated_voxels"]].isna().all()


def test_report_names_the_line_and_column_of_a_results_field_that_is_not_a_number(tmp_path, capsys):
    results = collected(tmp_path, capsys) / "results.csv"
    table = pd.read_csv(results)
    table["dice"] = table["dice"].astype(object)
    table.loc[1, "dice"] = "0.8O"
    table.to_csv(results, index=False)
    code, _, err = run(capsys, "report", "--results", str(results.parent), "--out", str(tmp_path / "out"))
    assert code == 2
    one_line_error(err, f"{results}, line 3, column dice: '0.8O' is not a number")


def test_report_refuses_a_published_folder_that_does_not_exist(tmp_path, capsys):
    argv = ["report", "--results", str(collected(tmp_path, capsys)), "--out", str(tmp_path / "out")]
    code, _, err = run(capsys, *argv, "--published", "/nonexistent")
    assert code == 2
    one_line_error(err, "--published /nonexistent", "no such folder")
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, *argv, "--published", str(tmp_path / "empty"))
    assert code == 2
    one_line_error(err, str(tmp_path / "empty"), "none of the published-value files")
    assert not (tmp_path / "out").exists()


def test_collect_refuses_characteristics_that_are_not_a_table(tmp_path, capsys):
    runs = manifest_with_runs(tmp_path)
    for name, content in (("chars.json", '{"dataset": "lesions"}\n'), ("chars.bin", b"\x89PNG\r\n\x1a\n\x00\xff")):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        argv = ["collect", "--runs", str(runs), "--out", str(tmp_path / "res"), "--characteristics", str(path)]
        code, _, err = run(capsys, *argv, "--quiet")
        assert code == 2
        one_line_error(err, str(path), "not a CSV task characteristics table")


def preprocessed(root: Path, patch: list[int], with_cases: bool = True) -> Path:
    """A minimal nnU-Net preprocessed folder: dataset.json, plans with 3d_fullres and 2d, and one segmentation."""
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}, "numTraining": 1}))
    configurations = {
        "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": patch, "batch_size": 2,
                       "median_image_size_in_voxels": [8.0, 8.0, 8.0]},
        "2d": {"data_identifier": "nnUNetPlans_2d", "patch_size": patch[1:], "batch_size": 12,
               "median_image_size_in_voxels": [8.0, 8.0]},
    }  # fmt: skip
    (root / "nnUNetPlans.json").write_text(json.dumps({"configurations": configurations}))
    (root / "nnUNetPlans_3d_fullres").mkdir()
    if with_cases:
        seg = np.zeros((1, 4, 4, 4), np.int16)
        seg[0, 0, 0, :2] = 1
        np.save(root / "nnUNetPlans_3d_fullres" / "case_0_seg.npy", seg)
    return root


def test_characteristics_refuses_2d_no_cases_and_a_repeated_dataset(tmp_path, capsys):
    folder = preprocessed(tmp_path / "ds", [4, 4, 4])
    out = str(tmp_path / "chars.csv")
    code, _, err = run(capsys, "characteristics", "--dataset", f"A={folder}", "--configuration", "2d", "--out", out)
    assert code == 2
    one_line_error(err, "nnUNetPlans.json", "'2d' is not 3D")
    empty = preprocessed(tmp_path / "empty", [4, 4, 4], with_cases=False)
    code, _, err = run(capsys, "characteristics", "--dataset", f"A={empty}", "--out", out)
    assert code == 2
    one_line_error(err, str(empty / "nnUNetPlans_3d_fullres"), "no preprocessed segmentations")
    code, _, err = run(capsys, "characteristics", "--dataset", f"A={folder}", f"A={empty}", "--out", out)
    assert code == 2
    one_line_error(err, "--dataset A", "twice")
    assert not Path(out).exists()
    assert run(capsys, "characteristics", "--dataset", f"A={folder}", "--out", out, "--quiet")[0] == 0


# -- 8. gpu-slot: signals reach the command, the GPU stays locked until it has exited -----------------------------
CHILD = """
import pathlib, signal, sys, time
marks = pathlib.Path(sys.argv[1])
def on_term(signum, frame):
    (marks / "term").write_text(str(signum))
    while not (marks / "go").exists():  # cleans up until the test lets it go
        time.sleep(0.02)
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
(marks / "started").write_text("")
while True:
    time.sleep(0.05)
"""


def wait_for(path: Path, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_gpu_slot_forwards_sigterm_and_holds_the_gpu_until_its_command_exits(tmp_path):
    from pgps.experiments import gpu_slot

    locks, marks = tmp_path / "locks", tmp_path / "marks"
    marks.mkdir()
    wrapper = subprocess.Popen(
        [sys.executable, "-m", "pgps", "gpu-slot", "--slots", "1", "--lock-dir", str(locks), "--",
         sys.executable, "-c", CHILD, str(marks)], stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_for(marks / "started"), "the command did not start"
        wrapper.send_signal(signal.SIGTERM)
        assert wait_for(marks / "term", 20), "SIGTERM never reached the command"
        with pytest.raises(TimeoutError):  # the command still runs: its GPU is still taken
            gpu_slot.acquire(1, locks, poll_s=0.01, timeout_s=0.3)
        (marks / "go").write_text("")
        assert wrapper.wait(timeout=60) == 3  # the command's own status
        _, lock = gpu_slot.acquire(1, locks, poll_s=0.01, timeout_s=5)  # free once it has exited
        lock.release()
    finally:
        (marks / "go").write_text("")
        if wrapper.poll() is None:
            wrapper.kill()


# -- 9. pgps convert checks label values and shapes in every layout, naming the case --------------------------------
@pytest.mark.parametrize(("fmt", "problem"), [("nnunet", "value"), ("nnunet", "shape"), ("msd", "value"),
                                             ("msd", "shape")])  # fmt: skip
def test_convert_names_the_case_with_a_bad_label_in_every_layout(tmp_path, capsys, fmt, problem):
    """The btcv layout checked these already; the nnunet and msd layouts accepted both."""
    source = fake_nnunet(tmp_path / "src") if fmt == "nnunet" else fake_msd(tmp_path / "src")
    label = sorted((source / "labelsTr").glob("*.nii.gz"))[1]
    spacing = (1.0, 1.0, 1.0) if fmt == "nnunet" else (1.0, 1.0, 2.0)  # the fakes' own spacing
    if problem == "value":
        nifti(label, label_volume(np.random.default_rng(3), [1, 7]), spacing=spacing)
    else:
        nifti(label, np.zeros((8, 8, 6), np.uint8), spacing=spacing)
    argv = ["convert", "--format", fmt, "--source", str(source), "--raw", str(tmp_path / "raw"), "--dataset-id", "42",
            "--name", "Bad", "--no-progress"]  # fmt: skip
    code, _, err = run(capsys, *argv)
    assert code == 2
    case = label.name.removesuffix(".nii.gz")
    one_line_error(err, f"case {case}", "label value(s) [7]" if problem == "value" else "shape")
    assert not (tmp_path / "raw" / "Dataset042_Bad").exists()


@pytest.mark.nnunet
def test_a_training_time_label_error_names_the_case(tiny_nnunet, tmp_path):
    """Preprocessed labels with a value dataset.json does not declare (label 2 became 5 in every case)."""
    import blosc2

    root = tmp_path / "bad"
    for sub in ("raw", "preprocessed"):
        shutil.copytree(tiny_nnunet / sub, root / sub)
    data = root / "preprocessed" / nn.DATASET / "nnUNetPlans_3d_fullres"
    for path in sorted(data.glob("*_seg.b2nd")):
        source = blosc2.open(str(path), mode="r")
        seg = source[:]
        seg[seg == 2] = 5
        chunks, blocks = source.chunks, source.blocks
        path.unlink()
        blosc2.asarray(np.ascontiguousarray(seg), urlpath=str(path), chunks=chunks, blocks=blocks, mode="w")
    proc = nn.train_only(root, "nnUNetTrainer_PGPS_Performance", PGPS_SEED="0", PGPS_EPOCHS="4")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: training case(s) case_") and "label value(s) [5]" in last, proc.stderr[-3000:]
