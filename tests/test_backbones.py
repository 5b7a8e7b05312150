"""Backbones (journal Sec. 3.5, Table 3; Appendix D): ResEnc presets, UNETR and SwinUNETR with the curriculum,
the backbone plans edit and CLI, and the memory-probed PGPS-Performance batch sizes (CPU, tiny sizes)."""

from __future__ import annotations

import copy
import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pgps
from pgps.cli import main
from pgps.nnunet.backbone_plans import (
    BACKBONE_KEY,
    BACKBONES,
    add_backbone_configuration,
    backbone_patch_size,
)
from pgps.nnunet.backbones import SwinUNETRBackbone, UNETRBackbone, build_backbone
from pgps.nnunet.light import MEMORY_FORMAT_KEY
from pgps.nnunet.memory import MemoryProbe, probe_memory
from pgps.nnunet.norm import allow_single_voxel_norm
from pgps.plans import STEPS_KEY
from tests import nnunet_env as nn

HIPPOCAMPUS = Path(__file__).parent / "data" / "nnUNetPlans_3d.json"  # 3d_fullres 40x56x40, b 9; 3d_legacy 80x192x160
TINY_UNETR = nn.TINY_ARCH["unetr"]
TINY_SWIN = nn.TINY_ARCH["swinunetr"]
PATCH_64_64_32 = ["--patch-size", "64", "64", "32"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the CPU is shared, and oversubscribed OpenMP threads make timings erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hippocampus() -> dict:
    return json.loads(HIPPOCAMPUS.read_text())


# -- plans: the P_max rule, the configuration, the CLI (no torch needed) ------------------------------------------
def test_backbone_steps_are_the_architectures_own():
    assert BACKBONES["unetr"].step == 16 and BACKBONES["swinunetr"].step == 32
    assert tuple(UNETRBackbone(1, 2, (16, 16, 16), **TINY_UNETR).patch_size) == (16, 16, 16)  # MONAI's ViT token


@pytest.mark.parametrize(
    ("planned", "step", "expected"),
    [
        ((80, 192, 160), 32, (64, 192, 160)),  # largest multiple not above the planned size
        ((40, 56, 40), 16, (32, 48, 32)),
        ((20, 8, 40), 16, (16, 16, 32)),  # an axis below the step grows to one step
        ((128, 128, 128), 32, (128, 128, 128)),  # already valid: unchanged
    ],
)
def test_p_max_rule(planned, step, expected):
    assert backbone_patch_size(planned, step) == expected


def test_backbone_configuration_inherits_the_planned_one_and_states_its_step():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = hippocampus()
    before = copy.deepcopy(plans)
    out = add_backbone_configuration(plans, "unetr", arch_kwargs={"hidden_size": 384, "num_heads": 6})
    out = add_backbone_configuration(out, "swinunetr", "3d_legacy", "3d_swin_legacy", batch_size=3)
    assert plans == before  # a copy, the input untouched
    unetr = out["configurations"]["3d_unetr"]
    assert unetr["inherits_from"] == "3d_fullres" and unetr[BACKBONE_KEY] == "unetr" and unetr[STEPS_KEY] == [16] * 3
    assert unetr["architecture"]["network_class_name"] == "pgps.nnunet.backbones.UNETRBackbone"
    assert unetr["architecture"]["arch_kwargs"]["hidden_size"] == 384
    assert unetr["architecture"]["arch_kwargs"]["mlp_dim"] == 3072  # MONAI's default kept
    planned = pgps.planned_configuration(out, "3d_unetr")
    assert (planned.patch_size, planned.batch_size, planned.steps) == ((32, 48, 32), 9, (16, 16, 16))
    swin = pgps.planned_configuration(out, "3d_swin_legacy")
    assert (swin.patch_size, swin.batch_size, swin.steps) == ((64, 192, 160), 3, (32, 32, 32))
    # nnU-Net resolves the inheritance: the same preprocessed data, the backbone's patch
    cm = PlansManager(out).get_configuration("3d_unetr")
    assert cm.data_identifier == "nnUNetPlans_3d_fullres" and list(cm.patch_size) == [32, 48, 32]
    assert cm.network_arch_class_name == "pgps.nnunet.backbones.UNETRBackbone"
    # the schedule the core builds from it: 16^3 (one token) to P_max
    schedule = pgps.make_schedule("performance", planned.patch_size, planned.steps, planned.batch_size)
    assert schedule.patch_size_min == (16, 16, 16) and schedule.num_stages == 5
    assert schedule.stages[0].batch_size == 9 * (32 * 48 * 32) // 16**3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "vit"}, "unknown backbone 'vit'; choose one of: unetr, swinunetr"),
        ({"patch_size": (32, 40, 32)}, "patch_size axis 1 (= 40) is not divisible by its step 16"),
        ({"arch_kwargs": {"depths": [1, 1]}}, "UNETR has no architecture argument 'depths'"),
        ({"arch_kwargs": {"hidden_size": "big"}}, "hidden_size='big' must be like its default 768"),
        ({"arch_kwargs": {"hidden_size": 100}}, "hidden_size (100) must be divisible by num_heads (12)"),
        ({"backbone": "swinunetr", "arch_kwargs": {"feature_size": 16}}, "feature_size (16) must be divisible by 12"),
        ({"backbone": "swinunetr", "arch_kwargs": {"depths": [2, 2]}}, "depths=[2, 2] must be like its default"),
        ({"name": "3d_fullres_bs2"}, "'3d_fullres_bs2' already exists and was not made by add_backbone_configuration"),
        ({"name": "3d_fullres"}, "name and source are both '3d_fullres'"),
        ({"source": "2d"}, "UNETR needs a 3D configuration; '2d' has patch size [56, 40]"),
        ({"source": "3d_lowres"}, "configuration '3d_lowres' is not in the plans"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ],
)
def test_backbone_configuration_errors_name_the_problem(kwargs, message):
    args = {"backbone": "unetr", **kwargs}
    with pytest.raises(ValueError) as err:
        add_backbone_configuration(hippocampus(), args.pop("backbone"), **args)
    assert message in str(err.value)


