"""The AMOS22 large-batch/large-patch study (workflow/configs/amos22.yaml): its DAG against counts computed here
from the config alone, AMOS22's official split in pgps convert, and Tables 1-4 rendered from synthetic scores with
gaps beside the published values."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.test_article import EXPERIMENT_DEFAULTS, SCHEMA, job_counts, snakemake

ROOT = Path(__file__).resolve().parents[1]
AMOS22 = ROOT / "workflow" / "configs" / "amos22.yaml"
PAPER = ROOT.parent / "shared" / "papers" / "large-batch-patch-amos22.txt"
ENSEMBLE_DEFAULTS = {k: v["default"] for k, v in SCHEMA["$defs"]["ensemble"]["properties"].items() if "default" in v}


def _expected(config: dict) -> dict[str, int | set]:
    """Training runs, held-out models and ensembles of the config, from its lists and the schema's defaults only."""
    article = config["article"]
    runs, heldout, gpus = set(), set(), {}
    for experiment in article["experiments"].values():
        e = {**EXPERIMENT_DEFAULTS, **experiment}
        for dataset, mode, loss, variant, fold in itertools.product(
            e["datasets"], e["modes"], e["losses"], e["variants"], e["folds"]
        ):
            key = (dataset, mode, loss, tuple(variant["patch_size"]), variant["batch_size"])
            runs.add((*key, fold))
            gpus[(*key, fold)] = max(gpus.get((*key, fold), 1), e["gpus"])
            if e["heldout"]:
                heldout.add((*key, (fold,)))
    members, decided, ensembles = set(), set(), article["ensembles"]
    for spec in ensembles.values():
        s = {**ENSEMBLE_DEFAULTS, **spec}
        for m in s["members"].values():
            model = (s["dataset"], m["mode"], m.get("loss", "dice_ce"), tuple(m["patch_size"]), m["batch_size"],
                     tuple(s["folds"]))  # fmt: skip
            members.add(model)
            if s["order"] == "before":  # each member's own post-processing decision
                decided.add(model)
    return {"runs": runs, "gpus": gpus, "models": heldout | members, "ensembles": len(ensembles),
            "member_pp": len(decided)}  # fmt: skip


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(AMOS22.read_text())


CPUS_PER_GPU = 6  # not the default 12: the variable must reach both the SLURM request and nnU-Net's workers


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> str:
    # --cores: enough that no job's threads are scaled down to this machine's (as on a cluster)
    proc = snakemake(tmp_path_factory.mktemp("amos22"), "-n", "-p", "--cores", "1000", "--configfile", str(AMOS22),
                     timeout=600, env={"PGPS_CPUS_PER_GPU": str(CPUS_PER_GPU)})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_dry_run_job_counts_follow_the_config(dry_run, config):
    counts, expected = job_counts(dry_run), _expected(config)
    datasets = config["article"]["datasets"]
    assert counts["train"] == len(expected["runs"]) == 68  # 70 settings x folds, 2 shared by batch_sweep_16/model_a
    assert counts["convert"] == counts["preprocess"] == counts["variant_plans"] == len(datasets) == 2
    assert counts["heldout_predict"] == len(expected["models"])
    assert counts["heldout_scores"] == len(expected["models"]) + expected["ensembles"]
    assert counts["heldout_ensemble"] == expected["ensembles"] == 4
    assert counts["heldout_postprocessing"] == expected["member_pp"] == 8
    assert counts["amos22_report"] == counts["heldout_manifest"] == 1


