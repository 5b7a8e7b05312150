# The article's datasets: download (public archives) or a user-provided raw_path -> nnU-Net raw format.
# Conversion uses nnU-Net's own converters where they exist (pgps convert wraps them).

wildcard_constraints:
    folder="Dataset[0-9]{3}_[A-Za-z0-9_-]+",


rule download:
    output:
        f"{ARTICLE['downloads']}/{{folder}}/{{archive}}",
    log:
        f"{RESULTS}/logs/download/{{folder}}/{{archive}}.log",
    params:
        url=lambda wildcards: article_dataset(wildcards.folder)["url"],
        md5=lambda wildcards: (
            f"--md5 {article_dataset(wildcards.folder)['md5']}" if article_dataset(wildcards.folder)["md5"] else ""
        ),
    resources:
        runtime=12 * 60,
    retries: 2
    conda:
        "../../envs/pgps.yaml"
    shell:
        # resumes a partial .part file; the archive appears only once complete (and its md5 checked)
        "python -m pgps download {params.url:q} {output:q} {params.md5} 2> {log:q}"


rule convert:
    input:
        article_source,
    output:
        f"{ARTICLE_NNUNET}/raw/{{folder}}/dataset.json",
    benchmark:
        f"{RESULTS}/benchmarks/convert/{{folder}}.tsv",
    log:
        f"{RESULTS}/logs/convert/{{folder}}.log",
    params:
        source=lambda wildcards, input: input[0] if input else article_dataset(wildcards.folder)["raw_path"] or "",
        # a dataset without data stops here with instructions
        missing=lambda wildcards, input: "" if input else article_missing_data(wildcards.folder),
        format=lambda wildcards: article_dataset(wildcards.folder)["format"],
        dataset_id=lambda wildcards: article_dataset(wildcards.folder)["dataset_id"],
        name=lambda wildcards: article_dataset(wildcards.folder)["name"],
        raw=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
    threads: 4
    resources:
        mem_mb=32000,
        runtime=6 * 60,
    conda:
        "../../envs/pgps.yaml"
    shell:
        "{params.missing}"
        # written into a temporary folder and renamed at the end: an interrupted conversion leaves nothing
        " python -m pgps convert --format {params.format} --source {params.source:q} --raw {params.raw:q}"
        " --dataset-id {params.dataset_id} --name {params.name} --workers {threads} --overwrite > {log:q} 2>&1"
