"""``pgps light-plans --preset cdl-unet``: CDL-UNet's light 3D U-Net as an nnU-Net configuration, and its
parameter and FLOP counts checked by hand against the numbers the paper prints (1.39 M, 64.02 G)."""

from __future__ import annotations

import json

import pytest

from pgps.cli import main
from pgps.nnunet.light import PRESETS, add_light_configuration, network_report
from pgps.plans import planned_configuration
from tests.test_light import demo_plans

PRESET = PRESETS["cdl-unet"]

# One 1x1x32x128x192 forward, stage resolutions 32x128x192, 32x64x96, 16x32x48, 8x16x24 (strides 1x2x2, 2x2x2,
# 2x2x2). Multiply-accumulates per output voxel: encoder convs (first-stage kernel 1x3x3 = 9, else 27), the
# transposed convs (kernel = stride: in x out per output voxel), decoder convs on the concatenation, the 14-class head.
S0, S1, S2, S3 = 32 * 128 * 192, 32 * 64 * 96, 16 * 32 * 48, 8 * 16 * 24
MACS = (
    S0 * (1 * 16 * 9 + 16 * 16 * 9 + 32 * 16 + 32 * 16 * 9 + 16 * 16 * 9 + 16 * 14)
    + S1 * (16 * 32 * 27 + 32 * 32 * 27 + 64 * 32 + 64 * 32 * 27 + 32 * 32 * 27)
    + S2 * (32 * 64 * 27 + 64 * 64 * 27 + 128 * 64 + 128 * 64 * 27 + 64 * 64 * 27)
    + S3 * (64 * 128 * 27 + 128 * 128 * 27)
)
# Parameters (weights + conv biases + 2 affine norm parameters per channel), nnU-Net v1 style:
# encoder 2,544 + 41,664 + 166,272 + 664,320 = 874,800; decoder (transposed convs without bias, then two convs)
# 397,696 + 99,520 + 9,056, heads 14 x (64 + 32 + 16) = 1,568 without bias: 1,382,640.
# nnU-Net v2 adds biases to the transposed convs (64 + 32 + 16) and the three heads (3 x 14): 1,382,794.
V1_PARAMS, V2_PARAMS = 1_382_640, 1_382_640 + 112 + 42


def cdl_plans() -> dict:
    p = PRESET
    return add_light_configuration(
        demo_plans(), "3d_fullres", "3d_cdl", patch_size=p.patch_size, batch_size=p.batch_size,
        features_per_stage=p.features, n_conv_per_stage=p.convs, strides=p.strides, kernel_sizes=p.kernel_sizes,
    )  # fmt: skip


def test_preset_is_the_authors_network_in_nnunet_plans():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    conf = PlansManager(cdl_plans()).get_configuration("3d_cdl")
    assert conf.patch_size == [32, 128, 192] and conf.batch_size == 2
    kwargs = conf.network_arch_init_kwargs
    assert kwargs["features_per_stage"] == [16, 32, 64, 128] and kwargs["n_stages"] == 4
    assert kwargs["strides"] == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]  # three downsamplings
    assert kwargs["kernel_sizes"][0] == [1, 3, 3]
    assert kwargs["n_conv_per_stage"] == [2] * 4 and kwargs["n_conv_per_stage_decoder"] == [2] * 3
    # PGPS steps: 2 stride-2 downsamplings on axis 0, 3 on the others
    assert planned_configuration(cdl_plans(), "3d_cdl").steps == (4, 8, 8)


def test_parameter_and_flop_counts_by_hand():
    conf = cdl_plans()["configurations"]["3d_cdl"]
    r = network_report(conf["architecture"], PRESET.patch_size, PRESET.reference_channels, PRESET.reference_classes)
    assert (r["params"], r["v1_params"]) == (V2_PARAMS, V1_PARAMS)
    assert r["macs"] == MACS == 47_274_000_384 and r["flops"] == 2 * MACS
    # the printed 1.39 M is 0.5% above the v1 count; the printed 64.02 G matches neither FLOPs nor MACs
    assert V1_PARAMS / PRESET.published_params == pytest.approx(0.9947, abs=1e-4)
    assert PRESET.published_flops / MACS == pytest.approx(1.354, abs=1e-3)


def test_cli_preset_writes_the_configuration_and_reports(tmp_path, capsys):
    plans = tmp_path / "nnUNetPlans.json"
    plans.write_text(json.dumps(demo_plans()))
    labels = {"background": 0, **{f"organ_{i}": i for i in range(1, 5)}}
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels}))
    assert main(["light-plans", "--plans", str(plans), "--preset", "cdl-unet", "--name", "3d_cdl"]) == 0
    out = capsys.readouterr().out
    assert "patch 32x128x192, batch 2, PGPS step 4x8x8, features 16,32,64,128, 2 conv(s)" in out
    assert f"parameters: {V2_PARAMS:,} (nnU-Net v2), {V1_PARAMS:,} without" in out and "printed 1.39 M" in out
    assert f"{2 * MACS / 1e9:.2f} GFLOPs = {MACS / 1e9:.2f} G multiply-accumulates; printed 64.02 G" in out
    assert "network for this dataset (1 channel(s), 5 outputs)" in out
    written = json.loads(plans.read_text())["configurations"]["3d_cdl"]
    assert written["patch_size"] == [32, 128, 192]
    # an explicit option wins over the preset
    assert main(["light-plans", "--plans", str(plans), "--preset", "cdl-unet", "--name", "3d_cdl", "--batch-size",
                 "4", "--no-report", "--overwrite"]) == 0  # fmt: skip
    assert json.loads(plans.read_text())["configurations"]["3d_cdl"]["batch_size"] == 4
    assert "GFLOPs" not in capsys.readouterr().out
