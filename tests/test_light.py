"""The CPU-friendly ``3d_light`` configuration: plans edit, nnU-Net's resolution and network, channels-last, CLI."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import torch

import pgps
from pgps.cli import main
from pgps.nnunet.light import (
    DEFAULT_FEATURES,
    MEMORY_FORMAT_KEY,
    add_light_configuration,
    use_channels_last_3d,
)
from pgps.nnunet.norm import ChannelsLastGroupNorm, allow_single_voxel_norm, use_group_norm
from tests import nnunet_env as nn

CL = torch.channels_last_3d
MINIMAL_PLANS = Path(__file__).parent / "data" / "nnUNetPlans_3d.json"  # no full architecture


def demo_plans() -> dict:
    """What nnU-Net 2.8.1 plans for the demo (``pgps synth --preset organs``, 60^3 volumes): 3d_fullres only."""
    n = 5
    arch_kwargs = {
        "n_stages": n,
        "features_per_stage": [32, 64, 128, 256, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    fullres = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [64, 64, 64],
        "spacing": [1.0, 1.0, 1.0],
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": arch_kwargs,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }
    return {
        "dataset_name": "Dataset500_SynthOrgans",
        "plans_name": "nnUNetPlans",
        "configurations": {"3d_fullres": fullres},
    }


def nnunet_network(plans: dict, name: str, num_classes: int = 5) -> torch.nn.Module:
    """The network nnU-Net's trainer builds for configuration ``name`` (deep supervision on)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    return nnUNetTrainer.build_network_architecture(pm, pm.get_configuration(name), 1, num_classes, True)


def test_light_configuration_resolves_through_nnunet_plans_manager():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = demo_plans()
    before = copy.deepcopy(plans)
    light = add_light_configuration(plans)
    assert plans == before  # a new dict; the input is untouched
    assert light["configurations"]["3d_fullres"] == before["configurations"]["3d_fullres"]
    assert light["configurations"]["3d_light"]["inherits_from"] == "3d_fullres"
    cm = PlansManager(light).get_configuration("3d_light")
    assert cm.data_identifier == "nnUNetPlans_3d_fullres"  # the source's preprocessed data
    assert list(cm.patch_size) == [64, 64, 64] and cm.batch_size == 2
    kwargs = cm.network_arch_init_kwargs
    assert kwargs["features_per_stage"] == list(DEFAULT_FEATURES)
    assert kwargs["n_conv_per_stage"] == [1] * 5 and kwargs["n_conv_per_stage_decoder"] == [1] * 4
    assert kwargs["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 4 and len(kwargs["kernel_sizes"]) == 5
    assert kwargs["norm_op"] == "torch.nn.modules.instancenorm.InstanceNorm3d" and kwargs["conv_bias"] is True
    assert cm.configuration[MEMORY_FORMAT_KEY] == "channels_last_3d"
    # the curriculum keeps the demo's 10 stages: step 16, 16^3 ... 64^3
    planned = pgps.planned_configuration(light, "3d_light")
    assert planned.steps == (16, 16, 16)
    assert pgps.make_schedule("performance", planned.patch_size, planned.steps, planned.batch_size).num_stages == 10


def test_overrides_and_fewer_stages_cut_strides_and_kernels():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    light = add_light_configuration(
        demo_plans(),
        name="3d_light4",
        patch_size=(40, 48, 56),
        batch_size=3,
        features_per_stage=[4, 8, 16, 16],
        n_conv_per_stage=[1, 2, 2, 2],
        memory_format="contiguous",
    )
    cm = PlansManager(light).get_configuration("3d_light4")
    assert list(cm.patch_size) == [40, 48, 56] and cm.batch_size == 3
    kwargs = cm.network_arch_init_kwargs
    assert kwargs["n_stages"] == 4 and kwargs["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 3
    assert len(kwargs["kernel_sizes"]) == 4
    assert kwargs["n_conv_per_stage_decoder"] == [2, 2, 1]  # deepest decoder stage first
    assert cm.configuration[MEMORY_FORMAT_KEY] == "contiguous"
    assert pgps.planned_configuration(light, "3d_light4").steps == (8, 8, 8)
    # running it again replaces the configuration it made
    again = add_light_configuration(light, name="3d_light4", batch_size=4, features_per_stage=[4, 8, 16, 16])
    assert PlansManager(again).get_configuration("3d_light4").batch_size == 4


def _cyclic_plans() -> dict:
    plans = add_light_configuration(demo_plans())
    plans["configurations"]["child"] = {"inherits_from": "3d_light"}
    return plans


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features_per_stage": [8, 16, 32, 64, 64, 64]}, "give 2 to 5"),
        ({"features_per_stage": [8]}, "give 2 to 5"),
        ({"features_per_stage": [8, 0, 32, 64, 64]}, r"features_per_stage\[1\] must be a positive integer"),
        ({"features_per_stage": "8,16"}, "sequence of positive integers"),
        ({"patch_size": (64, 60, 64)}, r"patch_size axis 1 \(= 60\) is not divisible by .*16"),
        ({"patch_size": (64, 64)}, "patch_size must have 3 entries"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"n_conv_per_stage": [1, 1]}, "n_conv_per_stage must have 5 entries"),
        ({"n_conv_per_stage_decoder": 0}, r"n_conv_per_stage_decoder\[0\] must be a positive integer"),
        ({"memory_format": "nhwc"}, "memory_format must be one of channels_last_3d, contiguous"),
        ({"name": "3d_fullres"}, "needs its own name"),
        ({"source": "3d_lowres"}, "'3d_lowres' is not in the plans"),
        ({"plans": {"dataset_name": "x"}}, "no 'configurations'"),
        ({"plans": _cyclic_plans(), "source": "child"}, "would make a cycle"),
        ({"plans": json.loads(MINIMAL_PLANS.read_text()), "name": "3d_fullres_bs2"}, "was not made by"),
        ({"plans": json.loads(MINIMAL_PLANS.read_text())}, "no architecture.arch_kwargs n_conv_per_stage"),
    ],
)
def test_bad_inputs_raise(kwargs, message):
    plans = kwargs.pop("plans", None) or demo_plans()
    with pytest.raises(ValueError, match=message):
        add_light_configuration(plans, **kwargs)