def test_backbone_configuration_replaces_only_its_own_and_leaves_a_light_source_contiguous():
    plans = add_backbone_configuration(hippocampus(), "swinunetr", name="3d_t")
    again = add_backbone_configuration(plans, "unetr", name="3d_t")  # its own: replaced
    assert again["configurations"]["3d_t"][BACKBONE_KEY] == "unetr"
    light = hippocampus()
    light["configurations"]["3d_light"] = {"inherits_from": "3d_fullres", MEMORY_FORMAT_KEY: "channels_last_3d"}
    out = add_backbone_configuration(light, "unetr", "3d_light")
    assert out["configurations"]["3d_unetr"][MEMORY_FORMAT_KEY] == "contiguous"  # not the U-Net's channels-last


def test_arch_options_and_several_backbones_without_the_command_line():
    """``pgps backbone-plans``'s --arch and several backbones, as library calls."""
    from pgps.nnunet.backbone_plans import add_backbone_configurations, parse_arch_options

    arch = parse_arch_options(["hidden_size=96", "unetr:norm_name=batch", "swinunetr:depths=[2,2,2,2]"],
                              ["unetr", "swinunetr"])  # fmt: skip
    assert arch == {"unetr": {"hidden_size": 96, "norm_name": "batch"},
                    "swinunetr": {"hidden_size": 96, "depths": [2, 2, 2, 2]}}  # fmt: skip
    with pytest.raises(ValueError, match="'vit' is not one of the backbones given"):
        parse_arch_options(["vit:x=1"], ["unetr"])
    plans, names = add_backbone_configurations(hippocampus(), ["unetr", "swinunetr"], "3d_fullres")
    assert names == ["3d_unetr", "3d_swinunetr"]
    assert [plans["configurations"][n][BACKBONE_KEY] for n in names] == ["unetr", "swinunetr"]
    with pytest.raises(ValueError, match="gives 1 names for 2 backbones"):
        add_backbone_configurations(hippocampus(), ["unetr", "swinunetr"], "3d_fullres", ["3d_a"])


