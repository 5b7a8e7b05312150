# The data-level curriculum experiment (CDL-UNet, FLARE 2024) on synthetic noisy labels, off unless
# cdl.enabled (not part of `make demo`): synthesize cases with K noisy label sets at known corruption
# levels -> pgps difficulty (RS, DS, groups; the enhanced dataset of each case's L_real) -> nnU-Net
# plan/preprocess + light configuration -> train every arm (uniform vs easy-then-hard, with and without
# PGPS) -> predict the clean-labelled test cases -> Dice/NSD per case and class -> a table in the style
# of CDL-UNet Table 5 beside the published one (pgps cdl-report).

CDL_NOISY = f"Dataset{CDL['dataset_id']:03d}_CDLNoisy"
CDL_ENHANCED = f"Dataset{CDL['enhanced_id']:03d}_CDLEnhanced"


wildcard_constraints:
    arm="[A-Za-z0-9_]+",


rule cdl_synthesize:
    output:
        f"{CDL_NNUNET}/raw/{CDL_NOISY}/dataset.json",
    benchmark:
        f"{RESULTS}/benchmarks/cdl/synthesize.tsv",
    log:
        f"{RESULTS}/logs/cdl/synthesize.log",
    params:
        raw=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
        knobs=cdl_synth_knobs(),
        dataset_id=CDL["dataset_id"],
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps synth {params.knobs} --out {params.raw:q} --dataset-id {params.dataset_id} --name CDLNoisy"
        " --overwrite --no-progress > {log:q} 2>&1"


rule cdl_difficulty:
    input:
        f"{CDL_NNUNET}/raw/{CDL_NOISY}/dataset.json",
    output:
        difficulty=f"{RESULTS}/cdl/difficulty.csv",
        dataset=f"{CDL_NNUNET}/raw/{CDL_ENHANCED}/dataset.json",
    benchmark:
        f"{RESULTS}/benchmarks/cdl/difficulty.tsv",
    log:
        f"{RESULTS}/logs/cdl/difficulty.log",
    params:
        noisy=lambda wildcards, input: os.path.dirname(input[0]),
        sets=lambda wildcards, input: " ".join(
            shlex.quote(f"{os.path.dirname(input[0])}/labelSets/set_{k}") for k in range(1, CDL["label_sets"] + 1)
        ),
        raw=lambda wildcards, output: os.path.dirname(os.path.dirname(output.dataset)),
        thresholds=f"--easy {CDL['easy_threshold']} --erroneous {CDL['erroneous_threshold']}",
        enhanced_id=CDL["enhanced_id"],
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps difficulty --labels {params.sets} --images {params.noisy:q}/imagesTr {params.thresholds}"
        " --out {output.difficulty:q} --enhanced-raw {params.raw:q} --dataset-id {params.enhanced_id}"
        " --name CDLEnhanced --overwrite --no-progress > {log:q} 2>&1"


rule cdl_preprocess:
    input:
        dataset=f"{CDL_NNUNET}/raw/{CDL_ENHANCED}/dataset.json",
        difficulty=f"{RESULTS}/cdl/difficulty.csv",
    output:
        plans=f"{CDL_NNUNET}/preprocessed/{CDL_ENHANCED}/nnUNetPlans.json",
        difficulty=f"{CDL_NNUNET}/preprocessed/{CDL_ENHANCED}/difficulty.csv",
    benchmark:
        f"{RESULTS}/benchmarks/cdl/preprocess.tsv",
    log:
        f"{RESULTS}/logs/cdl/preprocess.log",
    params:
        env=cdl_env("results"),
        light=("--features " + " ".join(map(str, CDL["light_features"])) + " " if CDL["light_features"] else "")
        + "--no-report",
        enhanced_id=CDL["enhanced_id"],
        configuration=CDL["configuration"],
    threads: 2
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} nnUNetv2_plan_and_preprocess -d {params.enhanced_id} -c 3d_fullres -np {threads} -npfp {threads}"
        " && python -m pgps light-plans --plans {output.plans:q} --name {params.configuration} {params.light}"
        # the data-curriculum trainers read difficulty.csv from the preprocessed dataset folder
        " && cp {input.difficulty:q} {output.difficulty:q}) > {log:q} 2>&1"


