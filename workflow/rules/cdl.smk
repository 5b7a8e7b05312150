# The data-level curriculum experiment (CDL-UNet, FLARE 2024), off unless cdl.enabled (not part of `make demo`).
# Per seed: synthesize a dataset of its own whose cases differ in image difficulty and whose annotators disagree
# where the image is ambiguous -> pgps difficulty (DS, groups; the enhanced dataset of each case's L_real) ->
# nnU-Net plan/preprocess + light configuration -> the easy course (E1 epochs on easy cases) -> its two
# continuations from the same checkpoint_final.pth (E2 epochs on easy + hard, and on easy only) and uniform
# training (E1 + E2 on every case) -> predict the clean-labelled test cases -> Dice/NSD per case and class.
# Then pgps cdl-report: paired tests over cases and seeds, a table in the style of CDL-UNet Table 5 and the
# paragraph the CDL guide quotes (paper_figures/cdl/). Models and settings: pgps.experiments.cdl.


wildcard_constraints:
    model="[a-z_]+",
    seed="[0-9]+",


rule cdl_synthesize:
    output:
        f"{CDL_NNUNET}/seed{{seed}}/raw/{CDL_NOISY}/dataset.json",
    benchmark:
        f"{CDL_BENCHMARKS}/synthesize_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/cdl/synthesize_seed{{seed}}.log",
    params:
        raw=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
        knobs=lambda wildcards: _cdl.synth_args(CDL, int(wildcards.seed)),
        dataset_id=CDL["dataset_id"],
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps synth {params.knobs} --out {params.raw:q} --dataset-id {params.dataset_id} --name CDLNoisy"
        " --overwrite --no-progress > {log:q} 2>&1"


rule cdl_difficulty:
    input:
        f"{CDL_NNUNET}/seed{{seed}}/raw/{CDL_NOISY}/dataset.json",
    output:
        difficulty=f"{RESULTS}/cdl/seed{{seed}}/difficulty.csv",
        dataset=f"{CDL_NNUNET}/seed{{seed}}/raw/{CDL_ENHANCED}/dataset.json",
    benchmark:
        f"{CDL_BENCHMARKS}/difficulty_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/cdl/difficulty_seed{{seed}}.log",
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
        dataset=f"{CDL_NNUNET}/seed{{seed}}/raw/{CDL_ENHANCED}/dataset.json",
        difficulty=f"{RESULTS}/cdl/seed{{seed}}/difficulty.csv",
    output:
        plans=f"{CDL_NNUNET}/seed{{seed}}/preprocessed/{CDL_ENHANCED}/nnUNetPlans.json",
        difficulty=f"{CDL_NNUNET}/seed{{seed}}/preprocessed/{CDL_ENHANCED}/difficulty.csv",
    benchmark:
        f"{CDL_BENCHMARKS}/preprocess_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/cdl/preprocess_seed{{seed}}.log",
    params:
        env=lambda wildcards: cdl_env(wildcards.seed),
        light=("--features " + " ".join(map(str, CDL["light_features"])) + " " if CDL["light_features"] else "")
        + "--no-report",
        enhanced_id=CDL["enhanced_id"],
        configuration=CDL["configuration"],
    threads: CDL["threads"]
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} nnUNetv2_plan_and_preprocess -d {params.enhanced_id} -c 3d_fullres -np {threads} -npfp {threads}"
        " && python -m pgps light-plans --plans {output.plans:q} --name {params.configuration} {params.light}"
        # the data-curriculum trainers read difficulty.csv from the preprocessed dataset folder
        " && cp {input.difficulty:q} {output.difficulty:q}) > {log:q} 2>&1"


rule cdl_train:
    """One model of a seed (pgps.experiments.cdl.models); a continuation starts from the easy model's final
    checkpoint (PGPS_INIT_WEIGHTS), which its fold folder's pgps_init_weights.json records with its SHA-256."""
    input:
        plans=f"{CDL_NNUNET}/seed{{seed}}/preprocessed/{CDL_ENHANCED}/nnUNetPlans.json",
        difficulty=f"{CDL_NNUNET}/seed{{seed}}/preprocessed/{CDL_ENHANCED}/difficulty.csv",
        start=cdl_start_weights,
    output:
        f"{CDL_NNUNET}/seed{{seed}}/results_{{model}}/{CDL_ENHANCED}/{{trainer}}__nnUNetPlans__{CDL['configuration']}/fold_{CDL['fold']}/checkpoint_final.pth",
    benchmark:
        f"{CDL_BENCHMARKS}/train_seed{{seed}}_{{model}}_{{trainer}}.tsv"
    log:
        f"{RESULTS}/logs/cdl/train_seed{{seed}}_{{model}}_{{trainer}}.log",
    params:
        env=lambda wildcards: cdl_env(wildcards.seed, f"results_{wildcards.model}"),
        settings=cdl_train_env,
        enhanced_id=CDL["enhanced_id"],
        configuration=CDL["configuration"],
        fold=CDL["fold"],
        device=CDL["device"],
    threads: CDL["threads"]
    conda:
        "../../envs/pgps.yaml"
    shell:
        "({params.env} {params.settings} export OMP_NUM_THREADS={threads};"
        " resume=$([ -f $(dirname {output:q})/checkpoint_latest.pth ] && echo --c || true);"
        " nnUNetv2_train {params.enhanced_id} {params.configuration} {params.fold} -tr {wildcards.trainer}"
        " -device {params.device} $resume) > {log:q} 2>&1"