def test_cli_writes_a_plans_copy_with_both_backbones(tmp_path, capsys):
    src = tmp_path / "nnUNetPlans.json"
    src.write_text(HIPPOCAMPUS.read_text())
    out = tmp_path / "nnUNetTransformerPlans.json"
    argv = ["backbone-plans", "--plans", str(src), "--out", str(out), "--backbone", "unetr", "swinunetr"]
    argv += ["--name", "3d_u", "3d_s", "--arch", "feature_size=24", "--arch", "unetr:hidden_size=384"]
    argv += ["--arch", "unetr:num_heads=6", "--arch", "swinunetr:depths=[1,1,1,1]", "--arch", "norm_name=batch"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "configuration 3d_u inherits 3d_fullres: UNETR, P_max 32x48x32, batch 9, PGPS step 16" in printed
    assert "-p nnUNetTransformerPlans -tr nnUNetTrainer_PGPS_SwinUNETR_Performance" in printed
    assert json.loads(src.read_text()) == hippocampus()  # --out: the source is not edited
    plans = json.loads(out.read_text())
    assert plans["plans_name"] == "nnUNetTransformerPlans"  # nnU-Net names result folders by it
    u, s = (plans["configurations"][n]["architecture"]["arch_kwargs"] for n in ("3d_u", "3d_s"))
    assert (u["feature_size"], u["hidden_size"], u["num_heads"], u["norm_name"]) == (24, 384, 6, "batch")
    assert (s["feature_size"], s["depths"], s["norm_name"]) == (24, [1, 1, 1, 1], "batch")
    assert pgps.planned_configuration(plans, "3d_s").patch_size == (32, 32, 32)
    # in place, and a schedule straight from the result
    assert main(["backbone-plans", "--plans", str(src), "--backbone", "swinunetr", *PATCH_64_64_32]) == 0
    capsys.readouterr()
    assert main(["schedule", "--plans", str(src), "--configuration", "3d_swinunetr", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [s["patch_size"] for s in summary["stages"]] == [[32, 32, 32], [64, 32, 32], [64, 64, 32]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--arch", "hidden_size"], "--arch 'hidden_size' is not [BACKBONE:]KEY=VALUE"),
        (["--arch", "swinunetr:depths=[1,1,1,1]"], "'swinunetr' is not one of the backbones given (unetr)"),
        (["--name", "a", "b"], "--name gives 2 names for 1 backbones"),
        (["--patch-size", "24", "16", "16"], "patch_size axis 0 (= 24) is not divisible by its step 16"),
    ],
)
def test_cli_errors_exit_2(tmp_path, capsys, extra, message):
    src = tmp_path / "nnUNetPlans.json"
    src.write_text(HIPPOCAMPUS.read_text())
    assert main(["backbone-plans", "--plans", str(src), "--backbone", "unetr", *extra]) == 2
    assert message in capsys.readouterr().err
    assert json.loads(src.read_text()) == hippocampus()


# -- core maths: memory-sized batches --------------------------------------------------------------------------
def test_per_sample_memory_and_memory_batch_sizes():
    assert pgps.per_sample_memory({2: 10.0}) == 5.0  # one batch: the whole peak charged to its samples
    assert pgps.per_sample_memory({1: 7.0, 2: 10.0, 4: 16.0}) == pytest.approx(3.0)  # slope: fixed cost 4 left out
    for bad, message in [({}, "empty"), ({2: 0.0}, "must be positive"), ({0: 1.0}, "positive integers"),
                         ({1: 5.0, 2: 5.0}, "does not grow with the batch size")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            pgps.per_sample_memory(bad)
    stages = pgps.journal_stages((128, 128, 128), (32, 32, 32))
    numel_scaled = pgps.performance_batch_sizes(stages, 2)
    # memory proportional to voxels: the same as numel scaling
    assert pgps.memory_batch_sizes(stages, 2, lambda p: 3.0 * pgps.numel(p)) == numel_scaled
    # a per-sample cost that does not shrink with the patch (e.g. padded windows): smaller early batches
    fixed = pgps.memory_batch_sizes(stages, 2, lambda p: pgps.numel(p) + 128**3 / 4)
    assert fixed[0] < numel_scaled[0] and fixed[-1] == 2
    # attention-like growth (faster than voxels): larger early batches
    quadratic = pgps.memory_batch_sizes(stages, 2, lambda p: pgps.numel(p) + pgps.numel(p) ** 2 / 32**3)
    assert quadratic[0] > numel_scaled[0] and quadratic[-1] == 2
    for sizes, m in [(fixed, lambda p: pgps.numel(p) + 128**3 / 4)]:
        assert all(b * m(p) <= 2 * m(stages[-1]) for b, p in zip(sizes, stages, strict=True))


def test_schedule_with_batch_sizes_keeps_the_stages_and_says_why():
    schedule = pgps.make_schedule("performance", (64, 64, 64), (32, 32, 32), 2, epochs=8)
    resized = schedule.with_batch_sizes([5, 4, 3, 2], "measured")
    assert [s.batch_size for s in resized.stages] == [5, 4, 3, 2] and resized.notes[-1] == "measured"
    assert [s.patch_size for s in resized.stages] == [s.patch_size for s in schedule.stages]
    assert [s.epochs for s in resized.stages] == [s.epochs for s in schedule.stages]
    assert pgps.Schedule.from_dict(resized.to_dict()) == resized
    with pytest.raises(ValueError, match="3 batch sizes for 4 stages"):
        schedule.with_batch_sizes([3, 2, 2], "x")
    with pytest.raises(ValueError, match="stage 1: batch size must be a positive integer"):
        schedule.with_batch_sizes([3, 0, 2, 2], "x")


# -- the networks ------------------------------------------------------------------------------------------------
def test_unetr_embedding_is_interpolated_to_the_stage_grid_and_is_the_learned_one_at_p_max():
    from monai.networks.nets import UNETR

    torch.manual_seed(0)
    net = UNETRBackbone(1, 3, (64, 32, 48), **TINY_UNETR)
    learned = net.vit.patch_embedding.position_embeddings
    assert net.token_grid_max == (4, 2, 3) and learned.shape == (1, 24, 48)
    assert net.position_embedding((4, 2, 3)) is learned  # P_max: the parameter itself
    small = net.position_embedding((2, 1, 3))
    assert small.shape == (1, 6, 48)
    # trilinear, align_corners=False, halving an axis: each new token is the mean of the two it covers
    grid = learned.detach().reshape(4, 2, 3, 48)
    expected = grid.reshape(2, 2, 2, 3, 48).mean(dim=1).mean(dim=1, keepdim=True).reshape(1, 6, 48)
    torch.testing.assert_close(small.detach(), expected)
    assert net.position_embedding((8, 2, 3)).shape == (1, 48, 48)  # larger grids work too
    net.eval()
    with torch.no_grad():
        x = torch.randn(2, 1, 64, 32, 48)
        assert torch.equal(net(x), UNETR.forward(net, x))  # exactly MONAI's UNETR at P_max
    net.train()
    out = net(torch.randn(2, 1, 32, 16, 48))
    assert out.shape == (2, 3, 32, 16, 48)
    out.float().mean().backward()
    assert learned.grad is not None and learned.grad.abs().sum() > 0  # smaller stages train the P_max embedding
    with pytest.raises(ValueError, match=r"UNETR input axis 1 \(= 24\) is not a multiple of 16"):
        net(torch.randn(1, 1, 32, 24, 16))
    with pytest.raises(ValueError, match="without deep supervision"):
        UNETRBackbone(1, 3, (32, 32, 32), deep_supervision=True, **TINY_UNETR)


def test_swinunetr_trains_p_min_with_the_single_voxel_norm_and_refuses_other_sizes():
    torch.manual_seed(0)
    net = SwinUNETRBackbone(1, 3, (64, 32, 32), **TINY_SWIN)
    with pytest.raises(ValueError, match="more than 1 spatial element"):  # MONAI's instance norm at the 1^3 map
        net(torch.randn(1, 1, 32, 32, 32))
    assert allow_single_voxel_norm(net) > 0
    for size in [(32, 32, 32), (64, 32, 32)]:
        out = net(torch.randn(2, 1, *size))
        assert out.shape == (2, 3, *size)
        out.mean().backward()
    with pytest.raises(ValueError, match=r"SwinUNETR input axis 0 \(= 48\) is not a multiple of 32"):
        net(torch.randn(1, 1, 48, 32, 32))
    with pytest.raises(ValueError, match=r"patch_size axis 2 \(= 16\) is not divisible by its step 32"):
        SwinUNETRBackbone(1, 3, (64, 32, 16), **TINY_SWIN)


def test_build_backbone_refuses_another_architecture():
    plans = add_backbone_configuration(hippocampus(), "swinunetr", arch_kwargs=TINY_SWIN)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    net = build_backbone(pm.get_configuration("3d_swinunetr").configuration, 1, 4, "swinunetr")
    assert isinstance(net, SwinUNETRBackbone) and net.patch_size_max == (32, 32, 32)
    with pytest.raises(ValueError, match=r"is a SwinUNETR configuration .* --backbone unetr"):
        build_backbone(pm.get_configuration("3d_swinunetr").configuration, 1, 4, "unetr")
    with pytest.raises(ValueError, match=r"not a backbone configuration \(network .*PlainConvUNet\)"):
        build_backbone(pm.get_configuration("3d_fullres").configuration, 1, 4, "unetr")


# -- the memory probe --------------------------------------------------------------------------------------------
def tiny_network(backbone: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    if backbone == "unetr":
        return UNETRBackbone(1, 3, (32, 32, 16), **TINY_UNETR), (16, 16, 16)
    net = SwinUNETRBackbone(1, 3, (64, 32, 32), **TINY_SWIN)
    allow_single_voxel_norm(net)
    return net, (32, 32, 32)


@pytest.mark.parametrize("method", ["cpu_profiler", "saved_tensors"])
@pytest.mark.parametrize("backbone", ["unetr", "swinunetr"])
def test_memory_probe_is_monotone_on_cpu_and_its_batches_fit_the_budget(backbone, method):
    net, step = tiny_network(backbone)
    p_max = (32, 32, 16) if backbone == "unetr" else (64, 32, 32)
    stages = pgps.journal_stages(p_max, step)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    probe = probe_memory(net, stages, 1, "cpu", (2,), method)
    assert probe.method == method and probe.device == "cpu" and probe.patch_sizes == tuple(stages)
    per_sample = probe.bytes_per_sample
    assert all(a < b for a, b in itertools.pairwise(per_sample)), per_sample  # grows with the patch
    batches = probe.batch_sizes_for(2)
    assert batches[-1] == 2 and all(b >= 2 for b in batches)
    assert all(b * m <= 2 * per_sample[-1] for b, m in zip(batches, per_sample, strict=True))
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())  # no optimizer step
    assert MemoryProbe.from_dict(probe.to_dict(2)) == probe
    row = probe.to_dict(2)["stages"][0]
    assert row["numel_batch_size"] == pgps.performance_batch_sizes(stages, 2)[0]
    assert row["memory_batch_size"] == batches[0]


def test_memory_probe_defaults_and_errors():
    net, _ = tiny_network("unetr")
    probe = probe_memory(net, [(16, 16, 16), (32, 16, 16)], 1, "cpu", batch_sizes=(1, 2, 3), method="auto")
    assert probe.method == "cpu_profiler" and len(probe.peak_bytes[0]) == 3
    with pytest.raises(ValueError, match="unknown memory probe method 'gpu'"):
        probe_memory(net, [(16, 16, 16)], 1, "cpu", method="gpu")
    with pytest.raises(ValueError, match="method 'cuda' needs a CUDA device"):
        probe_memory(net, [(16, 16, 16)], 1, "cpu", method="cuda")
    with pytest.raises(ValueError, match="distinct positive integers"):
        probe_memory(net, [(16, 16, 16)], 1, "cpu", batch_sizes=(2, 2))


def test_memory_probe_warms_up_every_shape_on_cuda_before_measuring_it():
    """nnUNetv2_train turns on cudnn.benchmark before the probe runs, and cuDNN autotunes a shape on its first step
    (trial workspaces): on the (emulated) CUDA device, the step right before each measured one has its shape and is
    not measured."""
    from pgps.nnunet import memory
    from tests.cuda_emulation import EmulatedCuda
    from tests.cuda_harness import cuda_services_replaced

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.LeakyReLU(), torch.nn.Conv3d(4, 2, 1))
    steps: list[tuple[tuple[int, ...], bool]] = []  # (input shape, measured) of every step the probe ran
    measuring = [False]
    net.register_forward_pre_hook(lambda module, args: steps.append((tuple(args[0].shape), measuring[0])))
    stages, batches = [(8, 8, 8), (16, 8, 8), (16, 16, 16)], (1, 3)
    with EmulatedCuda(), cuda_services_replaced():
        emulated_peak = memory.PEAKS["cuda"]

        def measured(network, shape, device):
            measuring[0] = True
            try:
                return emulated_peak(network, shape, device)
            finally:
                measuring[0] = False

        memory.PEAKS["cuda"] = measured  # restored with the other replacements on exit
        probe = probe_memory(net.cuda(), stages, 1, "cuda", batches, method="cuda")
    measured_at = [i for i, (_, m) in enumerate(steps) if m]
    shapes = [(b, 1, *p) for p in stages for b in batches]
    assert [steps[i][0] for i in measured_at] == shapes and probe.method == "cuda"
    assert all(steps[i - 1] == (steps[i][0], False) for i in measured_at)  # the same shape, unmeasured, just before


def test_memory_probe_resume_keeps_the_batches_the_run_started_with():
    from pgps.nnunet.memory import MemoryProbeMixin

    class Base:  # stands for PGPSMixin's checkpoint hooks
        def curriculum_state_dict(self) -> dict:
            return {"curriculum": pgps.Curriculum(self.schedule).state_dict()}

        def load_curriculum_state_dict(self, state: dict | None) -> None:
            self.loaded = state

    class Trainer(MemoryProbeMixin, Base):
        pass

    numel_schedule = pgps.make_schedule("performance", (64, 32, 32), (32, 32, 32), 2, epochs=4)
    probe = MemoryProbe("cpu", "cpu_profiler", (2,), ((32, 32, 32), (64, 32, 32)), ((300,), (400,)))
    started = numel_schedule.with_batch_sizes(probe.batch_sizes_for(2), "probed")
    first = Trainer()
    first.schedule, first.memory_probe = started, probe
    state = first.curriculum_state_dict()
    assert MemoryProbe.from_dict(state["memory_probe"]) == probe and started.stages[0].batch_size == 2
    resumed = Trainer()  # a new probe at restart measured differently: 3 samples at 32^3
    resumed.schedule = numel_schedule.with_batch_sizes([3, 2], "probed again")
    resumed.memory_probe, resumed._planned_voxels = None, {}
    resumed.load_curriculum_state_dict(state)
    assert resumed.schedule == started and resumed.memory_probe == probe and resumed.loaded is state
    assert resumed._planned_voxels["planned_iterated_voxels"] == pgps.iterated_voxels(started)
    other = Trainer()  # another curriculum (more epochs): not adopted, PGPSMixin then refuses the checkpoint
    other.schedule = pgps.make_schedule("performance", (64, 32, 32), (32, 32, 32), 2, epochs=6)
    other.memory_probe, other._planned_voxels = None, {}
    other.load_curriculum_state_dict(state)
    assert other.schedule != started and other.memory_probe is None


# -- inside nnU-Net (CPU, tiny dataset) -------------------------------------------------------------------------
RESENC = """
import json, os, sys, torch
from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments
from nnunetv2.run.run_training import get_trainer_from_args

def trainer(size):
    plans, cpu = f"nnUNetResEncUNet{size}Plans", torch.device("cpu")
    return get_trainer_from_args("1", "3d_fullres", 0, "nnUNetTrainer_PGPS_Performance", plans, device=cpu)

out = {}
for size in ("M", "L", "XL"):
    plan_experiments([1], f"nnUNetPlannerResEnc{size}")  # planning only: ResEnc plans reuse the 3d_fullres data
    t = trainer(size)
    t.initialize()
    s = t.schedule
    out[size] = [type(t.network).__name__, list(s.steps), list(s.patch_size_min), list(s.patch_size_max),
                 s.batch_size_base, [st.batch_size for st in s.stages], s.num_stages]
print(json.dumps(out), flush=True)
os.environ["nnUNet_n_proc_DA"] = "0"  # in-process data loading: no worker start per stage
t = trainer("M")
t.num_epochs = out["M"][-1]  # one epoch per stage
t.disable_checkpointing = True  # nnU-Net's --disable_checkpointing: nothing here needs the weights
t.run_training()
"""


def check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def read_telemetry(folder: Path) -> list[dict]:
    with open(folder / "pgps_telemetry.csv") as f:
        return list(csv.DictReader(f))


def fold(results: Path, trainer: str, plans: str, configuration: str) -> Path:
    return results / nn.DATASET / f"{trainer}__{plans}__{configuration}" / "fold_0"


def python(root: Path, results: Path, code: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    short = {"PGPS_EPOCHS": "2", "PGPS_ITERATIONS_PER_EPOCH": "1", "PGPS_VAL_ITERATIONS": "1", "nnUNet_n_proc_DA": "0",
             "PGPS_PROGRESS_EVERY": "0"}  # no progress.png: matplotlib, 0.6 s of CPU an epoch; unread here  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=nn.env(root, results, **{**short, **extra}),
        capture_output=True, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tiny_nnunet):
    return tiny_nnunet


@pytest.mark.nnunet
@pytest.mark.slow
def test_resenc_presets_give_steps_from_their_strides_and_train_every_stage(tiny):
    """Appendix D (Tables D.7/D.8): the U-Net trainers on nnUNetPlannerResEnc{M,L,XL} plans, no trainer of their own."""
    results = tiny / "results_resenc"
    proc = python(tiny, results, RESENC, nnUNet_n_proc_DA="1")  # the planner sets torch's threads from it (not 0)
    check(proc)
    found = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith('{"M"')))
    folder = tiny / "preprocessed" / nn.DATASET
    for size, (network, steps, p_min, p_max, b_base, batches, _) in found.items():
        plans = json.loads((folder / f"nnUNetResEncUNet{size}Plans.json").read_text())
        conf = plans["configurations"]["3d_fullres"]
        assert network == "ResidualEncoderUNet" and conf["data_identifier"] == "nnUNetPlans_3d_fullres"
        expected = pgps.steps_from_strides(conf["architecture"]["arch_kwargs"]["strides"])
        assert tuple(steps) == tuple(p_min) == expected == pgps.planned_configuration(plans).steps
        assert p_max == conf["patch_size"] and b_base == conf["batch_size"]
        assert batches == [s.batch_size for s in pgps.make_schedule("performance", p_max, steps, b_base).stages]
    # the short run of ResEnc M: every stage, the first with a 1x1x1 bottleneck of residual blocks
    _, steps, _, p_max, _, batches, _ = found["M"]
    rows = read_telemetry(fold(results, "nnUNetTrainer_PGPS_Performance", "nnUNetResEncUNetMPlans", "3d_fullres"))
    assert [r["patch_size"] for r in rows] == ["x".join(map(str, s)) for s in pgps.journal_stages(p_max, steps)]
    assert [int(r["batch_size"]) for r in rows] == batches
    assert all(float(r["train_loss"]) == float(r["train_loss"]) for r in rows)  # finite (not NaN)


