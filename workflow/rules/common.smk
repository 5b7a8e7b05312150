# Shared paths and helpers (no rules here: snakemake --lint keeps functions and rules apart).

import os
import sys
from pathlib import Path

RESULTS = config["results"]
PAPER_FIGURES = config["paper_figures"]
SCHEDULES = config["schedules"]

# Run the pgps of this checkout, with the interpreter that runs Snakemake, also when its
# virtualenv is not activated (`make demo` calls .venv/bin/snakemake); a PATH that already has
# it is kept as it is. Under `--sdm conda` the activated environment's bin/ comes first on PATH
# and provides the interpreter.
_bin, _path = str(Path(sys.executable).parent), os.environ.get("PATH", "")
os.environ.update(
    PATH=_path if _bin in _path.split(os.pathsep) else os.pathsep.join([_bin, _path]),
    PYTHONPATH=os.pathsep.join(p for p in [workflow.basedir, os.environ.get("PYTHONPATH", "")] if p),
)


# The figure code: an input of the render rules, so that editing it re-renders the figures.
REPORT_CODE = sorted(str(p) for p in Path(workflow.basedir, "pgps", "report").glob("*.py"))


def planned(dataset, key):
    """A planned size of ``dataset`` from the config: patch_size, steps or batch_size."""
    return SCHEDULES["datasets"][dataset][key]


def schedule_targets():
    """The schedule table and one Figure 2 panel (PNG and PDF) per dataset."""
    return [
        f"{PAPER_FIGURES}/schedules.csv",
        *expand(f"{PAPER_FIGURES}/figure2/{{dataset}}.{{ext}}", dataset=SCHEDULES["datasets"], ext=["png", "pdf"]),
    ]


# -- the demo training run (workflow/rules/demo.smk) --

DEMO = config["demo"]
NNUNET = os.path.abspath(DEMO["nnunet_dir"])


def demo_name(dataset):
    """nnU-Net's dataset folder name, e.g. Dataset502_lesions."""
    return f"Dataset{DEMO['datasets'][dataset]['dataset_id']:03d}_{dataset}"


def demo_fold_dir(dataset, trainer, fold):
    return f"{NNUNET}/results/{demo_name(dataset)}/{trainer}__nnUNetPlans__{DEMO['configuration']}/fold_{fold}"


def nnunet_env(nnunet_dir, results=None, processes=None):
    """``export`` of nnU-Net's paths under ``nnunet_dir`` (raw, preprocessed, ``results`` when given), its process
    count, the pgps trainers (``nnUNet_extTrainer``) and OpenMP's passive wait unless the user chose a policy
    (``OMP_WAIT_POLICY``: libgomp's default spin-wait makes a 2-thread step several times slower whenever another
    process shares the cores; ``benchmarks/omp_wait.py``), the trainers' wait for a fold another job still trains
    (``PGPS_WAIT_FOR_LOCK``), for the start of a shell command: every rule's one way."""
    parts = [f"nnUNet_raw={nnunet_dir}/raw", f"nnUNet_preprocessed={nnunet_dir}/preprocessed"]
    if results is not None:
        parts.append(f"nnUNet_results={nnunet_dir}/{results}")
    if processes is not None:
        parts.append(f"nnUNet_def_n_proc={processes}")
    parts.append('nnUNet_extTrainer="$(python -m pgps trainers --ext-path)"')
    parts.append('OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"')
    # a training job started for a fold that another job still trains (a restarted Snakemake resubmits running
    # jobs) waits for it, then resumes with --c, instead of failing with exit 2 and being retried (pgps.nnunet.runlock)
    parts.append('PGPS_WAIT_FOR_LOCK="${PGPS_WAIT_FOR_LOCK:-1}"')
    return f"export {' '.join(parts)};"


def demo_env():
    """nnU-Net's paths and pgps's short-run settings for a shell command."""
    return nnunet_env(NNUNET, "results", DEMO["processes"])


def demo_runs():
    """(dataset, trainer, fold, fold folder) of every demo training run."""
    return [
        (d, t, f, demo_fold_dir(d, t, f)) for d in DEMO["datasets"] for t in DEMO["trainers"] for f in DEMO["folds"]
    ]


