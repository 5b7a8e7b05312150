# Runs -> one tidy results table (collected once per collection: demo, all, finished) -> every table and figure of the article.
# Render rules read only the collected folder and pgps's published-value files, never checkpoints,
# so everything re-renders in seconds. Studies (workflow/rules/common.smk): "demo" (the embedded
# default), "all" (the article's grid; waits for every run) and "finished" (target article_partial:
# whatever has finished so far, so a reviewer with partial results gets partial tables).

wildcard_constraints:
    collection="demo|all|finished",


rule manifest:
    output:
        f"{RESULTS}/collected_{{collection}}/runs.csv",
    log:
        f"{RESULTS}/logs/manifest_{{collection}}.log",
    params:
        runs=lambda wildcards: collection_manifest(wildcards.collection),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/write_manifest.py"


rule characteristics:
    input:
        lambda wildcards: [f"{folder}/nnUNetPlans.json" for folder in collection_preprocessed(wildcards.collection).values()],
    output:
        f"{RESULTS}/characteristics_{{collection}}.csv",
    log:
        f"{RESULTS}/logs/characteristics_{{collection}}.log",
    params:
        datasets=lambda wildcards: " ".join(f"{k}={v}" for k, v in collection_preprocessed(wildcards.collection).items()),
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps characteristics --dataset {params.datasets} --plans nnUNetPlans --configuration 3d_fullres"
        " --out {output:q} > {log:q} 2>&1"


rule collect:
    input:
        runs=f"{RESULTS}/collected_{{collection}}/runs.csv",
        finished=lambda wildcards: collection_finished(wildcards.collection),
        characteristics=lambda wildcards: (
            f"{RESULTS}/characteristics_{wildcards.collection}.csv" if collection_preprocessed(wildcards.collection) else []
        ),
    output:
        results=f"{RESULTS}/collected_{{collection}}/results.csv",
        epochs=f"{RESULTS}/collected_{{collection}}/epochs.csv",
        schedules=f"{RESULTS}/collected_{{collection}}/schedules.json",
    log:
        f"{RESULTS}/logs/collect_{{collection}}.log",
    params:
        characteristics=lambda wildcards, input: (
            f"--characteristics {input.characteristics}" if input.characteristics else ""
        ),
        out=lambda wildcards, output: os.path.dirname(output.results),
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pgps collect --runs {input.runs:q} {params.characteristics} --out {params.out:q} 2> {log:q}"


for _collection in collections():

    rule:
        name:
            f"render_{_collection}"
        localrule: True
        input:
            results=f"{RESULTS}/collected_{_collection}/results.csv",
            epochs=f"{RESULTS}/collected_{_collection}/epochs.csv",
            schedules=f"{RESULTS}/collected_{_collection}/schedules.json",
            code=REPORT_CODE,
        output:
            [report_item(_collection, name) for name in REPORT_OUTPUTS],
        log:
            f"{RESULTS}/logs/render_{_collection}.log",
        params:
            results=lambda wildcards, input: os.path.dirname(input.results),
            out=lambda wildcards, output: os.path.dirname(output[-1]),  # report.md
        conda:
            "../../envs/report.yaml"
        shell:
            "python -m pgps report --results {params.results:q} --out {params.out:q} > {log:q} 2>&1"