BACKBONE_RUNS = """
import json, os, sys, traceback
import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.run.run_training import get_trainer_from_args


def train_and_predict(trainer, configuration, plans):  # training, then nnU-Net's predictor at P_max
    get_trainer_from_args("1", configuration, 0, trainer, plans, device=torch.device("cpu")).run_training()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=True, device=torch.device("cpu"),
                                perform_everything_on_device=False, verbose=False, allow_tqdm=False)
    folder = os.path.join(os.environ["nnUNet_results"], "Dataset001_Tiny", f"{trainer}__{plans}__{configuration}")
    predictor.initialize_from_trained_model_folder(folder, use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    image = np.random.default_rng(0).normal(size=(1, 24, 24, 24)).astype(np.float32)
    seg = predictor.predict_single_npy_array(image, {"spacing": [1.0, 1.0, 1.0]}, None, None, False)
    return {"network": type(predictor.network).__name__, "seg_shape": list(seg.shape)}


def train(trainer, configuration, plans):
    get_trainer_from_args("1", configuration, 0, trainer, plans, device=torch.device("cpu")).run_training()


def refuse(cases):
    out = []
    for trainer, configuration, plans in cases:
        try:
            get_trainer_from_args("1", configuration, 0, trainer, plans, device=torch.device("cpu")).initialize()
            out.append("no error")
        except ValueError as exc:
            out.append(str(exc))
    return out


for name, call in json.loads(sys.argv[1]):  # each run reports on its own line: one failing leaves the others
    try:
        print(name, "DONE", json.dumps(globals()[call[0]](*call[1:])), flush=True)
    except Exception:
        print(name, "FAILED", json.dumps(traceback.format_exc()), flush=True)
"""