def demo_manifest():
    """Run manifest rows of the demo (pgps collect --runs)."""
    return [
        {"dataset": d, **factors_of_trainer(t), "fold": f, "seed": DEMO["seed"], "trainer": t,
         "plans": "nnUNetPlans", "configuration": DEMO["configuration"], "fold_dir": folder}
        for d, t, f, folder in demo_runs()
    ]  # fmt: skip


def demo_targets():
    if not DEMO["enabled"] or not DEMO["datasets"]:
        return []
    return collection_outputs("demo")


# -- the article's experiment grid (workflow/rules/{datasets,preprocess,train,report}.smk) --

sys.path.insert(0, workflow.basedir)  # this checkout's pgps, also when it is not installed
from pgps.experiments.grid import (  # noqa: E402
    BACKBONES,
    TRANSFORMER_PLANS,
    TRANSFORMERS,
    check_config,
    dataset_folder,
    factors_of_trainer,
    grid_runs,
)
from pgps.experiments.config_files import check_config_files  # noqa: E402
from pgps.report.outputs import CAPTIONS as REPORT_CAPTIONS  # noqa: E402 (light: no pandas/matplotlib)
from pgps.report.outputs import OUTPUTS as REPORT_OUTPUTS  # noqa: E402

check_config_files(workflow.configfiles)  # a key repeated in one mapping (YAML keeps the last silently)
check_config(config)  # what the schema cannot say (patch divisibility, duplicate dataset ids): fail now, not in a job

ARTICLE = config["article"]
ARTICLE_NNUNET = os.path.abspath(ARTICLE["nnunet_dir"])
ARTICLE_DATASETS = ARTICLE["datasets"]
ARTICLE_RUNS = grid_runs(ARTICLE) if ARTICLE["enabled"] else []
ARTICLE_FOLDERS = {dataset_folder(d): key for key, d in ARTICLE_DATASETS.items()}
if _missing := sorted({r.dataset for r in ARTICLE_RUNS if not (ARTICLE_DATASETS[r.dataset]["raw_path"] or ARTICLE_DATASETS[r.dataset]["url"])}):
    logger.warning(
        f"pgps: no data source yet for {', '.join(_missing)}: their conversion jobs will stop with instructions "
        "until article.datasets.<name>.raw_path is set (see docs/pages/how-to/slurm.md, section Datasets)"
    )


def article_dataset(folder):
    """The config entry of a dataset from its nnU-Net folder name (DatasetXXX_name)."""
    return ARTICLE_DATASETS[ARTICLE_FOLDERS[folder]]


def article_fold_dir(run):
    return run.fold_dir(ARTICLE_NNUNET, dataset_folder(ARTICLE_DATASETS[run.dataset]))


def article_source(wildcards):
    """A dataset's download (when it has a url and no raw_path); its raw_path is a parameter instead,
    so that a dry run builds the whole DAG before anyone has the data."""
    d = article_dataset(wildcards.folder)
    if d["raw_path"] or not d["url"]:
        return []
    return f"{ARTICLE['downloads']}/{wildcards.folder}/{os.path.basename(d['url'].split('?')[0])}"


def article_nnunet_env(results_dir="results"):
    """nnU-Net's paths and the pgps trainers for a shell command."""
    return nnunet_env(ARTICLE_NNUNET, results_dir)


def article_train_minutes(wildcards):
    """SLURM time limit of one training job: an hour plus two days per 100% of training length on a
    current GPU, at most 24 h (most clusters' limit). A longer run is re-submitted (the profile's
    retries) and resumes from nnU-Net's checkpoint."""
    percent = int(wildcards.trainer.rsplit("_", 1)[1][:-3]) if wildcards.trainer.endswith("pct") else 100
    return int(min(24 * 60, 60 + 48 * 60 * percent / 100))


def article_targets():
    return collection_outputs("all") if ARTICLE["enabled"] else []


