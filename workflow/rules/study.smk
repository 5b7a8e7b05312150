# The synthetic study (target `study`; config section `study`, off in `make demo`): imbalance levels of
# pgps synth's `imbalance` preset, one dataset per level and seed (the replicate's own synthesis seed) ->
# nnU-Net planning and preprocessing (+ the light CPU configuration and a held-out split) -> CPS /
# PGPS-Efficiency / PGPS-Performance x training lengths, trained with the replicate's seed and scored on the
# held-out cases by `pgps train-evaluate` (one process per dataset and length)
# -> pgps collect -> pgps study-report into paper_figures/study/. Helpers: workflow/rules/study_common.smk.
# Every job writes a benchmark file (wall and CPU time) under results/benchmarks/study/.

wildcard_constraints:
    level="fg[0-9p]+",
    length="[0-9]+",
    seed="[0-9]+",


rule study_synthesize:
    output:
        f"{STUDY_NNUNET}/raw/Dataset{{id}}_{{level}}/dataset.json",
    benchmark:
        f"{STUDY_BENCHMARKS}/synthesize_{{level}}_{{id}}.tsv"
    log:
        f"{RESULTS}/logs/study/synthesize_{{level}}_{{id}}.log",
    params:
        knobs=lambda wildcards: (
            f"--preset {STUDY['preset']} --foreground-share {study_dataset(wildcards).level.share}"
            f" --cases {STUDY['cases']} --shape {' '.join(map(str, STUDY['shape']))} --seed {study_dataset(wildcards).seed}"
        ),
        raw=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps synth {params.knobs} --out {params.raw:q} --dataset-id {wildcards.id}"
        " --name {wildcards.level} --overwrite > {log:q} 2>&1"


rule study_preprocess:
    """nnU-Net plans and preprocesses a level; pgps light-plans adds the study's CPU configuration (P_max, b_base
    and network of the config)."""
    input:
        lambda wildcards: f"{STUDY_NNUNET}/raw/{study_dataset(wildcards).folder}/dataset.json",
    output:
        f"{STUDY_NNUNET}/preprocessed/Dataset{{id}}_{{level}}/nnUNetPlans.json",
    benchmark:
        f"{STUDY_BENCHMARKS}/preprocess_{{level}}_{{id}}.tsv"
    log:
        f"{RESULTS}/logs/study/preprocess_{{level}}_{{id}}.log",
    params:
        env=study_env(),
        light=(
            f"--name {STUDY['configuration']} --patch-size {' '.join(map(str, STUDY['patch_size']))}"
            f" --batch-size {STUDY['batch_size']} --features {' '.join(map(str, STUDY['features']))}"
        ),
    threads: 1
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} nnUNetv2_plan_and_preprocess -d {wildcards.id} -c 3d_fullres -np {threads} -npfp {threads}"
        " && python -m pgps light-plans --plans {output:q} {params.light}) > {log:q} 2>&1"


rule study_split:
    """The held-out split replaces nnU-Net's five folds: fold 0 trains on the first train_cases cases."""
    input:
        f"{STUDY_NNUNET}/preprocessed/Dataset{{id}}_{{level}}/nnUNetPlans.json",
    output:
        f"{STUDY_NNUNET}/preprocessed/Dataset{{id}}_{{level}}/splits_final.json",
    log:
        f"{RESULTS}/logs/study/split_{{level}}_{{id}}.log",
    params:
        train_cases=STUDY["train_cases"],
    conda:
        "../../envs/pgps.yaml"
    script:
        "../scripts/study_split.py"