UNETR = ("nnUNetTrainer_PGPS_UNETR_Performance_MemoryProbe", "3d_unetr", nn.TRANSFORMER_PLANS)
SWIN = ("nnUNetTrainer_PGPS_SwinUNETR_Performance", "3d_swinunetr", nn.TRANSFORMER_PLANS)
REFUSED = [
    ["nnUNetTrainer_PGPS_UNETR_Performance", "3d_fullres", "nnUNetPlans"],
    ["nnUNetTrainer_PGPS_UNETR_Efficiency", "3d_swinunetr", nn.TRANSFORMER_PLANS],
    ["nnUNetTrainer_PGPS_SwinUNETR_CPS", "3d_swin_bad", "nnUNetBadPlans"],
]


@pytest.fixture(scope="module")
def backbone_runs(tiny):
    """One process (nnU-Net's import is most of a short run) for the backbone runs of the tests below: UNETR
    trained and predicting, SwinUNETR trained, and trainers initialised on configurations they cannot train.
    Returns ``(results folder, {name: (status, value)}, output)``."""
    folder = tiny / "preprocessed" / nn.DATASET
    plans = json.loads((folder / f"{nn.TRANSFORMER_PLANS}.json").read_text())
    bad = copy.deepcopy(plans["configurations"]["3d_swinunetr"])
    bad["patch_size"] = [64, 48, 32]  # edited by hand: not a multiple of 32
    plans["configurations"]["3d_swin_bad"] = bad
    plans["plans_name"] = "nnUNetBadPlans"
    (folder / "nnUNetBadPlans.json").write_text(json.dumps(plans))
    runs = [("unetr", ["train_and_predict", *UNETR]), ("swin", ["train", *SWIN]), ("refuse", ["refuse", REFUSED])]
    results = tiny / "results_backbones"
    proc = python(tiny, results, BACKBONE_RUNS, json.dumps(runs))
    output = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, output
    found = {}
    for line in proc.stdout.splitlines():
        name, _, rest = line.partition(" ")
        if name in dict(runs) and rest.startswith(("DONE ", "FAILED ")):
            status, value = rest.split(" ", 1)
            found[name] = status, json.loads(value)
    return results, found, output


