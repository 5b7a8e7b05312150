# Paths and helpers of the data-level curriculum experiment (workflow/rules/cdl.smk); functions only.

import json
import shlex

CDL = config["cdl"]
CDL_NNUNET = os.path.abspath(CDL["nnunet_dir"])


def cdl_synth_knobs():
    """pgps synth's options for the noisy-label dataset."""
    knobs = [
        f"--preset {CDL['preset']} --cases {CDL['cases']} --test-cases {CDL['test_cases']} --seed {CDL['seed']}",
        f"--label-sets {CDL['label_sets']} --label-levels {CDL['label_levels'][0]} {CDL['label_levels'][1]}",
    ]
    if CDL.get("shape"):
        knobs.append("--shape " + " ".join(map(str, CDL["shape"])) + " --shape-jitter 0")
    if CDL.get("radius"):
        knobs.append("--radius " + " ".join(map(str, CDL["radius"])))
    return " ".join(knobs)


def cdl_env(results_dir):
    """nnU-Net's paths (one results folder per arm) and the pgps trainers for a shell command."""
    return nnunet_env(CDL_NNUNET, results_dir, CDL["processes"])


def cdl_train_env(arm):
    """Short-run settings and the arm's data pacing parameters."""
    settings = {
        "PGPS_EPOCHS": CDL["epochs"],
        "PGPS_ITERATIONS_PER_EPOCH": CDL["iterations_per_epoch"],
        "PGPS_VAL_ITERATIONS": CDL["val_iterations"],
        "PGPS_SEED": CDL["seed"],
        "nnUNet_n_proc_DA": 0,
    }
    pacing = CDL["arms"][arm].get("pacing")
    if pacing:
        settings["PGPS_DATA_PACING_PARAMS"] = json.dumps(pacing)
    return " export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in settings.items()) + ";"


def cdl_checkpoint(arm, fold):
    trainer = CDL["arms"][arm]["trainer"]
    return (
        f"{CDL_NNUNET}/results_{arm}/Dataset{CDL['enhanced_id']:03d}_CDLEnhanced/"
        f"{trainer}__nnUNetPlans__{CDL['configuration']}/fold_{fold}/checkpoint_final.pth"
    )


def cdl_surface_file(arm, fold):
    return f"{RESULTS}/cdl/surface/{arm}_fold{fold}.csv"


def cdl_surface_args():
    """ARM=CSV for pgps cdl-report (several folds of an arm are pooled as repeats)."""
    return [shlex.quote(f"{arm}={cdl_surface_file(arm, fold)}") for arm in CDL["arms"] for fold in CDL["folds"]]


def cdl_notes():
    return (
        f"Run: {CDL['cases']} training cases ({CDL['label_sets']} noisy label sets each, corruption levels "
        f"{CDL['label_levels'][0]}-{CDL['label_levels'][1]}), {CDL['test_cases']} test cases, fold(s) "
        f"{', '.join(map(str, CDL['folds']))}, {CDL['epochs']} epochs x {CDL['iterations_per_epoch']} iterations, "
        f"configuration {CDL['configuration']}, seed {CDL['seed']}."
    )


def cdl_targets():
    if not CDL["enabled"]:
        return []
    return [f"{PAPER_FIGURES}/cdl/{name}" for name in ("table5.csv", "table5.md", "difficulty.md")]