def article_missing_data(folder):
    """A shell prefix that stops a conversion job with instructions when the dataset has neither a
    download nor a raw_path (a dry run still builds the whole DAG)."""
    import shlex

    key = ARTICLE_FOLDERS[folder]
    d = ARTICLE_DATASETS[key]
    if d["raw_path"]:
        return ""
    message = (
        f"dataset {key} has no download: set article.datasets.{key}.raw_path to the archive or folder you "
        f"obtained from {d.get('source', 'its publisher')}. {d.get('instructions', '')}"
    ).strip()
    return f"echo {shlex.quote(message)} >&2; exit 1;"


def article_grid_datasets():
    """The datasets the enabled experiments train on (key -> config entry), in config order."""
    used = {run.dataset for run in ARTICLE_RUNS}
    return {key: d for key, d in ARTICLE_DATASETS.items() if key in used}


def article_validation(run):
    return f"{article_fold_dir(run)}/validation/summary.json"


def article_finished(scope):
    """The runs a collection waits for: all of them, or (scope "finished") those already done."""
    if scope == "all":
        return [article_validation(run) for run in ARTICLE_RUNS]
    return [path for run in ARTICLE_RUNS if os.path.exists(path := article_validation(run))]


def article_manifest(scope):
    """Rows of the run manifest (pgps collect --runs): every factor, nnU-Net's names and the fold folder."""
    finished = set(article_finished(scope)) if scope == "finished" else None
    return [
        {**run.as_dict(), "trainer": run.trainer, "plans": run.plans, "configuration": run.configuration,
         "fold_dir": article_fold_dir(run)}
        for run in ARTICLE_RUNS
        if finished is None or article_validation(run) in finished
    ]  # fmt: skip


def article_train_input(wildcards):
    return f"{ARTICLE_NNUNET}/preprocessed/{wildcards.folder}/{wildcards.plans}.json"


def article_train_env(wildcards, threads):
    seed = wildcards.results_dir.removeprefix("results").removeprefix("_seed") or "0"
    short = "".join(
        f" {name}={value}"
        for name, value, default in [
            ("PGPS_EPOCHS", ARTICLE["epochs"], 1000),
            ("PGPS_ITERATIONS_PER_EPOCH", ARTICLE["iterations_per_epoch"], 250),
            ("PGPS_VAL_ITERATIONS", ARTICLE["val_iterations"], 50),
        ]
        if value != default
    )
    return (
        f"{article_nnunet_env(wildcards.results_dir)} export nnUNet_n_proc_DA={threads}"
        f" nnUNet_def_n_proc={threads} PGPS_SEED={seed}{short} {checkpoint_env(ARTICLE)};"
    )


def checkpoint_env(section):
    """How often the trainers write checkpoint_latest.pth (a section's checkpoint_epochs/_minutes)."""
    return (
        f"PGPS_CHECKPOINT_EPOCHS={section['checkpoint_epochs']} PGPS_CHECKPOINT_MINUTES={section['checkpoint_minutes']}"
    )


def train_attempt(console):
    """The start of a training job's shell command. A cluster sends SIGTERM (and the warning signal the SLURM profile
    asks for) to every process of the job; the trainer stops gracefully on it (pgps.nnunet.preemption: the iteration
    finished and checkpointed, exit 75). This shell traps both signals, so that it waits for the trainer instead of
    ending the job step under it (a trap, not an ignore: the trainer and its worker pools keep the default action,
    which nnU-Net's Pool.terminate relies on); the rules run the trainer in this shell, not in a subshell, and the
    tee that writes the output (also to the console: ``console``) ignores them. Snakemake removes a job's log before
    it runs, so every attempt is also appended to ``<log without .log>.attempts.log``, under a header line."""
    shown = "" if console else " >/dev/null"
    return (
        'trap true TERM USR1; attempts={log:q}; attempts="${{attempts%.log}}.attempts.log";'
        f" exec > >(trap '' TERM USR1; exec tee -a {{log:q}} \"$attempts\"{shown}) 2>&1;"
        ' echo "== pgps: attempt started $(date -Is) on $(hostname) (SLURM job ${{SLURM_JOB_ID:-none}})";'
    )


# -- collection and rendering (workflow/rules/report.smk): one "collection" per run manifest (demo, all, finished) --
# demo: the embedded default's runs; all: every run of the article's grid; finished: the grid's
# runs finished so far (target article_partial).