def test_multi_gpu_runs_reach_num_gpus_and_the_slurm_request(dry_run, config):
    """-num_gpus N on exactly the runs whose experiment asks for N > 1 GPUs; gpu=N, cpus_per_gpu (the slurm
    plugin's --cpus-per-gpu) and N x PGPS_CPUS_PER_GPU threads in the job; nnUNet_n_proc_DA is the per-GPU share."""
    expected = _expected(config)["gpus"]
    blocks = [b for b in re.split(r"\n(?=rule \w+:)", dry_run) if b.startswith("rule train:")]
    assert len(blocks) == len(expected)
    seen = {}
    for block in blocks:
        command = block[block.index("nnUNetv2_train") :]
        m = re.search(r"-num_gpus (\d+)", command)
        gpus = int(m[1]) if m else 1
        resources = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)[1]
        assert f"gpu={gpus}" in resources and f"cpus_per_gpu={CPUS_PER_GPU}" in resources
        assert re.search(r"^\s+threads: (\d+)$", block, re.MULTILINE)[1] == str(CPUS_PER_GPU * gpus)
        assert f"nnUNet_n_proc_DA={CPUS_PER_GPU};" in block
        configuration = re.search(r"3d_fullres_p(\d+)x(\d+)x(\d+)_b(\d+)", command)
        seen[configuration[0]] = max(seen.get(configuration[0], 1), gpus)
    by_configuration = {}
    for (_, _, _, patch, batch, _), gpus in expected.items():
        name = f"3d_fullres_p{'x'.join(map(str, patch))}_b{batch}"
        by_configuration[name] = max(by_configuration.get(name, 1), gpus)
    assert seen == by_configuration and by_configuration["3d_fullres_p64x160x160_b64"] == 8


@pytest.mark.nnunet
def test_every_multi_gpu_run_is_admitted_and_can_start(dry_run, config):
    """Every run the config gives several GPUs is in the DAG with its trainer, those with a PGPS sampler included
    (PGPS-Performance's Split-Crop, which refused DDP before); each trainer's schedule at its plans variant (steps
    16x32x32, the config's AMOS22 schedule entry) splits every stage over its GPUs, and its batch planner builds."""
    import pgps
    from pgps.nnunet import ddp, variants
    from pgps.sampling import BatchPlanner

    steps = config["schedules"]["datasets"]["AMOS22_batch64"]["steps"]
    expected = {run: gpus for run, gpus in _expected(config)["gpus"].items() if gpus > 1}
    blocks = [b for b in re.split(r"\n(?=rule \w+:)", dry_run) if b.startswith("rule train:")]
    multi = []
    for block in blocks:
        command = block[block.index("nnUNetv2_train") :]
        gpus = re.search(r"-num_gpus (\d+)", command)
        if gpus:
            patch_batch = re.search(r"3d_fullres_p(\d+)x(\d+)x(\d+)_b(\d+)", command)
            multi.append((re.search(r"-tr (\w+)", command)[1], [int(v) for v in patch_batch.groups()], int(gpus[1])))
    assert len(multi) == len(expected) > 0
    sampled = 0
    for trainer, (*patch, batch), gpus in multi:
        cls = getattr(variants, trainer)
        schedule = pgps.make_schedule(cls.curriculum_mode, patch, steps, batch)
        ddp.check_stages(schedule, gpus, str)
        assert all(len(ddp.rank_rows(s.batch_size, gpus - 1, gpus)) >= 1 for s in schedule.stages)
        BatchPlanner(schedule, num_cases=200, strategy=cls.batch_sampling or "nnunet")  # AMOS22: 200 training cases
        sampled += cls.batch_sampling is not None
    performance = sum(gpus > 1 and run[1] == "performance" for run, gpus in _expected(config)["gpus"].items())
    assert sampled == performance > 0


