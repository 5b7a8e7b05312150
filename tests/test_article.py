"""The article's experiment grid as a Snakemake workflow (issue 5): the DAG of the full grid, the
SLURM and local-GPU profiles, schema validation, and the robustness of training jobs.

Every workflow run uses ``-s <repo>/Snakefile -d <tmp>``, so nothing is written into the repository.
The robustness tests replace nnU-Net's ``nnUNetv2_train`` by a small fake on PATH that records its
arguments and writes the outputs nnU-Net would, so resuming and failure handling are checked in
seconds; the real training path is covered by tests/test_nnunet.py and tests/test_demo.py.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from pgps.experiments import gpu_slot
from pgps.experiments.grid import Run, check_run, grid_runs

ROOT = Path(__file__).resolve().parents[1]
ARTICLE = ROOT / "workflow" / "configs" / "article.yaml"
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
EXPERIMENT_DEFAULTS = {
    key: spec["default"] for key, spec in SCHEMA["$defs"]["experiment"]["properties"].items() if "default" in spec
}


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a dry run: rule -> number of jobs."""
    table = output[output.index("Job stats:") :].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def job_resources(output: str, rule: str) -> list[dict]:
    """Each ``rule`` job's resources as printed by a dry run (name -> int or str), its wildcards under "_wildcards"."""
    jobs = []
    for block in re.split(r"\n(?=rule \w+:)", output):
        if block.startswith(f"rule {rule}:") and (m := re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)):
            pairs = (item.split("=", 1) for item in m[1].split(", "))
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
            jobs.append(
                {k: int(v) if v.isdigit() else v for k, v in pairs} | {"_wildcards": wildcards[1] if wildcards else ""}
            )
    return jobs


def expected_runs(config: dict) -> set[tuple]:
    """The distinct training runs of a config's enabled experiments, counted independently of pgps.experiments.grid:
    the product of each experiment's factor lists (schema defaults for absent ones), a null mirroring
    taking the dataset's own default."""
    datasets = config["article"]["datasets"]
    runs = set()
    for experiment in config["article"]["experiments"].values():
        if not experiment.get("enabled", True):
            continue
        e = {**EXPERIMENT_DEFAULTS, **experiment}
        for dataset, *factors in itertools.product(
            e["datasets"],
            e["backbones"],
            e["modes"],
            e["samplers"],
            e["mirroring"],
            e["lengths"],
            e["folds"],
            e["seeds"],
        ):
            backbone, mode, sampler, mirroring, length, fold, seed = factors
            mirror = datasets[dataset].get("mirroring", True) if mirroring is None else mirroring
            runs.add((dataset, backbone, mode, sampler, mirror, length, fold, seed))
    return runs


