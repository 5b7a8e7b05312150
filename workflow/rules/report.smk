# The article's runs -> one tidy results table (collected once) -> every table and figure.
# Render rules read only the collected tables and pgps's published-value files, never checkpoints.
# Scope "all" waits for every run of the grid; scope "finished" (target `article_partial`) collects
# whatever has finished so far, so a reviewer with partial results gets partial tables.

wildcard_constraints:
    scope="all|finished",


rule manifest:
    output:
        f"{RESULTS}/collected_{{scope}}/runs.csv",
    log:
        f"{RESULTS}/logs/manifest_{{scope}}.log",
    params:
        runs=lambda wildcards: article_manifest(wildcards.scope),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/write_manifest.py"


rule characteristics:
    input:
        [f"{ARTICLE_NNUNET}/preprocessed/{dataset_folder(d)}/nnUNetPlans.json" for d in article_grid_datasets().values()],
    output:
        f"{RESULTS}/characteristics.csv",
    log:
        f"{RESULTS}/logs/characteristics.log",
    params:
        datasets=" ".join(
            f"{key}={ARTICLE_NNUNET}/preprocessed/{dataset_folder(d)}" for key, d in article_grid_datasets().items()
        ),
    conda:
        "../../envs/pgps.yaml"
    shell:
        "python -m pgps characteristics --dataset {params.datasets} --plans nnUNetPlans --configuration 3d_fullres"
        " --out {output:q} > {log:q} 2>&1"


rule collect:
    input:
        runs=f"{RESULTS}/collected_{{scope}}/runs.csv",
        finished=lambda wildcards: article_finished(wildcards.scope),
        characteristics=lambda wildcards: [] if wildcards.scope == "finished" else f"{RESULTS}/characteristics.csv",
    output:
        results=f"{RESULTS}/collected_{{scope}}/results.csv",
        epochs=f"{RESULTS}/collected_{{scope}}/epochs.csv",
    log:
        f"{RESULTS}/logs/collect_{{scope}}.log",
    params:
        characteristics=lambda wildcards, input: (
            f"--characteristics {input.characteristics}" if input.characteristics else ""
        ),
        out=lambda wildcards, output: os.path.dirname(output.results),
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pgps collect --runs {input.runs:q} {params.characteristics} --out {params.out:q} 2> {log:q}"


for scope, figures in [("all", PAPER_FIGURES), ("finished", f"{RESULTS}/partial_figures")]:

    rule:
        name:
            f"render_{scope}"
        input:
            results=f"{RESULTS}/collected_{scope}/results.csv",
            epochs=f"{RESULTS}/collected_{scope}/epochs.csv",
            code=REPORT_CODE,
        output:
            touch(f"{figures}/report_{scope}.done"),
        log:
            f"{RESULTS}/logs/render_{scope}.log",
        params:
            results=lambda wildcards, input: os.path.dirname(input.results),
            out=lambda wildcards, output: os.path.dirname(output[0]),
        conda:
            "../../envs/report.yaml"
        shell:
            "python -m pgps report --results {params.results:q} --out {params.out:q} > {log:q} 2>&1"