def outcome(backbone_runs, name):
    """The value a run of :func:`backbone_runs` returned; its traceback if it failed."""
    _, found, output = backbone_runs
    assert name in found, output
    status, value = found[name]
    assert status == "DONE", value
    return value


@pytest.mark.nnunet
def test_unetr_trains_two_stages_with_probed_batches_and_predicts_at_p_max(backbone_runs):
    predicted = outcome(backbone_runs, "unetr")
    trainer, conf, plans = UNETR
    folder = fold(backbone_runs[0], trainer, plans, conf)
    rows = read_telemetry(folder)
    assert [r["patch_size"] for r in rows] == ["16x16x16", "32x16x16"]
    summary = json.loads((folder / "pgps_summary.json").read_text())
    probe = summary["memory_probe"]
    assert probe["method"] == "cpu_profiler" and probe["probe_batch_sizes"] == [2]
    assert [s["patch_size"] for s in probe["stages"]] == [[16, 16, 16], [32, 16, 16]]
    assert [int(r["batch_size"]) for r in rows] == [s["memory_batch_size"] for s in probe["stages"]]
    assert [s["numel_batch_size"] for s in probe["stages"]] == [4, 2]
    assert probe["budget_bytes"] == 2 * probe["stages"][-1]["bytes_per_sample"]
    assert any("memory probe" in n for n in summary["schedule"]["notes"])
    log = next(folder.glob("training_log_*.txt")).read_text()
    assert "token grid 1x1x1 (1 tokens, positional embedding interpolated from 2x1x1)" in log
    assert "token grid 2x1x1 (2 tokens, positional embedding learned)" in log
    # inference: nnU-Net's predictor finds the trainer and builds the network through it, at P_max
    assert predicted == {"network": "UNETRBackbone", "seg_shape": [24, 24, 24]}