@pytest.fixture(scope="module")
def article_config() -> dict:
    return yaml.safe_load(ARTICLE.read_text())


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> str:
    proc = snakemake(tmp_path_factory.mktemp("article"), "-n", "-p", "--configfile", str(ARTICLE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_dry_run_lists_every_training_run_of_the_article(dry_run, article_config):
    counts = job_counts(dry_run)
    runs = expected_runs(article_config)
    assert counts["train"] == len(runs)
    datasets = {run[0] for run in runs}
    assert counts["convert"] == counts["preprocess"] == len(datasets) == 15
    downloads = [d for d in datasets if article_config["article"]["datasets"][d].get("url")]
    assert counts["download"] == len(downloads)
    assert counts["resenc_plans"] == len({(r[0], r[1]) for r in runs if r[1].startswith("resenc")})
    # one trainer name per run, each a pgps trainer nnU-Net can find
    trainers = set(re.findall(r"-tr (\S+)", dry_run))
    assert trainers == {run.trainer for run in grid_runs(_validated(article_config)["article"])}


def _validated(config: dict) -> dict:
    """The config with the schema's defaults filled in, as the Snakefile's validate() does."""
    from snakemake.utils import validate

    config = json.loads(json.dumps(config))
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def test_grid_trainers_exist_in_pgps(article_config):
    from pgps.nnunet.variants import TRAINERS

    runs = grid_runs(_validated(article_config)["article"])
    assert {r.trainer for r in runs} <= set(TRAINERS)
    assert len(runs) == len(expected_runs(article_config))


@pytest.mark.parametrize(
    "run, why",
    [
        (Run("BTCV", "unet", "cps", "single_crop", True, 100, 0, 0), "sampler variants"),
        (Run("BTCV", "unetr", "performance", "default", True, 10, 0, 0), "UNETR/SwinUNETR"),
        (Run("BTCV", "unet", "rpss", "default", False, 100, 0, 0), "no sampler or mirroring variants"),
        (Run("MSD_Lung", "unet", "progressive-resolution", "default", True, 10, 0, 0), "no training-length"),
        (Run("BTCV", "unet", "performance", "split_crop", True, 100, 0, 0), "use sampler 'default'"),
        (Run("BTCV", "unet", "cps", "default", True, 30, 0, 0), "length must be one of"),
    ],
)
def test_combinations_without_a_trainer_are_refused(run, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        check_run(run)


def test_slurm_profile_puts_gpu_resources_on_training_jobs_only(tmp_path):
    env = {
        "PGPS_SLURM_PARTITION": "gpu-test",
        "PGPS_SLURM_CPU_PARTITION": "cpu-test",
        "PGPS_SLURM_ACCOUNT": "proj42",
        "PGPS_GPU_MODEL": "a100",
        "PGPS_CPUS_PER_GPU": "6",
    }
    profile = ROOT / "workflow" / "profiles" / "slurm"
    proc = snakemake(tmp_path, "-n", "--profile", str(profile), "--configfile", str(ARTICLE), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    train = job_resources(out, "train")
    assert len(train) == job_counts(out)["train"]
    for r in train:
        assert (r["gpu"], r["gpu_model"], r["slurm_partition"], r["slurm_account"]) == (1, "a100", "gpu-test", "proj42")
        assert r["cpus_per_gpu"] == 6 and r["mem_mb"] >= 32000 and r["runtime"] >= 60
    # the dry run (no --cores: Snakemake caps its jobs at 1 core) shows the augmentation workers each job starts
    commands = [line for line in out.splitlines() if "nnUNetv2_train" in line]
    assert len(commands) == len(train) and all("export nnUNet_n_proc_DA=6;" in c for c in commands), commands[0]
    # shorter training lengths ask for less time
    by_length = {}
    for r in train:
        m = re.search(r"trainer=\S+?_(\d+)pct,", r["_wildcards"])
        by_length.setdefault(int(m[1]) if m else 100, set()).add(r["runtime"])
    assert sorted(by_length) == [1, 10, 25, 50, 100] and all(len(v) == 1 for v in by_length.values())
    runtimes = [by_length[length].pop() for length in sorted(by_length)]
    assert runtimes == sorted(runtimes) and runtimes[0] < runtimes[-1] <= 24 * 60
    for rule in ("preprocess", "convert", "resenc_plans"):
        for r in job_resources(out, rule):
            assert "gpu" not in r and r["slurm_partition"] == "cpu-test"

    # the sbatch call snakemake-executor-plugin-slurm builds from one training job's resources
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    job = SimpleNamespace(resources=Resources({k: v for k, v in train[0].items() if k != "_wildcards"}), threads=6)
    params = {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "account": "-A proj42",
              "partition": "-p gpu-test", "workdir": str(tmp_path)}  # fmt: skip
    sbatch = get_submit_command(job, params) + set_gres_string(job)
    for flag in ("-A proj42", "-p gpu-test", f"-t {train[0]['runtime']}", f"--mem {train[0]['mem_mb']}",
                 "--cpus-per-gpu=6", "--gpus=a100:1", "--signal=TERM@300"):  # fmt: skip
        assert flag in sbatch, sbatch
    assert "--array" not in sbatch


@pytest.mark.parametrize(
    "env, status, extra",
    [
        ({}, None, "--signal=TERM@300"),
        ({"PGPS_SLURM_STATUS_COMMAND": "squeue", "PGPS_SLURM_SIGNAL_SECONDS": "120"}, "squeue", "--signal=TERM@120"),
        ({"PGPS_SLURM_STATUS_COMMAND": "sacct", "PGPS_SLURM_SIGNAL_SECONDS": "0"}, "sacct", None),
    ],
)
def test_slurm_profile_takes_the_status_command_and_the_warning_signal_from_the_environment(
    monkeypatch, env, status, extra
):
    """The profile as Snakemake reads it (yte): PGPS_SLURM_STATUS_COMMAND and PGPS_SLURM_SIGNAL_SECONDS."""
    import yte

    for name in ("PGPS_SLURM_STATUS_COMMAND", "PGPS_SLURM_SIGNAL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with open(ROOT / "workflow" / "profiles" / "slurm" / "config.yaml") as f:
        profile = yte.process_yaml(f, require_use_yte=True)
    assert profile.get("slurm-status-command") == status
    for rule in ("train", "demo_train"):
        assert profile["set-resources"][rule].get("slurm_extra") == extra


def test_local_gpu_profile_pins_each_training_job_to_one_gpu(tmp_path):
    """Each job on one free GPU; a machine with fewer cores than the jobs' threads (PGPS_CORES=3, the profile's
    --cores, against 12 per GPU) scales the augmentation workers down to its cores, in the dry run as in the run."""
    config = _tiny_config(tmp_path)
    profile = ROOT / "workflow" / "profiles" / "local-gpu"
    proc = snakemake(tmp_path, "-n", "-p", "--profile", str(profile), "--configfile", str(config),
                     env={"PGPS_GPUS": "3", "PGPS_CORES": "3"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    commands = [line for line in proc.stdout.splitlines() if "nnUNetv2_train" in line]
    assert commands and all("pgps gpu-slot --slots 3 -- nnUNetv2_train" in c for c in commands)
    assert all("export nnUNet_n_proc_DA=3;" in c for c in commands), commands[0]


MALFORMED = [
    ({"lengths": [30]}, "30 is not one of [1, 10, 25, 50, 100]"),
    ({"modes": ["fast"]}, "'fast' is not one of"),
    ({"folds": [5]}, "5 is greater than the maximum of 4"),
    ({"colour": "red"}, "Additional properties are not allowed ('colour' was unexpected)"),
]


def _malformed(article_config: dict, change: dict) -> dict:
    config = json.loads(json.dumps(article_config))
    config["article"]["experiments"]["table1"].update(change)
    return config


@pytest.mark.parametrize("change, message", MALFORMED)
def test_schema_rejects_a_malformed_experiment_with_a_clear_message(article_config, change, message):
    """The Snakefile's validate() call, in this process (a snakemake process per config would mostly start up); the
    workflow stopping on it with the message: the next test."""
    from snakemake.exceptions import WorkflowError

    with pytest.raises(WorkflowError) as err:
        _validated(_malformed(article_config, change))
    assert message in str(err.value)


def test_the_workflow_stops_on_a_config_the_schema_rejects(tmp_path, article_config):
    change, message = MALFORMED[-1]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_malformed(article_config, change)))
    proc = snakemake(tmp_path, "-n", "--configfile", str(path))
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout


def test_an_experiment_on_an_unknown_dataset_is_refused(tmp_path, article_config):
    config = json.loads(json.dumps(article_config))
    config["article"]["experiments"]["table1"]["datasets"].append("MSD_Kidney")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "--configfile", str(path))
    assert proc.returncode != 0
    assert "experiment 'table1': dataset 'MSD_Kidney' is not in the config's datasets" in proc.stdout + proc.stderr


# -- robustness of training jobs, with a fake nnUNetv2_train --

FAKE_TRAIN = """\
#!{python}
# Fake nnUNetv2_train: records its arguments; writes what nnU-Net writes (checkpoint, summaries),
# or fails for the fold in FAKE_FAIL_FOLD after writing a checkpoint, as a killed job would.
import json, os, pathlib, sys
args = sys.argv[1:]
dataset_id, configuration, fold = args[:3]
trainer, plans = args[args.index("-tr") + 1], args[args.index("-p") + 1]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(args) + "\\n")
pre = next(pathlib.Path(os.environ["nnUNet_preprocessed"]).glob(f"Dataset{{int(dataset_id):03d}}_*"))
run = f"{{trainer}}__{{plans}}__{{configuration}}"
out = pathlib.Path(os.environ["nnUNet_results"]) / pre.name / run / f"fold_{{fold}}"
out.mkdir(parents=True, exist_ok=True)
(out / "checkpoint_latest.pth").write_text("state")
if os.environ.get("FAKE_FAIL_FOLD") == fold:
    sys.exit(1)
(out / "validation").mkdir(exist_ok=True)
(out / "validation" / "summary.json").write_text(json.dumps({{"foreground_mean": {{"Dice": 0.5}}}}))
(out / "pgps_summary.json").write_text(json.dumps({{"seed": os.environ["PGPS_SEED"]}}))
"""


def _tiny_config(tmp_path: Path) -> Path:
    """An article config with one dataset already converted and preprocessed (files in place)."""
    nnunet = tmp_path / "nnunet"
    for sub in ("raw", "preprocessed"):
        (nnunet / sub / "Dataset777_Tiny").mkdir(parents=True, exist_ok=True)
    (nnunet / "raw" / "Dataset777_Tiny" / "dataset.json").write_text("{}")
    (nnunet / "preprocessed" / "Dataset777_Tiny" / "nnUNetPlans.json").write_text("{}")
    config = {
        "results": str(tmp_path / "results"),
        "paper_figures": str(tmp_path / "figures"),
        "schedules": {"datasets": {"Tiny": {"patch_size": [16, 16, 16], "steps": [8, 8, 8], "batch_size": 2}}},
        "demo": {"enabled": False},
        "article": {
            "enabled": True,
            "nnunet_dir": str(nnunet),
            "device": "cpu",
            "datasets": {"Tiny": {"dataset_id": 777, "name": "Tiny", "format": "nnunet", "raw_path": str(tmp_path)}},
            "experiments": {"main": {"datasets": ["Tiny"], "modes": ["cps", "performance"], "folds": [0, 1]},
                            "repeats": {"datasets": ["Tiny"], "modes": ["performance"], "folds": [0], "seeds": [3]}},
        },
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def fake_nnunet(tmp_path):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    script = bin_dir / "nnUNetv2_train"
    script.write_text(FAKE_TRAIN.format(python=sys.executable))
    script.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {"PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
           "FAKE_CALLS": str(calls)}  # fmt: skip

    def run(*targets: str, **extra_env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        start = len(calls.read_text().splitlines()) if calls.exists() else 0
        proc = snakemake(tmp_path, "--cores", "2", "--configfile", str(_tiny_config(tmp_path)), "--keep-going",
                         *targets, env={**env, **extra_env})  # fmt: skip
        made = calls.read_text().splitlines()[start:] if calls.exists() else []
        return proc, [json.loads(line) for line in made]

    return run


def _fold(tmp_path: Path, trainer: str, fold: int, results: str = "results") -> Path:
    return tmp_path / "nnunet" / results / "Dataset777_Tiny" / f"{trainer}__nnUNetPlans__3d_fullres" / f"fold_{fold}"


def _targets(tmp_path: Path) -> list[str]:
    folds = [
        _fold(tmp_path, t, f) for t in ("nnUNetTrainer_PGPS_CPS", "nnUNetTrainer_PGPS_Performance") for f in (0, 1)
    ]
    folds.append(_fold(tmp_path, "nnUNetTrainer_PGPS_Performance", 0, "results_seed3"))
    return [str(f / "validation" / "summary.json") for f in folds]


def test_a_failed_fold_keeps_the_finished_ones_and_resumes_from_its_checkpoint(tmp_path, fake_nnunet):
    proc, calls = fake_nnunet(*_targets(tmp_path), FAKE_FAIL_FOLD="1")
    assert proc.returncode != 0  # the two fold-1 jobs failed ...
    assert len(calls) == 5 and all(c[-1] == "--c" for c in calls)  # always --c: no checkpoint, nnU-Net starts anew
    for trainer in ("nnUNetTrainer_PGPS_CPS", "nnUNetTrainer_PGPS_Performance"):
        assert (_fold(tmp_path, trainer, 0) / "validation" / "summary.json").is_file()  # finished folds kept
        assert not (_fold(tmp_path, trainer, 1) / "validation" / "summary.json").exists()
        assert (_fold(tmp_path, trainer, 1) / "checkpoint_latest.pth").is_file()  # the checkpoint survives
    seeded = json.loads(
        (_fold(tmp_path, "nnUNetTrainer_PGPS_Performance", 0, "results_seed3") / "pgps_summary.json").read_text()
    )
    assert seeded == {"seed": "3"}

    # re-submitted (e.g. after preemption): only the failed folds run again, resuming with --c
    proc, calls = fake_nnunet(*_targets(tmp_path), "--rerun-incomplete")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted((c[2], c[-1]) for c in calls) == [("1", "--c"), ("1", "--c")]
    assert all(c[c.index("-device") + 1] == "cpu" for c in calls)

    # nothing left to do
    proc, calls = fake_nnunet(*_targets(tmp_path))
    assert proc.returncode == 0 and calls == []


# -- pgps gpu-slot --


def test_gpu_slots_are_exclusive_and_released(tmp_path):
    first, h1 = gpu_slot.acquire(2, tmp_path, poll_s=0.01)
    second, h2 = gpu_slot.acquire(2, tmp_path, poll_s=0.01)
    assert (first, second) == (0, 1)
    with pytest.raises(TimeoutError, match="all 2 GPU slots"):
        gpu_slot.acquire(2, tmp_path, poll_s=0.01, timeout_s=0.05)
    got = []
    waiter = threading.Thread(target=lambda: got.append(gpu_slot.acquire(2, tmp_path, poll_s=0.01, timeout_s=5)))
    waiter.start()
    h1.release()  # slot 0 is freed; the waiting job takes it
    waiter.join()
    assert got[0][0] == 0
    got[0][1].release()
    h2.release()


def test_gpu_slot_runs_the_command_on_its_gpu(tmp_path):
    out = tmp_path / "device.txt"
    code = textwrap.dedent(f"""
        import os; open({str(out)!r}, "w").write(os.environ["CUDA_VISIBLE_DEVICES"])
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "4,7"}
    held = gpu_slot.acquire(2, tmp_path / "locks")  # slot 0 busy: the command gets slot 1 = GPU 7
    proc = subprocess.run(
        [sys.executable, "-m", "pgps", "gpu-slot", "--slots", "2", "--lock-dir", str(tmp_path / "locks"), "--",
         sys.executable, "-c", code], env=env, capture_output=True, text=True)  # fmt: skip
    held[1].release()
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "7" and "running on GPU 7 (slot 1 of 2)" in proc.stderr
    assert gpu_slot.visible_device(1, None) == "1"
    with pytest.raises(ValueError, match="lists only 2 devices"):
        gpu_slot.visible_device(2, "4,7")


def test_trainer_names_decode_to_their_factors(article_config):
    from pgps.experiments.grid import factors_of_trainer

    for run in grid_runs(_validated(article_config)["article"]):
        factors = factors_of_trainer(run.trainer, run.plans)
        assert Run(run.dataset, **factors, fold=run.fold, seed=run.seed) == run
    with pytest.raises(ValueError, match="not a pgps trainer"):
        factors_of_trainer("nnUNetTrainer")


def test_partial_results_render_and_make_an_html_report(tmp_path, fake_nnunet):
    """Runs finished so far -> article_partial (collect + every table and figure) -> snakemake --report."""
    from pgps.report import OUTPUTS

    proc, _ = fake_nnunet(*_targets(tmp_path)[:2])  # two of the five runs have finished
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc, calls = fake_nnunet("article_partial")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls == []  # collecting never trains
    figures = tmp_path / "results" / "partial_figures"
    assert all((figures / name).is_file() for name in OUTPUTS)
    runs = (tmp_path / "results" / "collected_finished" / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 2

    proc, _ = fake_nnunet("article_partial", "--report", str(tmp_path / "report.html"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "figure3.png" in html and "table1.csv" in html and "miccai_table1.md" in html
    # the figures carry no caption: each gets its number and caption as labels
    assert "MICCAI 2024 Figure 3" in html and "the fold-wise Dice difference of PGPS and PGPS+ to CPS per task" in html
    # docutils renders every caption with the category and file link targets: no duplicates, no warnings
    assert "(WARNING/" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.nnunet
@pytest.mark.slow
def test_article_pipeline_runs_end_to_end_on_a_tiny_dataset(tmp_path):
    """The real chain on a synthetic dataset given as raw_path: pgps convert -> nnU-Net planning and
    preprocessing -> nnUNetv2_train (CPU, a few iterations) -> collect (with characteristics) -> report."""
    from pgps.report import OUTPUTS

    source = tmp_path / "source"
    subprocess.run(
        [sys.executable, "-m", "pgps", "synth", "--preset", "lesions", "--out", str(source), "--dataset-id", "900",
         "--name", "Tiny", "--cases", "6", "--shape", "32", "32", "32", "--no-progress"],
        check=True, capture_output=True,
    )  # fmt: skip
    config = {
        "results": str(tmp_path / "results"),
        "paper_figures": str(tmp_path / "figures"),
        "schedules": {"datasets": {"Tiny": {"patch_size": [32, 32, 32], "steps": [8, 8, 8], "batch_size": 2}}},
        "demo": {"enabled": False},
        "article": {
            "enabled": True, "nnunet_dir": str(tmp_path / "nnunet"), "device": "cpu", "preprocess_processes": 2,
            "epochs": 3, "iterations_per_epoch": 1, "val_iterations": 1,
            "datasets": {"Tiny": {"dataset_id": 777, "name": "Tiny", "format": "nnunet",
                                  "raw_path": str(source / "Dataset900_Tiny")}},
            "experiments": {"main": {"datasets": ["Tiny"], "modes": ["cps", "performance"], "folds": [0]}},
        },
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "--cores", "2", "--configfile", str(path), timeout=1200)
    logs = "\n".join(p.read_text()[-1500:] for p in (tmp_path / "results" / "logs").rglob("*.log"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    results = pd.read_csv(tmp_path / "results" / "collected_all" / "results.csv")
    assert sorted(results["mode"]) == ["cps", "performance"] and results["status"].eq("complete").all()
    assert results["dice"].between(0, 1).all() and results["epochs"].eq(3).all()
    characteristics = pd.read_csv(tmp_path / "results" / "characteristics_all.csv")
    assert characteristics.loc[0, "dataset"] == "Tiny"
    assert all((tmp_path / "figures" / name).is_file() for name in OUTPUTS)
