# nnU-Net's planning and preprocessing of the article's datasets (3d_fullres), plus the plans the
# grid's backbones need: ResEnc presets (nnU-Net's planners, sharing the preprocessed data) and the
# transformer configurations (pgps backbone-plans on a copy of nnUNetPlans, same data).


rule preprocess:
    input:
        f"{ARTICLE_NNUNET}/raw/{{folder}}/dataset.json",
    output:
        f"{ARTICLE_NNUNET}/preprocessed/{{folder}}/nnUNetPlans.json",
    benchmark:
        f"{RESULTS}/benchmarks/preprocess/{{folder}}.tsv",
    log:
        f"{RESULTS}/logs/preprocess/{{folder}}.log",
    params:
        env=article_nnunet_env(),
        dataset_id=lambda wildcards: article_dataset(wildcards.folder)["dataset_id"],
    threads: ARTICLE["preprocess_processes"]
    resources:
        mem_mb=64000,
        runtime=12 * 60,
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} nnUNetv2_plan_and_preprocess -d {params.dataset_id} -c 3d_fullres -np {threads}"
        " -npfp {threads} --verify_dataset_integrity) > {log:q} 2>&1"


rule resenc_plans:
    input:
        f"{ARTICLE_NNUNET}/preprocessed/{{folder}}/nnUNetPlans.json",
    output:
        f"{ARTICLE_NNUNET}/preprocessed/{{folder}}/nnUNetResEncUNet{{size}}Plans.json",
    log:
        f"{RESULTS}/logs/preprocess/{{folder}}_ResEnc{{size}}.log",
    wildcard_constraints:
        size="M|L|XL",
    params:
        env=article_nnunet_env(),
        dataset_id=lambda wildcards: article_dataset(wildcards.folder)["dataset_id"],
    conda:
        "../../envs/pgps.yaml"
    shell:
        # the ResEnc planners reuse nnUNetPlans_3d_fullres data: planning only, no preprocessing
        "({params.env} nnUNetv2_plan_experiment -d {params.dataset_id} -pl nnUNetPlannerResEnc{wildcards.size})"
        " > {log:q} 2>&1"


rule transformer_plans:
    input:
        f"{ARTICLE_NNUNET}/preprocessed/{{folder}}/nnUNetPlans.json",
    output:
        f"{ARTICLE_NNUNET}/preprocessed/{{folder}}/{TRANSFORMER_PLANS}.json",
    log:
        f"{RESULTS}/logs/preprocess/{{folder}}_{TRANSFORMER_PLANS}.log",
    params:
        backbones=TRANSFORMERS,
        configurations=[BACKBONES[b].configuration for b in TRANSFORMERS],
        plans_name=TRANSFORMER_PLANS,
    conda:
        "../../envs/pgps.yaml"
    shell:
        "(python -m pgps backbone-plans --plans {input:q} --out {output:q} --plans-name {params.plans_name}"
        " --backbone {params.backbones} --name {params.configurations}) > {log:q} 2>&1"


rule variant_plans:
    input:
        f"{ARTICLE_NNUNET}/preprocessed/{{folder}}/nnUNetPlans.json",
    output:
        f"{ARTICLE_NNUNET}/preprocessed/{{folder}}/{VARIANT_PLANS}.json",
    log:
        f"{RESULTS}/logs/preprocess/{{folder}}_{VARIANT_PLANS}.log",
    params:
        # one `pgps plans-variant` per (patch, batch) the grid trains; the first copies nnUNetPlans
        calls=lambda wildcards, input, output: " && ".join(
            f"python -m pgps plans-variant --plans {input[0] if i == 0 else output[0]} --out {output[0]}"
            f" --plans-name {VARIANT_PLANS} {args}"
            for i, args in enumerate(article_variant_args(wildcards.folder))
        ),
    conda:
        "../../envs/pgps.yaml"
    shell:
        # nnUNetPlans' 3d_fullres network with other patch/batch sizes, on its preprocessed data (no preprocessing)
        "({params.calls}) > {log:q} 2>&1"