@pytest.mark.nnunet
def test_swinunetr_trains_two_stages_of_performance(backbone_runs):
    outcome(backbone_runs, "swin")
    trainer, conf, plans = SWIN
    rows = read_telemetry(fold(backbone_runs[0], trainer, plans, conf))
    assert [r["patch_size"] for r in rows] == ["32x32x32", "64x32x32"]
    assert [int(r["batch_size"]) for r in rows] == [4, 2]
    assert all(float(r["train_loss"]) == float(r["train_loss"]) for r in rows)


@pytest.mark.nnunet
def test_backbone_trainers_refuse_a_configuration_they_cannot_train(backbone_runs):
    plain, other, off_step = outcome(backbone_runs, "refuse")
    assert "nnUNetTrainer_PGPS_UNETR_Performance trains UNETR, but configuration 3d_fullres is not a backbone" in plain
    assert "pgps backbone-plans --plans <nnUNetPlans.json> --backbone unetr" in plain
    assert "configuration 3d_swinunetr is for swinunetr" in other
    assert "SwinUNETR needs P_max to be a multiple of 32 per axis" in off_step
    assert "P_max 64x48x32, axis 1 (= 48) is not" in off_step


def test_the_trainers_start_without_monai():
    """Every PGPS trainer module loads without MONAI (about a second of CPU per trainer process); MONAI comes with
    the first backbone network built (pgps.nnunet.backbone_trainer)."""
    code = (
        "import sys\n"
        "from pgps.nnunet import variants\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'monai'], 'monai imported with the trainers'\n"
        "from pgps.nnunet.backbones import UNETRBackbone, build_backbone\n"
        "assert 'monai' in sys.modules and build_backbone.__module__ == 'pgps.nnunet.backbone_trainer'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
