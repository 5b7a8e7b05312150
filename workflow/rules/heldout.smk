# Held-out predictions, ensembles and their scores (pgps.experiments.heldout): a dataset's imagesTs/labelsTs (AMOS22's
# official validation cases with --format amos22_task1|amos22_task2) predicted by trained models, ensembled
# with post-processing before or after (pgps ensemble), scored by Dice and NSD per case and class (pgps
# surface), and rendered as the AMOS22 large-batch study's Tables 1-4 (pgps amos22-report).

wildcard_constraints:
    folds="[0-4](_[0-4])*",
    ensemble="[A-Za-z0-9_]+",


rule heldout_predict:
    """A trained model's held-out predictions with probabilities, the mean of the listed folds."""
    input:
        heldout_fold_summaries,
        raw=f"{ARTICLE_NNUNET}/raw/{{folder}}/dataset.json",
    output:
        directory(f"{ARTICLE_NNUNET}/heldout/{{results_dir}}/{{folder}}/{{trainer}}__{{plans}}__{{configuration}}/folds_{{folds}}"),
    log:
        f"{RESULTS}/logs/heldout/{{results_dir}}/{{folder}}/{{trainer}}__{{plans}}__{{configuration}}_folds_{{folds}}.log",
    params:
        env=lambda wildcards: article_nnunet_env(wildcards.results_dir),
        dataset_id=lambda wildcards: article_dataset(wildcards.folder)["dataset_id"],
        folds=lambda wildcards: wildcards.folds.replace("_", " "),
        images=lambda wildcards, input: os.path.join(os.path.dirname(input.raw), "imagesTs"),
        device=ARTICLE["device"],
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=6 * 60,
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} nnUNetv2_predict -i {params.images:q} -o {output:q} -d {params.dataset_id}"
        " -c {wildcards.configuration} -tr {wildcards.trainer} -p {wildcards.plans} -f {params.folds}"
        " --save_probabilities -device {params.device} -npp 2 -nps 2) > {log:q} 2>&1"


rule heldout_postprocessing:
    """nnU-Net's post-processing decision for one model, on its cross-validation predictions."""
    input:
        heldout_fold_summaries,
    output:
        f"{ARTICLE_NNUNET}/postprocessing/{{results_dir}}/{{folder}}/{{trainer}}__{{plans}}__{{configuration}}/folds_{{folds}}/postprocessing.pkl",
    log:
        f"{RESULTS}/logs/postprocessing/{{results_dir}}/{{folder}}/{{trainer}}__{{plans}}__{{configuration}}_folds_{{folds}}.log",
    params:
        env=lambda wildcards: article_nnunet_env(wildcards.results_dir),
        model=lambda wildcards: heldout_model_of(wildcards).model_dir(ARTICLE_NNUNET, wildcards.folder),
        folds=lambda wildcards: wildcards.folds.replace("_", " "),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    threads: 4
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} python -m pgps determine-postprocessing --models {params.model:q} --folds {params.folds}"
        " --out {params.out:q} --processes {threads}) > {log:q} 2>&1"


rule heldout_ensemble_postprocessing:
    """nnU-Net's post-processing decision for an ensemble, on the ensemble of its members' cross-validation
    predictions (order `after`; the members train with --npz)."""
    input:
        lambda wildcards: [
            f for _, m in ARTICLE_ENSEMBLES[wildcards.ensemble].members
            for f in heldout_model_summaries(m)
        ],
    output:
        f"{ARTICLE_NNUNET}/postprocessing_ensembles/{{ensemble}}/postprocessing.pkl",
    log:
        f"{RESULTS}/logs/postprocessing/ensemble_{{ensemble}}.log",
    params:
        env=article_nnunet_env(),
        models=lambda wildcards: " ".join(
            m.model_dir(ARTICLE_NNUNET, dataset_folder(ARTICLE_DATASETS[m.run.dataset]))
            for _, m in ARTICLE_ENSEMBLES[wildcards.ensemble].members
        ),
        folds=lambda wildcards: ARTICLE_ENSEMBLES[wildcards.ensemble].members[0][1].folds_key.replace("_", " "),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    threads: 4
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} python -m pgps determine-postprocessing --models {params.models} --folds {params.folds}"
        " --out {params.out:q} --processes {threads}) > {log:q} 2>&1"


rule heldout_ensemble:
    """The members' held-out probabilities averaged (nnU-Net's ensembling), post-processed before or after."""
    input:
        members=lambda wildcards: heldout_ensemble_members(wildcards.ensemble),
        postprocessing=lambda wildcards: heldout_ensemble_postprocessing(wildcards.ensemble),
    output:
        directory(f"{ARTICLE_NNUNET}/heldout_ensembles/{{ensemble}}"),
    log:
        f"{RESULTS}/logs/heldout/ensemble_{{ensemble}}.log",
    params:
        env=article_nnunet_env(),
        order=lambda wildcards: ARTICLE_ENSEMBLES[wildcards.ensemble].order,
    threads: 4
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} python -m pgps ensemble --members {input.members:q} --out {output:q} --order {params.order}"
        " --postprocessing {input.postprocessing:q} --processes {threads}) > {log:q} 2>&1"


rule heldout_scores:
    """Dice and NSD per case and class of a held-out prediction against the dataset's labelsTs."""
    input:
        prediction=f"{ARTICLE_NNUNET}/{{prediction}}",
        raw=lambda wildcards: f"{ARTICLE_NNUNET}/raw/{heldout_folder(wildcards.prediction)}/dataset.json",
    output:
        f"{ARTICLE_NNUNET}/{{prediction}}.scores.csv",
    log:
        f"{RESULTS}/logs/scores/{{prediction}}.log",
    wildcard_constraints:
        prediction="heldout(_ensembles)?/.+",
    params:
        labels=lambda wildcards, input: os.path.join(os.path.dirname(input.raw), "labelsTs"),
        tolerance=ARTICLE["nsd_tolerance_mm"],
    threads: 2
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps surface --pred {input.prediction:q} --ref {params.labels:q}"
        " --dataset-json {input.raw:q} --out {output:q} --tolerance {params.tolerance} --no-progress > {log:q} 2>&1"


rule heldout_manifest:
    """One row per scored held-out prediction (pgps.experiments.heldout.EVALUATION_COLUMNS)."""
    output:
        f"{RESULTS}/heldout.csv",
    params:
        rows=lambda wildcards: HELDOUT.evaluations(ARTICLE, ARTICLE_NNUNET),
    log:
        f"{RESULTS}/logs/heldout_manifest.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/write_heldout_manifest.py"


rule amos22_report:
    """The AMOS22 study's Tables 1-4 beside the published values (missing scores are gaps)."""
    input:
        manifest=f"{RESULTS}/heldout.csv",
        scores=lambda wildcards: [r["scores"] for r in HELDOUT.evaluations(ARTICLE, ARTICLE_NNUNET)],
        code=REPORT_CODE,
    output:
        [f"{PAPER_FIGURES}/{name}" for name in AMOS22_OUTPUTS],
    log:
        f"{RESULTS}/logs/amos22_report.log",
    params:
        out=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),  # <out>/tables/<name>
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pgps amos22-report --manifest {input.manifest:q} --out {params.out:q} > {log:q} 2>&1"