rule study_train:
    """One process trains the study's modes on one dataset (level and seed) and length, one after the other, with
    the dataset's seed, and scores each on the held-out cases (pgps train-evaluate); single-threaded, in-process
    data loading."""
    input:
        plans=lambda wildcards: f"{study_preprocessed(wildcards.id)}/nnUNetPlans.json",
        split=lambda wildcards: f"{study_preprocessed(wildcards.id)}/splits_final.json",
    output:
        [
            f"{STUDY_NNUNET}/results/length{{length}}_seed{{seed}}/Dataset{{id}}_{{level}}/{_study.trainer(mode)}"
            f"__nnUNetPlans__{STUDY['configuration']}/fold_{_study.FOLD}/validation/summary.json"
            for mode in STUDY["modes"]
        ],
    benchmark:
        f"{STUDY_BENCHMARKS}/train_{{level}}_{{id}}_length{{length}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/study/train_{{level}}_{{id}}_length{{length}}_seed{{seed}}.log",
    params:
        env=study_env(),
        results=lambda wildcards: f"{STUDY_NNUNET}/{_study.results_dir(int(wildcards.length), int(wildcards.seed))}",
        short=lambda wildcards: (
            f"PGPS_EPOCHS={STUDY['epochs']} PGPS_ITERATIONS_PER_EPOCH={_study.iterations(STUDY, int(wildcards.length))}"
            f" PGPS_VAL_ITERATIONS={STUDY['val_iterations']} PGPS_SEED={wildcards.seed} PGPS_PROGRESS_EVERY=0"
            " nnUNet_n_proc_DA=0 OMP_NUM_THREADS=1"
        ),
        run=(
            f"{STUDY['configuration']} {_study.FOLD} -tr {' '.join(_study.trainer(m) for m in STUDY['modes'])}"
            f" {'--mirroring' if STUDY['mirroring_tta'] else '--no-mirroring'}"
        ),
    threads: 1
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} export nnUNet_results={params.results:q} {params.short};"
        " python -m pgps train-evaluate {wildcards.id} {params.run} --threads {threads} --overwrite) > {log:q} 2>&1"


rule study_manifest:
    output:
        runs=f"{STUDY_RESULTS}/collected/runs.csv",
        study=f"{STUDY_RESULTS}/collected/study.json",
    log:
        f"{RESULTS}/logs/study/manifest.log",
    params:
        runs=lambda wildcards: study_manifest_rows(),
        study={**STUDY, "nnunet_dir": STUDY_NNUNET},
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/write_study.py"


rule study_characteristics:
    input:
        [f"{study_preprocessed(i)}/nnUNetPlans.json" for i in STUDY_DATASETS],
    output:
        f"{STUDY_RESULTS}/characteristics.csv",
    log:
        f"{RESULTS}/logs/study/characteristics.log",
    params:
        datasets=" ".join(f"{r.name}={study_preprocessed(i)}" for i, r in STUDY_DATASETS.items()),
        configuration=STUDY["configuration"],
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps characteristics --dataset {params.datasets} --plans nnUNetPlans"
        " --configuration {params.configuration} --out {output:q} > {log:q} 2>&1"


use rule collect as study_collect with:
    input:
        runs=f"{STUDY_RESULTS}/collected/runs.csv",
        finished=study_all_summaries(),
        characteristics=f"{STUDY_RESULTS}/characteristics.csv",
    output:
        results=f"{STUDY_RESULTS}/collected/results.csv",
        epochs=f"{STUDY_RESULTS}/collected/epochs.csv",
        schedules=f"{STUDY_RESULTS}/collected/schedules.json",
    log:
        f"{RESULTS}/logs/study/collect.log",


rule study_render:
    input:
        results=f"{STUDY_RESULTS}/collected/results.csv",
        study=f"{STUDY_RESULTS}/collected/study.json",
        code=REPORT_CODE,
    output:
        [
            report(f"{STUDY['out']}/{name}", category="study", caption="../report/figure.rst")
            if name.endswith(".png")
            else f"{STUDY['out']}/{name}"
            for name in _study.study_outputs()
        ],
    log:
        f"{RESULTS}/logs/study/render.log",
    params:
        results=lambda wildcards, input: os.path.dirname(input.results),
        out=lambda wildcards, output: os.path.dirname(output[-1]),  # results.md
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pgps study-report --results {params.results:q} --study {input.study:q} --out {params.out:q}"
        " > {log:q} 2>&1"
