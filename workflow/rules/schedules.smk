# Curriculum schedules: one `pgps schedule` per dataset x mode, then the schedule table and the
# Figure 2 panels (patch size, batch size and input tensor size over training).


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    mode="|".join(SCHEDULES["modes"]),


rule schedule:
    output:
        f"{RESULTS}/schedules/{{dataset}}/{{mode}}.json",
    log:
        f"{RESULTS}/logs/schedules/{{dataset}}/{{mode}}.log",
    params:
        patch_size=lambda wildcards: planned(wildcards.dataset, "patch_size"),
        steps=lambda wildcards: planned(wildcards.dataset, "steps"),
        batch_size=lambda wildcards: planned(wildcards.dataset, "batch_size"),
        epochs=SCHEDULES["epochs"],
        iterations_per_epoch=SCHEDULES["iterations_per_epoch"],
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pgps schedule --mode {wildcards.mode:q}"
        " --patch-size {params.patch_size} --steps {params.steps} --batch-size {params.batch_size}"
        " --epochs {params.epochs} --iterations-per-epoch {params.iterations_per_epoch}"
        " --json > {output:q} 2> {log:q}"


rule render_schedules:
    input:
        schedules=expand(
            f"{RESULTS}/schedules/{{dataset}}/{{mode}}.json",
            dataset=SCHEDULES["datasets"],
            mode=SCHEDULES["modes"],
        ),
        code=REPORT_CODE,
    output:
        table=f"{PAPER_FIGURES}/schedules.csv",
        png=expand(f"{PAPER_FIGURES}/figure2/{{dataset}}.png", dataset=SCHEDULES["datasets"]),
        pdf=expand(f"{PAPER_FIGURES}/figure2/{{dataset}}.pdf", dataset=SCHEDULES["datasets"]),
    log:
        f"{RESULTS}/logs/render_schedules.log",
    params:
        datasets=list(SCHEDULES["datasets"]),
        modes=SCHEDULES["modes"],
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/render_schedules.py"