def test_an_experiment_that_cannot_start_on_its_gpus_is_refused_at_dag_construction(config):
    """Every curriculum mode's smallest stage batch is the planned one (its last stage), so ``gpus`` above a
    variant's batch can never start; without a variant the batch is unknown before planning. Both are refused when
    the grid is built, naming the experiment, the stage and the fix."""
    import pgps
    from pgps.experiments.grid import grid_runs

    for mode in ("cps", "efficiency", "performance", "miccai", "miccai-plus", "rpss", "progressive-resolution"):
        schedule = pgps.make_schedule(mode, (64, 160, 160), (16, 32, 32), 4)
        assert min(s.batch_size for s in schedule.stages) == schedule.stages[-1].batch_size == 4, mode
    experiments = {name: {**EXPERIMENT_DEFAULTS, **e} for name, e in config["article"]["experiments"].items()}
    article = {**config["article"], "experiments": experiments}  # the schema's defaults, as the workflow applies them
    assert len(grid_runs(article)) == len(_expected(config)["runs"])  # the study itself is admitted
    too_many = {"batch_sweep_64": {**experiments["batch_sweep_64"], "gpus": 128}}
    refused = r"experiment 'batch_sweep_64': .*last stage \(P_max 64x160x160\) trains the planned batch of 64"
    with pytest.raises(ValueError, match=refused + r".*fewer than the 128 GPUs.*lower gpus to at most 64"):
        grid_runs({**article, "experiments": too_many})
    unplanned = {"unplanned": {**experiments["patch_sweep"], "variants": None, "gpus": 2}}
    with pytest.raises(ValueError, match=r"experiment 'unplanned': .*gpus 2 needs the batch size before nnU-Net plans"):
        grid_runs({**article, "experiments": unplanned})


def test_amos22_official_split_is_kept(tmp_path):
    from pgps.nnunet.datasets.convert import convert_dataset
    from tests.test_convert import fake_amos22

    source = fake_amos22(tmp_path / "src")
    meta = json.loads((source / "dataset.json").read_text())
    for task, dataset_id in ((1, 281), (2, 282)):
        out = convert_dataset(f"amos22_task{task}", source, tmp_path / "raw", dataset_id, f"AMOS22Task{task}")
        train = sorted(p.name for p in (out / "labelsTr").iterdir())
        held = sorted(p.name for p in (out / "labelsTs").iterdir())
        # every training case (task 1: CT only, AMOS ids up to 500) trains; every validation case is held out
        ids = {Path(e["image"]).name: int(Path(e["image"]).name[5:9]) for e in meta["training"]}
        assert train == sorted(name for name, i in ids.items() if task == 2 or i <= 500)
        assert held == sorted(Path(e["image"]).name for e in meta["validation"])
        assert not set(train) & set(held)
        written = json.loads((out / "dataset.json").read_text())
        assert written["numTraining"] == len(train) and written["pgps_heldout"]["cases"] == len(held)
        assert written["channel_names"] == ({"0": "CT"} if task == 1 else {"0": "either_CT_or_MR"})
        assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [n.replace(".nii", "_0000.nii") for n in held]


def _published(name: str) -> pd.DataFrame:
    return pd.read_csv(ROOT / "pgps" / "report" / "published" / f"{name}.csv", comment="#")


@pytest.mark.skipif(not PAPER.is_file(), reason="the AMOS22 paper's text is not beside this checkout")
def test_published_values_are_the_papers_lines():
    """Every typed value appears on the line of the paper its source names, with its row's words."""
    lines = PAPER.read_text().splitlines()
    for name in ("amos22_table1", "amos22_table2", "amos22_table3", "amos22_table4"):
        for r in _published(name).to_dict("records"):
            line = int(re.search(r"l\. (\d+)", r["source"])[1])
            printed = [float(v) for v in re.findall(r"\b0\.\d{4}\b", lines[line - 1])]
            column = 0 if r["column"].startswith("dsc") else 1
            assert printed[column] == pytest.approx(r["value"]), (name, r)


