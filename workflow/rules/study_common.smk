# Paths and helpers of the synthetic study (workflow/rules/study.smk); no rules here.

from pgps.experiments import study as _study

STUDY = config["study"]
STUDY_NNUNET = os.path.abspath(STUDY["nnunet_dir"])
STUDY_DATASETS = {r.dataset_id: r for r in _study.replicates(STUDY)} if STUDY["foreground_shares"] else {}
STUDY_RESULTS = f"{RESULTS}/study"
STUDY_BENCHMARKS = f"{RESULTS}/benchmarks/study"


def study_dataset(wildcards):
    """The replicate dataset of a job's nnU-Net id (its level and seed)."""
    return STUDY_DATASETS[int(wildcards.id)]


def study_env():
    """nnU-Net's paths (the study's own folder) and the pgps trainers for a shell command."""
    return nnunet_env(STUDY_NNUNET, processes=1)


def study_preprocessed(dataset_id):
    return f"{STUDY_NNUNET}/preprocessed/{STUDY_DATASETS[int(dataset_id)].folder}"


def study_manifest_rows():
    return _study.manifest({**STUDY, "nnunet_dir": STUDY_NNUNET})


def study_all_summaries():
    return [f"{row['fold_dir']}/validation/summary.json" for row in study_manifest_rows()]


def study_targets():
    """Every file the study renders (the target `study`; part of `all` when study.enabled)."""
    return [f"{STUDY['out']}/{name}" for name in _study.study_outputs()]