rule cdl_predict:
    input:
        lambda wildcards: cdl_checkpoint(wildcards.seed, wildcards.model),
    output:
        f"{RESULTS}/cdl/seed{{seed}}/predictions/{{model}}/pgps_predict_report.csv",
    benchmark:
        f"{CDL_BENCHMARKS}/predict_seed{{seed}}_{{model}}.tsv"
    log:
        f"{RESULTS}/logs/cdl/predict_seed{{seed}}_{{model}}.log",
    params:
        env=lambda wildcards: cdl_env(wildcards.seed, f"results_{wildcards.model}"),
        model=lambda wildcards, input: os.path.dirname(os.path.dirname(input[0])),
        images=lambda wildcards: f"{cdl_seed_dir(wildcards.seed)}/raw/{CDL_NOISY}/imagesTs",
        out=lambda wildcards, output: os.path.dirname(output[0]),
        fold=CDL["fold"],
        device=CDL["device"],
    threads: CDL["threads"]
    conda:
        "../../envs/pgps.yaml"
    shell:
        # full sliding window (no adaptation): the arms differ only in training
        "({params.env} export OMP_NUM_THREADS={threads}; python -m pgps predict -i {params.images:q}"
        " -o {params.out:q} -m {params.model:q} -f {params.fold} --device {params.device} --no-adaptive) > {log:q} 2>&1"


rule cdl_surface:
    input:
        f"{RESULTS}/cdl/seed{{seed}}/predictions/{{model}}/pgps_predict_report.csv",
    output:
        f"{RESULTS}/cdl/seed{{seed}}/surface/{{model}}.csv",
    benchmark:
        f"{CDL_BENCHMARKS}/surface_seed{{seed}}_{{model}}.tsv"
    log:
        f"{RESULTS}/logs/cdl/surface_seed{{seed}}_{{model}}.log",
    params:
        pred=lambda wildcards, input: os.path.dirname(input[0]),
        ref=lambda wildcards: f"{cdl_seed_dir(wildcards.seed)}/raw/{CDL_NOISY}/labelsTs",
        tolerance=CDL["tolerance_mm"],
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps surface --pred {params.pred:q} --ref {params.ref:q} --out {output:q}"
        " --tolerance {params.tolerance} --no-progress > {log:q} 2>&1"


rule cdl_manifest:
    """What pgps cdl-report reads, per seed and model (JSON; paths as this machine has them)."""
    input:
        surface=[cdl_surface_file(s, m) for s in CDL["seeds"] for m in _cdl.MODELS],
        difficulty=[f"{RESULTS}/cdl/seed{s}/difficulty.csv" for s in CDL["seeds"]],
    output:
        f"{RESULTS}/cdl/manifest.json",
    log:
        f"{RESULTS}/logs/cdl/manifest.log",
    params:
        manifest=lambda wildcards: json.dumps(
            {
                "config": {k: v for k, v in CDL.items() if k != "nnunet_dir"},
                "seeds": {
                    str(s): {
                        "dataset_json": f"{cdl_seed_dir(s)}/raw/{CDL_NOISY}/dataset.json",
                        "difficulty": f"{RESULTS}/cdl/seed{s}/difficulty.csv",
                        "surface": {m: cdl_surface_file(s, m) for m in _cdl.MODELS},
                        "fold_dirs": {m: _cdl.fold_dir(CDL, CDL_NNUNET, s, m) for m in _cdl.MODELS},
                    }
                    for s in CDL["seeds"]
                },
                "benchmarks": CDL_BENCHMARKS,
            }
        ),
    conda:
        "../../envs/report.yaml"
    shell:
        "printf '%s\\n' {params.manifest:q} > {output:q} 2> {log:q}"


rule cdl_render:
    input:
        manifest=f"{RESULTS}/cdl/manifest.json",
        surface=[cdl_surface_file(s, m) for s in CDL["seeds"] for m in _cdl.MODELS],
        code=REPORT_CODE,
    output:
        [f"{PAPER_FIGURES}/cdl/{name}" for name in CDL_OUTPUTS],
    log:
        f"{RESULTS}/logs/cdl/render.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        notes=_cdl.notes(CDL),
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pgps cdl-report --manifest {input.manifest:q} --out {params.out:q} --notes {params.notes:q}"
        " > {log:q} 2>&1"
