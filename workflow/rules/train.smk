# Training of every run of the article's grid: one nnUNetv2_train job per run, on its experiment's `gpus`
# (nnU-Net's -num_gpus: PyTorch DDP, the global batch split over them), with PGPS_CPUS_PER_GPU cores per GPU
# for nnU-Net's augmentation workers (nnUNet_n_proc_DA, per GPU process).
# A job re-submitted after preemption or a time limit resumes (--c, always given): nnU-Net continues from
# checkpoint_final.pth (only the final validation is left) or checkpoint_latest.pth, and starts a new
# training when neither exists. The pgps trainers write both atomically, keep checkpoint_latest until
# checkpoint_final exists and refuse to continue from checkpoint_best, so a kill at any instant resumes
# from the newest complete state. The declared outputs are nnU-Net's validation summary and pgps's
# summary, so a failed or interrupted job leaves no output that looks finished, and never touches
# another fold's.

wildcard_constraints:
    results_dir="results(_seed[0-9]+)?",
    plans="nnUNet[A-Za-z0-9]*Plans",
    configuration="3d_[a-z]+(_p[0-9x]+_b[0-9]+)?",


rule train:
    input:
        article_train_input,
    output:
        validation=f"{ARTICLE_NNUNET}/{{results_dir}}/{{folder}}/{{trainer}}__{{plans}}__{{configuration}}/fold_{{fold}}/validation/summary.json",
        summary=f"{ARTICLE_NNUNET}/{{results_dir}}/{{folder}}/{{trainer}}__{{plans}}__{{configuration}}/fold_{{fold}}/pgps_summary.json",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{results_dir}}/{{folder}}/{{trainer}}__{{plans}}__{{configuration}}_fold{{fold}}.tsv",
    log:
        f"{RESULTS}/logs/train/{{results_dir}}/{{folder}}/{{trainer}}__{{plans}}__{{configuration}}_fold{{fold}}.log",
    params:
        env=article_train_env,
        dataset_id=lambda wildcards: article_dataset(wildcards.folder)["dataset_id"],
        device=ARTICLE["device"],
        # pin to one free GPU of this machine (local-gpu profile); under SLURM the job's GPU is its only one
        gpu=f"python -m pgps gpu-slot --slots {config['gpu_slots']} --" if config["gpu_slots"] else "",
        # augmentation workers per GPU process (article_train_workers); -num_gpus and --npz where the run needs them
        scale=lambda wildcards, threads: f" export nnUNet_n_proc_DA={article_train_workers(wildcards, threads)};",
        flags=article_train_flags,
    threads: article_train_threads  # PGPS_CPUS_PER_GPU (default 12) per GPU
    resources:
        gpu=article_run_gpus,
        cpus_per_gpu=CPUS_PER_GPU,
        mem_mb=64000,
        runtime=article_train_minutes,
    conda:
        "../../envs/pgps.yaml"
    shell:
        train_attempt(console=False) + " {params.env}{params.scale}"
        " {params.gpu} nnUNetv2_train {params.dataset_id} {wildcards.configuration} {wildcards.fold}"
        " -tr {wildcards.trainer} -p {wildcards.plans} -device {params.device} {params.flags} --c"