def test_tables_render_from_synthetic_scores_with_gaps(tmp_path):
    from pgps.cli import main

    rng = np.random.default_rng(0)
    rows, truth = [], {}

    def scores(name: str, n_cases: int = 3) -> str:
        frame = pd.DataFrame(
            [{"case": f"amos_{c:04d}", "class": k, "dice": rng.uniform(0.7, 1), "nsd": rng.uniform(0.6, 1)}
             for c in range(n_cases) for k in range(1, 16)]
        )  # fmt: skip
        frame.loc[0, ["dice", "nsd"]] = math.nan  # a class absent from both files
        path = tmp_path / f"{name}.scores.csv"
        frame.to_csv(path, index=False)
        per_case = frame.groupby("case")[["dice", "nsd"]].mean()
        truth[name] = (per_case["dice"].mean(), per_case["nsd"].mean())
        return str(path)

    def row(name, kind, dataset, mode, loss, patch, batch, folds="0", order="", members="", written=True):
        path = scores(name) if written else str(tmp_path / f"{name}.scores.csv")
        rows.append(
            {
                "name": name,
                "kind": kind,
                "dataset": dataset,
                "mode": mode,
                "loss": loss,
                "scores": path,
                "patch_size": patch,
                "batch_size": batch,
                "folds": folds,
                "order": order,
                "members": members,
            }
        )

    row("p160", "run", "amos22_task2", "cps", "dice_ce", "64x160x160", "2")
    row("p352", "run", "amos22_task2", "cps", "dice_ce", "64x352x352", "2")
    row("p352perf", "run", "amos22_task2", "performance", "dice_ce", "64x352x352", "2")
    row("p384", "run", "amos22_task2", "cps", "dice_ce", "64x384x384", "2", written=False)  # not scored yet: a gap
    row("focal", "run", "amos22_task2", "cps", "dice_focal", "64x288x288", "2")
    row("t1:model_a", "model", "amos22_task1", "cps", "dice_ce", "64x160x160", "16", "0_1_2_3_4")
    row("t1", "ensemble", "amos22_task1", "cps", "dice_ce+dice_focal", "", "", "0_1_2_3_4", "before", "model_a+model_b")
    manifest = tmp_path / "heldout.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "rendered"
    assert main(["amos22-report", "--manifest", str(manifest), "--out", str(out)]) == 0
    from pgps.experiments.heldout import amos22_outputs

    assert all((out / name).is_file() for name in amos22_outputs())
    t1 = pd.read_csv(out / "compare" / "amos22_table1.csv")
    cell = t1.set_index(["row", "column"])
    assert cell.loc[("64x160x160", "dsc.cps"), "ours"] == pytest.approx(truth["p160"][0])
    assert cell.loc[("64x160x160", "nsd.cps"), "published"] == 0.8138
    # the paper's (64, 354, 354) row holds our (64, 352, 352) runs, with and without PGPS
    assert cell.loc[("64x354x354", "dsc.cps"), "ours"] == pytest.approx(truth["p352"][0])
    assert cell.loc[("64x354x354", "nsd.performance"), "ours"] == pytest.approx(truth["p352perf"][1])
    assert cell.loc[("64x354x354", "dsc.cps"), "difference"] == pytest.approx(truth["p352"][0] - 0.8973)
    assert math.isnan(cell.loc[("64x384x384", "dsc.cps"), "ours"])  # a gap, the published value beside it
    assert cell.loc[("64x384x384", "dsc.cps"), "published"] == 0.8715
    t3 = pd.read_csv(out / "compare" / "amos22_table3.csv").set_index(["row", "column"])
    assert t3.loc[("dice_focal", "dsc.cps"), "ours"] == pytest.approx(truth["focal"][0])
    assert math.isnan(t3.loc[("dice_topk10", "dsc.cps"), "ours"])
    t4 = pd.read_csv(out / "compare" / "amos22_table4.csv").set_index(["row", "column"])
    assert t4.loc[("task1|ensemble", "nsd.cps"), "ours"] == pytest.approx(truth["t1"][1])
    assert t4.loc[("task1|model_a", "dsc.cps"), "ours"] == pytest.approx(truth["t1:model_a"][0])
    assert math.isnan(t4.loc[("task2|ensemble", "dsc.cps"), "ours"]) and t4.loc[("task2|ensemble", "dsc.cps"),
                                                                                  "published"] == 0.9089  # fmt: skip
    assert "–" in (out / "tables" / "amos22_table2.md").read_text()  # Table 2 has no run: every cell a gap
