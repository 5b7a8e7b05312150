# Runs -> one tidy results table (collected once per study) -> every table and figure of the article.
# Render rules read only the collected folder and pgps's published-value files, never checkpoints,
# so everything re-renders in seconds. Studies (workflow/rules/common.smk): "demo" (the embedded
# default), "all" (the article's grid; waits for every run) and "finished" (target article_partial:
# whatever has finished so far, so a reviewer with partial results gets partial tables).

wildcard_constraints:
    study="demo|all|finished",


rule manifest:
    output:
        f"{RESULTS}/collected_{{study}}/runs.csv",
    log:
        f"{RESULTS}/logs/manifest_{{study}}.log",
    params:
        runs=lambda wildcards: study_manifest(wildcards.study),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/write_manifest.py"


rule characteristics:
    input:
        lambda wildcards: [f"{folder}/nnUNetPlans.json" for folder in study_preprocessed(wildcards.study).values()],
    output:
        f"{RESULTS}/characteristics_{{study}}.csv",
    log:
        f"{RESULTS}/logs/characteristics_{{study}}.log",
    params:
        datasets=lambda wildcards: " ".join(f"{k}={v}" for k, v in study_preprocessed(wildcards.study).items()),
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps characteristics --dataset {params.datasets} --plans nnUNetPlans --configuration 3d_fullres"
        " --out {output:q} > {log:q} 2>&1"


rule collect:
    input:
        runs=f"{RESULTS}/collected_{{study}}/runs.csv",
        finished=lambda wildcards: study_finished(wildcards.study),
        characteristics=lambda wildcards: (
            f"{RESULTS}/characteristics_{wildcards.study}.csv" if study_preprocessed(wildcards.study) else []
        ),
    output:
        results=f"{RESULTS}/collected_{{study}}/results.csv",
        epochs=f"{RESULTS}/collected_{{study}}/epochs.csv",
        schedules=f"{RESULTS}/collected_{{study}}/schedules.json",
    log:
        f"{RESULTS}/logs/collect_{{study}}.log",
    params:
        characteristics=lambda wildcards, input: (
            f"--characteristics {input.characteristics}" if input.characteristics else ""
        ),
        out=lambda wildcards, output: os.path.dirname(output.results),
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pgps collect --runs {input.runs:q} {params.characteristics} --out {params.out:q} 2> {log:q}"


for _study in studies():

    rule:
        name:
            f"render_{_study}"
        localrule: True
        input:
            results=f"{RESULTS}/collected_{_study}/results.csv",
            epochs=f"{RESULTS}/collected_{_study}/epochs.csv",
            schedules=f"{RESULTS}/collected_{_study}/schedules.json",
            code=REPORT_CODE,
        output:
            [report_item(_study, name) for name in REPORT_OUTPUTS],
        log:
            f"{RESULTS}/logs/render_{_study}.log",
        params:
            results=lambda wildcards, input: os.path.dirname(input.results),
            out=lambda wildcards, output: os.path.dirname(output[-1]),  # report.md
        conda:
            "../../envs/report.yaml"
        shell:
            "python -m pgps report --results {params.results:q} --out {params.out:q} > {log:q} 2>&1"