COLLECTION_FIGURES = {"demo": f"{PAPER_FIGURES}/demo", "all": PAPER_FIGURES, "finished": f"{RESULTS}/partial_figures"}


def collections():
    enabled = ["demo"] if DEMO["enabled"] and DEMO["datasets"] else []
    return enabled + (["all", "finished"] if ARTICLE["enabled"] else [])


def collection_manifest(collection):
    return demo_manifest() if collection == "demo" else article_manifest(collection)


def collection_finished(collection):
    """The validation summaries a collection waits for."""
    if collection == "demo":
        return [os.path.join(folder, "validation", "summary.json") for *_, folder in demo_runs()]
    return article_finished(collection)


def collection_preprocessed(collection):
    """Dataset key -> nnU-Net preprocessed folder, for the task characteristics (none for partial results)."""
    if collection == "demo":
        return {d: f"{NNUNET}/preprocessed/{demo_name(d)}" for d in DEMO["datasets"]}
    if collection == "all":
        return {k: f"{ARTICLE_NNUNET}/preprocessed/{dataset_folder(d)}" for k, d in article_grid_datasets().items()}
    return {}


def collection_outputs(collection):
    """Every file pgps report writes for a collection."""
    return [f"{COLLECTION_FIGURES[collection]}/{name}" for name in REPORT_OUTPUTS]


def report_item(collection, name):
    """A rendered file, flagged for `snakemake --report` when it is a figure, a table's CSV or a comparison's
    Markdown. Snakemake turns category and file names into reStructuredText link targets: names without a colon
    (one would end the target's name) and no file name twice (tables/x.csv, compare/x.md)."""
    path = f"{COLLECTION_FIGURES[collection]}/{name}"
    if name.startswith("figures/") and name.endswith(".png"):  # the figure's number and caption as its labels
        number, _, caption = REPORT_CAPTIONS[os.path.basename(name).removesuffix(".png")].partition(": ")
        return report(path, category=f"{collection} figures", caption="../report/figure.rst",
                      labels={"figure": number, "caption": caption})  # fmt: skip
    if name.startswith("tables/") and name.endswith(".csv"):
        return report(path, category=f"{collection} tables", caption="../report/table.rst")
    if name.startswith("compare/") and name.endswith(".md"):
        return report(path, category=f"{collection} vs published", caption="../report/table.rst")
    return path


# -- training at scale and held-out scores (workflow/rules/train.smk, heldout.smk) --
# GPUs per run (an experiment's `gpus`), CPU cores per GPU for nnU-Net's augmentation workers (PGPS_CPUS_PER_GPU,
# the same variable the slurm profile turns into --cpus-per-gpu), plans variants, held-out predictions/ensembles.

from pgps.experiments import heldout as HELDOUT  # noqa: E402
from pgps.experiments.grid import VARIANT_PLANS, grid_gpus, grid_variants  # noqa: E402

CPUS_PER_GPU = int(os.environ.get("PGPS_CPUS_PER_GPU", 12))
ARTICLE_GPUS = grid_gpus(ARTICLE) if ARTICLE["enabled"] else {}
ARTICLE_NPZ = HELDOUT.npz_runs(ARTICLE) if ARTICLE["enabled"] else set()
ARTICLE_RUN_OF = {
    (r.results_dir(), dataset_folder(ARTICLE_DATASETS[r.dataset]), r.trainer, r.plans, r.configuration, r.fold): r
    for r in ARTICLE_RUNS
}
ARTICLE_HELDOUT = HELDOUT.heldout_models(ARTICLE) if ARTICLE["enabled"] else []
ARTICLE_ENSEMBLES = {e.name: e for e in HELDOUT.ensembles(ARTICLE)} if ARTICLE["enabled"] else {}


def article_run(wildcards):
    """The grid run a train job's wildcards name."""
    key = (wildcards.results_dir, wildcards.folder, wildcards.trainer, wildcards.plans, wildcards.configuration,
           int(wildcards.fold))  # fmt: skip
    return ARTICLE_RUN_OF[key]


def article_run_gpus(wildcards):
    return ARTICLE_GPUS.get(article_run(wildcards), 1)


