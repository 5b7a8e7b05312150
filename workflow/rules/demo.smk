# The embedded default's training run: synthesize -> plan/preprocess (+ light CPU configuration)
# -> train every trainer x fold with nnU-Net; workflow/rules/report.smk collects and renders (collection "demo").
# All nnU-Net work goes through its own CLI; the curriculum is nnUNet_extTrainer's pgps trainers.

wildcard_constraints:
    id="[0-9]{3}",
    fold="[0-9]+",
    trainer="nnUNetTrainer[A-Za-z0-9_]*",


rule demo_synthesize:
    output:
        f"{NNUNET}/raw/Dataset{{id}}_{{dataset}}/dataset.json",
    benchmark:
        f"{RESULTS}/benchmarks/demo/synthesize_{{dataset}}_{{id}}.tsv",
    log:
        f"{RESULTS}/logs/demo/synthesize_{{dataset}}_{{id}}.log",
    params:
        preset=lambda wildcards: DEMO["datasets"][wildcards.dataset]["preset"],
        cases=lambda wildcards: DEMO["datasets"][wildcards.dataset]["cases"],
        seed=lambda wildcards: DEMO["datasets"][wildcards.dataset]["seed"],
        raw=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps synth --preset {params.preset} --cases {params.cases} --seed {params.seed}"
        " --out {params.raw:q} --dataset-id {wildcards.id} --name {wildcards.dataset} --overwrite > {log:q} 2>&1"


rule demo_preprocess:
    input:
        f"{NNUNET}/raw/Dataset{{id}}_{{dataset}}/dataset.json",
    output:
        f"{NNUNET}/preprocessed/Dataset{{id}}_{{dataset}}/nnUNetPlans.json",
    benchmark:
        f"{RESULTS}/benchmarks/demo/preprocess_{{dataset}}_{{id}}.tsv",
    log:
        f"{RESULTS}/logs/demo/preprocess_{{dataset}}_{{id}}.log",
    params:
        env=demo_env(),
        configuration=DEMO["configuration"],
    threads: 2
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} nnUNetv2_plan_and_preprocess -d {wildcards.id} -c 3d_fullres -np {threads} -npfp {threads}"
        " && python -m pgps light-plans --plans {output:q} --name {params.configuration}) > {log:q} 2>&1"


rule demo_train:
    input:
        f"{NNUNET}/preprocessed/Dataset{{id}}_{{dataset}}/nnUNetPlans.json",
    output:
        summary=f"{NNUNET}/results/Dataset{{id}}_{{dataset}}/{{trainer}}__nnUNetPlans__{DEMO['configuration']}/fold_{{fold}}/pgps_summary.json",
        validation=f"{NNUNET}/results/Dataset{{id}}_{{dataset}}/{{trainer}}__nnUNetPlans__{DEMO['configuration']}/fold_{{fold}}/validation/summary.json",
    benchmark:
        f"{RESULTS}/benchmarks/demo/train_{{dataset}}_{{id}}_{{trainer}}_{{fold}}.tsv",
    log:
        f"{RESULTS}/logs/demo/train_{{dataset}}_{{id}}_{{trainer}}_{{fold}}.log",
    params:
        env=demo_env(),
        configuration=DEMO["configuration"],
        short=(
            f"PGPS_EPOCHS={DEMO['epochs']} PGPS_ITERATIONS_PER_EPOCH={DEMO['iterations_per_epoch']}"
            f" PGPS_VAL_ITERATIONS={DEMO['val_iterations']} PGPS_SEED={DEMO['seed']} nnUNet_n_proc_DA=0"
            f" {checkpoint_env(DEMO)} PGPS_PROGRESS_EVERY={DEMO['progress_every']}"
        ),
    threads: 2
    conda:
        "../../envs/pgps.yaml"
    shell:
        # nnU-Net's epoch lines go to the console (progress) and to the log
        train_attempt(console=True) + " {params.env} export {params.short} OMP_NUM_THREADS={threads};"
        # always --c: a re-run resumes from checkpoint_final (only the validation is left) or checkpoint_latest,
        # and starts afresh when there is none (see train.smk)
        " nnUNetv2_train {wildcards.id} {params.configuration} {wildcards.fold} -tr {wildcards.trainer} -device cpu"
        " --c"