rule cdl_train:
    input:
        f"{CDL_NNUNET}/preprocessed/{CDL_ENHANCED}/nnUNetPlans.json",
        f"{CDL_NNUNET}/preprocessed/{CDL_ENHANCED}/difficulty.csv",
    output:
        f"{CDL_NNUNET}/results_{{arm}}/{CDL_ENHANCED}/{{trainer}}__nnUNetPlans__{CDL['configuration']}/fold_{{fold}}/checkpoint_final.pth",
    benchmark:
        f"{RESULTS}/benchmarks/cdl/train_{{arm}}_{{trainer}}_{{fold}}.tsv",
    log:
        f"{RESULTS}/logs/cdl/train_{{arm}}_{{trainer}}_{{fold}}.log",
    params:
        env=lambda wildcards: cdl_env(f"results_{wildcards.arm}") + cdl_train_env(wildcards.arm),
        enhanced_id=CDL["enhanced_id"],
        configuration=CDL["configuration"],
        device=CDL["device"],
    threads: 2
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} export OMP_NUM_THREADS={threads};"
        " resume=$([ -f $(dirname {output:q})/checkpoint_latest.pth ] && echo --c || true);"
        " nnUNetv2_train {params.enhanced_id} {params.configuration} {wildcards.fold} -tr {wildcards.trainer}"
        " -device {params.device} $resume) > {log:q} 2>&1"


rule cdl_predict:
    input:
        lambda wildcards: cdl_checkpoint(wildcards.arm, wildcards.fold),
    output:
        f"{RESULTS}/cdl/predictions/{{arm}}_fold{{fold}}/pgps_predict_report.csv",
    benchmark:
        f"{RESULTS}/benchmarks/cdl/predict_{{arm}}_{{fold}}.tsv",
    log:
        f"{RESULTS}/logs/cdl/predict_{{arm}}_{{fold}}.log",
    params:
        env=lambda wildcards: cdl_env(f"results_{wildcards.arm}"),
        model=lambda wildcards: os.path.dirname(os.path.dirname(cdl_checkpoint(wildcards.arm, wildcards.fold))),
        images=f"{CDL_NNUNET}/raw/{CDL_NOISY}/imagesTs",
        out=lambda wildcards, output: os.path.dirname(output[0]),
        device=CDL["device"],
    threads: 2
    conda:
        "../../envs/pgps.yaml"
    shell:
        # full sliding window (no adaptation): the arms differ only in training
        "({params.env} python -m pgps predict -i {params.images:q} -o {params.out:q} -m {params.model:q}"
        " -f {wildcards.fold} --device {params.device} --no-adaptive) > {log:q} 2>&1"


rule cdl_surface:
    input:
        f"{RESULTS}/cdl/predictions/{{arm}}_fold{{fold}}/pgps_predict_report.csv",
    output:
        f"{RESULTS}/cdl/surface/{{arm}}_fold{{fold}}.csv",
    benchmark:
        f"{RESULTS}/benchmarks/cdl/surface_{{arm}}_{{fold}}.tsv",
    log:
        f"{RESULTS}/logs/cdl/surface_{{arm}}_{{fold}}.log",
    params:
        pred=lambda wildcards, input: os.path.dirname(input[0]),
        ref=f"{CDL_NNUNET}/raw/{CDL_NOISY}/labelsTs",
        tolerance=CDL["tolerance_mm"],
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps surface --pred {params.pred:q} --ref {params.ref:q} --out {output:q}"
        " --tolerance {params.tolerance} --no-progress > {log:q} 2>&1"


rule cdl_render:
    input:
        surface=lambda wildcards: [cdl_surface_file(arm, fold) for arm in CDL["arms"] for fold in CDL["folds"]],
        difficulty=f"{RESULTS}/cdl/difficulty.csv",
        dataset=f"{CDL_NNUNET}/raw/{CDL_ENHANCED}/dataset.json",
        code=REPORT_CODE,
    output:
        f"{PAPER_FIGURES}/cdl/table5.csv",
        f"{PAPER_FIGURES}/cdl/table5.md",
        f"{PAPER_FIGURES}/cdl/difficulty.md",
    benchmark:
        f"{RESULTS}/benchmarks/cdl/render.tsv",
    log:
        f"{RESULTS}/logs/cdl/render.log",
    params:
        surfaces=lambda wildcards: " ".join(cdl_surface_args()),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        notes=cdl_notes(),
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pgps cdl-report --surface {params.surfaces} --dataset-json {input.dataset:q}"
        " --difficulty {input.difficulty:q} --out {params.out:q} --notes {params.notes:q} > {log:q} 2>&1"