def article_train_workers(wildcards, threads):
    """nnUNet_n_proc_DA, nnU-Net's augmentation workers per GPU process: the job's cores over its GPUs. The cores are
    the threads Snakemake grants the job, the rule's own capped by --cores (a local run with fewer cores scales the
    workers down; a SLURM job gets the rule's threads through the plugin's --cpus-per-gpu). A dry run without --cores
    caps every job at 1 core, which no real run does: there the rule's own threads, so that `snakemake -n` shows the
    workers a SLURM job will start (a dry run with an explicit --cores 1 shows them too)."""
    if workflow.dryrun and workflow.resource_settings.cores == 1:
        threads = article_train_threads(wildcards)
    return max(1, threads // article_run_gpus(wildcards))


def article_train_threads(wildcards):
    """CPU cores of a training job: PGPS_CPUS_PER_GPU per GPU (nnU-Net's augmentation workers run per GPU)."""
    return CPUS_PER_GPU * article_run_gpus(wildcards)


def article_train_flags(wildcards):
    """nnUNetv2_train options of a run: -num_gpus for multi-GPU runs, --npz where an ensemble needs probabilities."""
    run = article_run(wildcards)
    gpus = ARTICLE_GPUS.get(run, 1)
    return " ".join(([f"-num_gpus {gpus}"] if gpus > 1 else []) + (["--npz"] if run in ARTICLE_NPZ else []))


def article_variant_args(folder):
    """`pgps plans-variant` calls that add every plans variant the grid trains on a dataset."""
    key = ARTICLE_FOLDERS[folder]
    variants = grid_variants(ARTICLE_RUNS).get(key, [])
    return [f"--patch-size {' '.join(map(str, patch))} --batch-size {batch}" for patch, batch in variants]


AMOS22_OUTPUTS = HELDOUT.amos22_outputs()


def heldout_targets():
    """The AMOS22 study's rendered tables (their rule waits for every held-out score) when the config scores any."""
    if not (ARTICLE["enabled"] and HELDOUT.evaluations(ARTICLE, ARTICLE_NNUNET)):
        return []
    return [f"{PAPER_FIGURES}/{name}" for name in AMOS22_OUTPUTS]


def heldout_model_summaries(model):
    """The training outputs (validation summaries) of every fold of a held-out Model."""
    base = model.model_dir(ARTICLE_NNUNET, dataset_folder(ARTICLE_DATASETS[model.run.dataset]))
    return [f"{base}/fold_{f}/validation/summary.json" for f in model.folds]


def heldout_ensemble_members(name):
    return [
        m.prediction_dir(ARTICLE_NNUNET, dataset_folder(ARTICLE_DATASETS[m.run.dataset]))
        for _, m in ARTICLE_ENSEMBLES[name].members
    ]


def heldout_ensemble_postprocessing(name):
    """The post-processing files an ensemble applies: one per member (before), the ensemble's (after), none."""
    e = ARTICLE_ENSEMBLES[name]
    if e.order == "before":
        return [m.postprocessing(ARTICLE_NNUNET, dataset_folder(ARTICLE_DATASETS[m.run.dataset])) for _, m in e.members]
    return [e.postprocessing(ARTICLE_NNUNET)] if e.order == "after" else []


def heldout_folder(prediction):
    """The dataset folder of a held-out prediction path (relative to the nnU-Net folder)."""
    parts = prediction.split("/")
    if parts[0] == "heldout_ensembles":
        return dataset_folder(ARTICLE_DATASETS[ARTICLE_ENSEMBLES[parts[1]].dataset])
    return parts[2]


def heldout_model_of(wildcards):
    """The held-out Model a prediction/post-processing job's wildcards name."""
    folds = tuple(int(f) for f in wildcards.folds.split("_"))
    key = (wildcards.results_dir, wildcards.folder, wildcards.trainer, wildcards.plans, wildcards.configuration)
    for (results_dir, folder, trainer, plans, configuration, fold), run in ARTICLE_RUN_OF.items():
        if (results_dir, folder, trainer, plans, configuration) == key:
            return HELDOUT.Model(run, folds)
    raise ValueError(f"no trained model for {key}")


def heldout_fold_summaries(wildcards):
    """The training outputs of every fold a held-out prediction averages."""
    return heldout_model_summaries(heldout_model_of(wildcards))
