"""pgps plans-variant: the same network with another patch and/or batch size (pgps.plans.add_plans_variant)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgps.cli import main
from pgps.plans import VARIANT_KEY, add_plans_variant, planned_configuration, resolve_configuration

PLANS = Path(__file__).parent / "data" / "nnUNetPlans_3d.json"
# a 6-stage U-Net whose first and last downsamplings keep axis 0: total strides 8 x 32 x 32
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]


def _plans() -> dict:
    plans = json.loads(PLANS.read_text())
    conf = plans["configurations"]["3d_fullres"]
    conf["patch_size"], conf["batch_size"] = [64, 160, 160], 2
    arch = conf["architecture"]["arch_kwargs"]
    arch.update(n_stages=6, strides=STRIDES, kernel_sizes=[[3, 3, 3]] * 6, n_conv_per_stage=[2] * 6,
                features_per_stage=[32, 64, 128, 256, 320, 320], n_conv_per_stage_decoder=[2] * 5)  # fmt: skip
    return plans


def test_variant_keeps_network_and_data_and_changes_patch_and_batch():
    plans = _plans()
    out = add_plans_variant(plans, "3d_fullres", patch_size=[64, 288, 288], batch_size=8)
    name = "3d_fullres_p64x288x288_b8"
    variant = out["configurations"][name]
    assert variant["inherits_from"] == "3d_fullres" and variant[VARIANT_KEY]["batch_size"] == 8
    resolved, source = resolve_configuration(out["configurations"], name), plans["configurations"]["3d_fullres"]
    assert resolved["architecture"] == source["architecture"]  # the same network
    assert resolved["data_identifier"] == source["data_identifier"]  # the same preprocessed data
    assert (resolved["patch_size"], resolved["batch_size"]) == ([64, 288, 288], 8)
    planned = planned_configuration(out, name)
    assert planned.steps == (8, 32, 32) and planned.patch_size == (64, 288, 288)
    assert plans == _plans()  # the input is not modified
    # batch only: the source's patch
    only_batch = add_plans_variant(plans, batch_size=16)
    resolved = resolve_configuration(only_batch["configurations"], "3d_fullres_p64x160x160_b16")
    assert resolved["patch_size"] == [64, 160, 160]


def test_patch_off_the_strides_names_axis_and_nearest_sizes():
    # the AMOS22 study's (64, 354, 354): 354 is not divisible by the 32 of five stride-2 levels
    with pytest.raises(ValueError, match=r"patch_size axis 1 \(= 354\) is not divisible by .*32.*352 or 384"):
        add_plans_variant(_plans(), patch_size=[64, 354, 354], batch_size=2)
    with pytest.raises(ValueError, match=r"axis 0 \(= 4\) is not divisible by .*8.*: 8$"):
        add_plans_variant(_plans(), patch_size=[4, 160, 160])
    with pytest.raises(ValueError, match="3 entries"):
        add_plans_variant(_plans(), patch_size=[160, 160])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        add_plans_variant(_plans(), batch_size=0)
    with pytest.raises(ValueError, match="needs a patch size, a batch size or both"):
        add_plans_variant(_plans())
    plans = _plans()
    with pytest.raises(ValueError, match="already exists and was not made by add_plans_variant"):
        add_plans_variant(plans, name="2d", batch_size=4)


def test_cli_writes_refuses_silent_replacement_and_chains(tmp_path, capsys):
    plans_file = tmp_path / "nnUNetPlans.json"
    plans_file.write_text(json.dumps(_plans()))
    out = tmp_path / "nnUNetAMOSPlans.json"
    args = ["plans-variant", "--plans", str(plans_file), "--out", str(out), "--name", "3d_p288"]
    assert main([*args, "--patch-size", "64", "288", "288", "--batch-size", "2"]) == 0
    written = json.loads(out.read_text())
    assert written["plans_name"] == "nnUNetAMOSPlans" and "3d_p288" in written["configurations"]
    assert "nnUNetAMOSPlans" in capsys.readouterr().out
    assert json.loads(plans_file.read_text()) == _plans()  # --plans untouched with --out
    # the same call again: unchanged, no write
    mtime = out.stat().st_mtime_ns
    assert main([*args, "--patch-size", "64", "288", "288", "--batch-size", "2"]) == 0
    assert "(unchanged)" in capsys.readouterr().out and out.stat().st_mtime_ns == mtime
    # a different variant under the same name is refused without --overwrite
    assert main([*args, "--patch-size", "64", "352", "352", "--batch-size", "2"]) == 2
    assert "would replace configuration(s) 3d_p288" in capsys.readouterr().err
    assert main([*args, "--patch-size", "64", "352", "352", "--batch-size", "2", "--overwrite"]) == 0
    assert json.loads(out.read_text())["configurations"]["3d_p288"]["patch_size"] == [64, 352, 352]
    # chaining: edit the written file in place to hold several variants
    assert main(["plans-variant", "--plans", str(out), "--batch-size", "16"]) == 0
    chained = json.loads(out.read_text())["configurations"]
    assert {"3d_p288", "3d_fullres_p64x160x160_b16"} <= set(chained)
    # errors name the file and the axis, exit 2, and leave the file as it was
    before = out.read_text()
    assert main(["plans-variant", "--plans", str(out), "--patch-size", "64", "354", "354"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "axis 1 (= 354)" in err and "352 or 384" in err
    assert out.read_text() == before


TRAIN_VARIANT = """
import sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
trainer = get_trainer_from_args("1", sys.argv[1], 0, sys.argv[2], sys.argv[3], device=torch.device("cpu"))
trainer.run_training()
"""


@pytest.mark.nnunet
def test_nnunet_trains_a_variant_on_the_source_data_with_a_loss_and_lr_variant(tiny_nnunet, tmp_path):
    """plans-variant on real nnU-Net plans, trained by nnU-Net with no new preprocessing; the loss and learning-rate
    variants of a trainer name, recorded in the summary; the network received the variant's patch and batch."""
    import csv
    import math
    import subprocess
    import sys

    from tests import nnunet_env as nn

    folder = tiny_nnunet / "preprocessed" / nn.DATASET
    out = folder / "nnUNetVariantPlans.json"
    args = ["plans-variant", "--plans", str(folder / "nnUNetPlans.json"), "--out", str(out)]
    assert main([*args, "--patch-size", "24", "24", "24", "--batch-size", "4"]) == 0
    configuration, trainer = "3d_fullres_p24x24x24_b4", "nnUNetTrainer_PGPS_CPS_DicePerim_LRsqrt"
    env = nn.env(tiny_nnunet, tmp_path, PGPS_EPOCHS="2", PGPS_ITERATIONS_PER_EPOCH="1", PGPS_VAL_ITERATIONS="1",
                 nnUNet_n_proc_DA="0")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", TRAIN_VARIANT, configuration, trainer, "nnUNetVariantPlans"], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fold = tmp_path / nn.DATASET / f"{trainer}__nnUNetVariantPlans__{configuration}" / "fold_0"
    rows = list(csv.DictReader((fold / "pgps_telemetry.csv").open()))
    assert [(r["patch_size"], r["batch_size"]) for r in rows] == [("24x24x24", "4")] * 2
    lr = 0.01 * math.sqrt(4 / 2)  # the square-root rule from nnU-Net's 0.01 at the reference batch 2
    assert float(rows[0]["lr"]) == pytest.approx(lr)
    summary = json.loads((fold / "pgps_summary.json").read_text())
    assert summary["learning_rate"] == {"initial_lr": pytest.approx(lr), "nnunet_lr": 0.01, "scaling": "sqrt",
                                        "batch_size": 4, "reference_batch_size": 2}  # fmt: skip
    assert summary["loss"]["variant"] == "dice_perimeter" and summary["loss"]["terms"][1] == "PerimeterLoss"
    assert not (folder / "nnUNetVariantPlans_3d_fullres_p24x24x24_b4").exists()  # the source's data, not new data