def test_nnunet_network_trains_at_the_first_pgps_stage_and_at_p_max():
    torch.manual_seed(0)
    net = nnunet_network(add_light_configuration(demo_plans()), "3d_light")
    assert sum(p.numel() for p in net.parameters()) < 600_000  # the planned network has 16.5M
    allow_single_voxel_norm(net)  # 16^3 through 4 stride-2 levels: a 1x1x1 bottleneck
    use_channels_last_3d(net)
    for patch, batch in (((16, 16, 16), 4), ((64, 64, 64), 1)):
        net.zero_grad()
        outputs = net(torch.randn(batch, 1, *patch))
        assert [tuple(o.shape) for o in outputs] == [(batch, 5, *(s // 2**i for s in patch)) for i in range(4)]
        sum(o.square().mean() for o in outputs).backward()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert net.encoder.stages[0][0].convs[0].conv.weight.grad.abs().sum() > 0


def test_channels_last_keeps_outputs_and_gradients_equal():
    torch.manual_seed(0)
    plans = add_light_configuration(demo_plans())
    reference = nnunet_network(plans, "3d_light")
    net = nnunet_network(plans, "3d_light")
    net.load_state_dict(reference.state_dict())
    params = [id(p) for p in net.parameters()]
    handle = use_channels_last_3d(net)
    assert [id(p) for p in net.parameters()] == params  # an optimizer built before stays valid
    weight = net.encoder.stages[1][0].convs[0].conv.weight
    assert weight.is_contiguous(memory_format=CL) and not weight.is_contiguous()
    x = torch.randn(2, 1, 32, 32, 32)
    out, expected = net(x), reference(x)
    assert out[0].is_contiguous(memory_format=CL) and x.is_contiguous()  # the caller's tensor is untouched
    for a, b in zip(out, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    sum(o.sum() for o in out).backward()
    sum(o.sum() for o in expected).backward()
    for a, b in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-3)
    handle.remove()  # without the input hook the channels-last network still takes NCDHW input
    torch.testing.assert_close(net(x)[0], reference(x)[0], rtol=1e-4, atol=1e-4)


def test_group_norm_is_the_instance_norm_maths_with_the_same_parameters():
    """The swap a PGPS trainer makes on a channels_last_3d network: in float64 (no rounding to hide behind) the
    outputs and every gradient equal the instance-norm network's, the 1x1x1 bottleneck of the first PGPS stage
    included; the parameters are the same tensors under the same keys (checkpoints load either way)."""
    torch.manual_seed(0)
    reference = nnunet_network(add_light_configuration(demo_plans()), "3d_light").double()
    with torch.no_grad():  # away from nnU-Net's initial 0 bias: a single-voxel norm outputs its bias, at ReLU's kink
        for module in reference.modules():
            if isinstance(module, torch.nn.InstanceNorm3d):
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.5, 0.5)
    allow_single_voxel_norm(reference)
    net = copy.deepcopy(reference)
    params = [id(p) for p in net.parameters()]
    norms = {id(m) for m in net.modules() if isinstance(m, torch.nn.InstanceNorm3d)}
    assert use_group_norm(net) == len(norms) == 9  # one per conv: 5 encoder stages, 4 decoder
    assert [id(p) for p in net.parameters()] == params and list(net.state_dict()) == list(reference.state_dict())
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in net.modules())
    block = net.encoder.stages[0][0].convs[0]
    assert block.norm in list(block.all_modules) and type(block.norm) is ChannelsLastGroupNorm  # one module, two names
    for patch, batch in (((16, 16, 16), 4), ((32, 32, 32), 2)):  # 16^3: a 1x1x1 bottleneck
        x = torch.randn(batch, 1, *patch, dtype=torch.float64)
        outputs = [model(x) for model in (reference, net)]
        weights = [torch.randn_like(o) for o in outputs[0]]
        grads = []
        for model, out in zip((reference, net), outputs, strict=True):
            model.zero_grad()
            sum((o * w).sum() for o, w in zip(out, weights, strict=True)).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for a, b in zip(*outputs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    # in float32 and channels_last_3d, as the demo trains: within float32 rounding of the reference
    net, reference = net.float(), reference.float()
    use_channels_last_3d(net)
    nodes = []  # what computes the first norm's gradient: the contiguous kernel (ChannelsLastGroupNorm)
    block.norm.register_forward_hook(lambda module, args, out: nodes.append(type(out.grad_fn).__name__))
    x = torch.randn(2, 1, 32, 32, 32)
    torch.testing.assert_close(net(x)[0], reference(x)[0], rtol=1e-3, atol=1e-3)
    assert nodes == ["_GroupNormContiguousGradientBackward"], nodes
    kept = torch.nn.InstanceNorm3d(4, affine=True, track_running_stats=True)  # running statistics: not the same maths
    assert use_group_norm(torch.nn.Sequential(kept)) == 0


def test_the_channels_last_group_norm_is_group_norm_with_the_contiguous_gradient():
    """:class:`ChannelsLastGroupNorm` on a channels_last_3d CPU input: in float64 the output and every gradient equal
    ``GroupNorm``'s on the contiguous input, the input's gradient comes back in channels_last_3d, and its gradient
    is the contiguous kernel's (its autograd node); any other input goes to ``GroupNorm`` itself."""
    torch.manual_seed(0)
    norm = ChannelsLastGroupNorm(8, 8).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-0.5, 0.5)
    reference = torch.nn.GroupNorm(8, 8).double()
    reference.load_state_dict(norm.state_dict())
    x = torch.randn(3, 8, 6, 5, 4, dtype=torch.float64)
    weight = torch.randn_like(x)
    results = []
    for module, inp in ((norm, x.contiguous(memory_format=torch.channels_last_3d)), (reference, x)):
        inp = inp.clone().requires_grad_()
        out = module(inp)
        (out * weight).sum().backward()
        results.append((out, inp.grad, module.weight.grad, module.bias.grad, type(out.grad_fn).__name__))
    (out, dx, dw, db, node), expected = results
    for a, b in zip((out, dx, dw, db), expected[:4], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert node == "_GroupNormContiguousGradientBackward" and expected[4] == "NativeGroupNormBackward0"
    assert dx.is_contiguous(memory_format=torch.channels_last_3d) and not dx.is_contiguous()
    with torch.no_grad():
        assert norm(x.contiguous(memory_format=torch.channels_last_3d)).grad_fn is None
    assert type(norm(x.requires_grad_()).grad_fn).__name__ == "NativeGroupNormBackward0"  # contiguous: GroupNorm's


def test_cli_edits_a_copy_of_the_plans_atomically(tmp_path, capsys):
    plans_file = tmp_path / "nnUNetPlans.json"
    plans_file.write_text(json.dumps(demo_plans()))
    code = main(["light-plans", "--plans", str(plans_file), "--batch-size", "4", "--convs", "2"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert "3d_light inherits 3d_fullres: patch 64x64x64, batch 4, PGPS step 16x16x16" in out
    edited = json.loads(plans_file.read_text())
    assert edited == add_light_configuration(demo_plans(), batch_size=4, n_conv_per_stage=2)
    assert [p.name for p in tmp_path.iterdir()] == ["nnUNetPlans.json"]  # no temporary file left

    argv = ["light-plans", "--plans", str(plans_file), "--name", "3d_small", "--patch-size", "32", "32", "32"]
    code = main([*argv, "--features", "4", "8", "16", "--memory-format", "contiguous"])
    assert code == 0 and "patch 32x32x32, batch 2, PGPS step 4x4x4" in capsys.readouterr()[0]
    assert set(json.loads(plans_file.read_text())["configurations"]) == {"3d_fullres", "3d_light", "3d_small"}

    text = plans_file.read_text()
    code = main(["light-plans", "--plans", str(plans_file), "--patch-size", "64", "60", "64"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"pgps light-plans: error: {plans_file}: patch_size axis 1 (= 60)")
    assert plans_file.read_text() == text  # unchanged on error
    assert main(["light-plans", "--plans", str(tmp_path / "missing.json")]) == 2
    assert "No such file" in capsys.readouterr()[1]


@pytest.mark.nnunet
def test_nnunet_train_runs_the_light_configuration_in_channels_last(tiny_nnunet, tmp_path):
    """``nnUNetv2_train 1 3d_light 0 -tr nnUNetTrainer_PGPS_Performance -device cpu`` on a copy of the tests' tiny
    dataset (the session's, planned and preprocessed once)."""
    import shutil

    for part in ("raw", "preprocessed"):
        shutil.copytree(tiny_nnunet / part, tmp_path / part)
    plans_file = tmp_path / "preprocessed" / nn.DATASET / "nnUNetPlans.json"  # 3d_fullres reduced to 16^3, 4 stages
    code = main(["light-plans", "--plans", str(plans_file), "--features", "4", "8", "8", "8"])
    assert code == 0
    trainer = "nnUNetTrainer_PGPS_Performance"
    # no progress.png (matplotlib, 0.6 s of CPU an epoch; nothing here reads it)
    env = nn.env(tmp_path, PGPS_EPOCHS="4", PGPS_ITERATIONS_PER_EPOCH="2", PGPS_VAL_ITERATIONS="1",
                 nnUNet_n_proc_DA="0", PGPS_PROGRESS_EVERY="0")  # fmt: skip
    proc = subprocess.run(
        [nn.BIN / "nnUNetv2_train", "1", "3d_light", "0", "-tr", trainer, "-device", "cpu"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = tmp_path / "results" / nn.DATASET / f"{trainer}__nnUNetPlans__3d_light" / "fold_0"
    log = next(folder.glob("training_log_*.txt")).read_text()
    assert "PGPS: network in channels_last_3d memory format" in log
    assert "PGPS: 7 instance norms computed as group norms (one group per channel)" in log
    assert "PGPS stage 0 (1 of 4): patch 8x8x8, batch 16" in log
    assert not (tmp_path / "preprocessed" / nn.DATASET / "nnUNetPlans_3d_light").exists()  # no re-preprocessing
    checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["init_args"]["configuration"] == "3d_light"
    # the checkpoint's keys are those of the instance-norm network nnU-Net's predictor builds from the plans
    planned = nnunet_network(json.loads(plans_file.read_text()), "3d_light", num_classes=3)
    assert list(checkpoint["network_weights"]) == list(planned.state_dict())
    planned.load_state_dict(checkpoint["network_weights"])
    assert json.loads((folder / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"] >= 0
