"""The CUDA training path on a machine without a GPU (CPU/CUDA mixes fail here, not after a cluster queue).

Two tools, each where it is exact (see ``tests/cuda_emulation.py``):

- :class:`tests.cuda_emulation.EmulatedCuda` runs one real training iteration and one validation step of
  every trainer ``pgps trainers`` lists (a training-length variant by its base, from which it differs only
  in its length), and of loss and learning-rate variants, with device ``"cuda"`` (``tests/cuda_harness.py``:
  loader, the batched augmentation deferred to the device, telemetry, forward, deep-supervision loss,
  backward, optimizer step, validation); every operator that mixes CPU and CUDA tensors raises.
- torch's ``FakeTensorMode`` (tensors with device ``cuda`` and no data) runs the networks' forward and
  loss under CUDA autocast, and the telemetry, where no data-dependent value is needed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError, FakeTensorMode

import pgps
from pgps.sizes import fmt_size
from tests import nnunet_env as nn
from tests.cuda_emulation import DeviceMismatchError, EmulatedCuda

pytestmark = pytest.mark.nnunet
REPO = Path(__file__).resolve().parents[1]
U_NET = ("3d_fullres", "nnUNetPlans")
BACKBONES = {"UNETR": ("3d_unetr", nn.TRANSFORMER_PLANS), "SwinUNETR": ("3d_swinunetr", nn.TRANSFORMER_PLANS)}
FAMILIES = {
    # trainer: (configuration, plans, batch-size cap, batched augmentation on the device); with every other
    # listed trainer added by listed_trainers() below
    "nnUNetTrainer_PGPS_CPS": (*U_NET, None, False),
    "nnUNetTrainer_PGPS_Efficiency": (*U_NET, None, False),
    "nnUNetTrainer_PGPS_Performance": (*U_NET, None, True),
    # Single-Crop needs a distinct case per patch: the tiny fold has 4, so its stages are capped at 4
    "nnUNetTrainer_PGPS_Performance_SingleCrop": (*U_NET, 4, True),
    "nnUNetTrainer_PGPS_Performance_MultiCrop": (*U_NET, None, True),
    "nnUNetTrainer_PGPS_Performance_SingleVolume": (*U_NET, None, True),
    "nnUNetTrainer_PGPS_Performance_NoMirroring": (*U_NET, None, True),
    "nnUNetTrainer_PGPS_MICCAI": (*U_NET, None, False),
    "nnUNetTrainer_PGPS_MICCAIPlus": (*U_NET, None, False),
    "nnUNetTrainer_PGPS_RPSS": (*U_NET, None, False),
    "nnUNetTrainer_PGPS_ProgressiveResolution": (*U_NET, None, False),
    "nnUNetTrainer_PGPS_Performance_MemoryProbe": (*U_NET, None, True),
    "nnUNetTrainer_PGPS_UNETR_Performance_MemoryProbe": ("3d_unetr", nn.TRANSFORMER_PLANS, None, True),
    "nnUNetTrainer_PGPS_UNETR_Efficiency": ("3d_unetr", nn.TRANSFORMER_PLANS, None, False),
    "nnUNetTrainer_PGPS_SwinUNETR_Performance": ("3d_swinunetr", nn.TRANSFORMER_PLANS, None, True),
    "nnUNetTrainer_PGPS_SwinUNETR_CPS": ("3d_swinunetr", nn.TRANSFORMER_PLANS, None, False),
    # loss variants (pgps.nnunet.losses): their terms run on the device too
    "nnUNetTrainer_PGPS_Performance_DicePerim": (*U_NET, None, True),
    "nnUNetTrainer_PGPS_Efficiency_DiceFocal": (*U_NET, None, False),
    "nnUNetTrainer_PGPS_CPS_DiceTopK10": (*U_NET, None, False),
    "nnUNetTrainer_PGPS_Performance_LRsqrt": (*U_NET, None, True),  # learning-rate variant
}


def length_base(trainer: type) -> type | None:
    """The trainer a training-length variant (``_10pct`` ...) derives from with nothing but its length."""
    own = {k for k in vars(trainer) if not k.startswith("__")}
    return trainer.__bases__[0] if own == {"training_length"} and len(trainer.__bases__) == 1 else None


def listed_trainers() -> dict[str, tuple]:
    """Every trainer of ``pgps trainers`` except training-length variants, with its configuration, batch cap and
    whether its batches are augmented on the device (a batch sampling strategy with the batched augmentation)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from pgps.nnunet.variants import TRAINERS, trainer_class

    out = {}
    for name in TRAINERS:
        cls = trainer_class(name)
        if length_base(cls) is not None:
            continue
        backbone = next((part for part in name.split("_") if part in BACKBONES), None)
        own_transforms = cls.get_training_transforms is not nnUNetTrainer.get_training_transforms
        deferred = bool(cls.batched_augmentation and cls.batch_sampling) and not own_transforms
        cap = 4 if cls.batch_sampling == "single_crop" else None  # a distinct case per patch: the tiny fold has 4
        out[name] = (*BACKBONES.get(backbone, U_NET), cap, deferred)
    return out


FAMILIES.update({k: v for k, v in listed_trainers().items() if k not in FAMILIES})
IGNORES_STAGE = "nnUNetTrainer_PGPS_Efficiency"  # run a second time with a loader that always builds P_max
SCALED = "nnUNetTrainer_PGPS_Performance"  # run with nnU-Net's gradient scaler enabled, as on a GPU
REGION_RUNS = {"2": "regions"}  # nn.REGIONS' id: the dataset with regions, an ignore label and mask-for-norm
ON_REGIONS = ("nnUNetTrainer_PGPS_CPS", "nnUNetTrainer_PGPS_Efficiency", "nnUNetTrainer_PGPS_Performance",
              "nnUNetTrainer_PGPS_Performance_SingleVolume")  # fmt: skip
WITH_WORKERS = ("nnUNetTrainer_PGPS_CPS", "nnUNetTrainer_PGPS_Performance")  # run again with 2 pinning workers
WORKERS = 2


def harness(root: Path, specs: list[list]) -> dict[str, dict]:
    cases = sorted(p.stem for p in (root / "preprocessed" / nn.DATASET / "nnUNetPlans_3d_fullres").glob("*.pkl"))
    difficulty = root / "difficulty_cuda.csv"  # the data-curriculum trainers' input: Dice scores, none erroneous
    difficulty.write_text("case,ds\n" + "".join(f"{c},{0.99 - 0.02 * i:.2f}\n" for i, c in enumerate(cases)))
    env = nn.env(root, root / "results_cuda", nnUNet_n_proc_DA="0", nnUNet_compile="f", PYTHONPATH=str(REPO),
                 PGPS_DIFFICULTY=str(difficulty))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cuda_harness", json.dumps(specs)], env=env, cwd=REPO, capture_output=True,
        text=True,
    )  # fmt: skip
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"trainer"')]
    assert len(records) == len(specs), proc.stdout[-3000:] + proc.stderr[-3000:]

    def key(r: dict):  # what the run varies: the scaler, the dataset, the workers or the broken loader
        variant = r.get("grad_scaler") or REGION_RUNS.get(r.get("dataset")) or r.get("workers")
        return variant or r.get("ignore_stage", False)

    return {(r["trainer"], key(r)): r for r in records}


@pytest.fixture(scope="module")
def emulated(tiny_nnunet):
    specs = [[trainer, conf, plans, cap] for trainer, (conf, plans, cap, _) in FAMILIES.items()]
    specs.append([IGNORES_STAGE, *U_NET, None, True])
    specs += [[SCALED, *U_NET, None, False, overflow] for overflow in ("finite", "inf")]
    if not (tiny_nnunet / "preprocessed" / nn.REGIONS).is_dir():
        nn.write_raw(tiny_nnunet, regions=True)
        nn.plan_and_preprocess(tiny_nnunet, dataset=nn.REGIONS)
    specs += [[trainer, *U_NET, None, False, None, "2"] for trainer in ON_REGIONS]
    specs += [[trainer, *U_NET, None, False, None, "1", WORKERS] for trainer in WITH_WORKERS]
    return harness(tiny_nnunet, specs)


def check_against_schedule(record: dict) -> None:
    """What the network received and the telemetry measured, against the trainer's own schedule."""
    schedule = pgps.Schedule.from_dict(record["schedule"])
    stage = schedule.stages[record["stage"]]
    assert record["train_input"]["shape"] == [stage.batch_size, 1, *stage.patch_size]
    row = record["telemetry"]
    assert (row["patch_size"], row["batch_size"]) == (fmt_size(stage.patch_size), stage.batch_size)
    assert row["iterated_voxels"] == stage.tensor_voxels and row["iterations"] == 1


@pytest.mark.parametrize("trainer", list(FAMILIES))
def test_one_iteration_and_one_validation_step_with_device_cuda(emulated, trainer):
    record = emulated[(trainer, False)]
    assert record["ok"], f"{record.get('error')}\n{record.get('traceback', '')}"
    deferred = FAMILIES[trainer][3]
    schedule = pgps.Schedule.from_dict(record["schedule"])
    # the network received CUDA tensors of the stage's batch and patch size, and validated at P_max, b_base
    assert record["train_input"]["device"] == "cuda:0"
    check_against_schedule(record)
    assert record["val_input"] == {
        "device": "cuda:0", "shape": [schedule.batch_size_base, 1, *schedule.patch_size_max], "dtype": "float32",
    }  # fmt: skip
    # PGPS-Performance's samplers hand a cropped batch over and augment it on the device
    assert record["loader_data"]["device"] == ("cuda:0" if deferred else "cpu")
    # backward and the optimizer step ran on the device and changed the weights
    assert record["param_devices"] == record["grad_devices"] == ["cuda:0"]
    assert record["params_changed"] > record["params"] // 3
    assert math.isfinite(record["val_loss"])
    # forced-foreground fallbacks: counted by the loader of every trainer (the tiny cases all hold foreground)
    assert record["telemetry"]["fg_fallbacks"] == 0
    if "MemoryProbe" in trainer:  # the probe ran its steps on the device (peaks measured by the stand-in)
        probe = record["memory_probe"]
        assert (probe["device"], probe["method"]) == ("emulated CUDA", "cuda")
        assert [s["memory_batch_size"] for s in probe["stages"]] == [s.batch_size for s in schedule.stages]


@pytest.mark.parametrize("trainer", ON_REGIONS)
def test_regions_an_ignore_label_and_mask_for_norm_on_the_device(emulated, trainer):
    """nnU-Net's region targets (one channel per region and the ignore mask last), with z-score normalisation inside
    the nonzero mask: the batches (PGPS-Performance's augmented on the device), the loss with its ignore mask, the
    validation and the telemetry run on the emulated GPU and follow the schedule."""
    record = emulated[(trainer, "regions")]
    assert record["ok"], f"{record.get('error')}\n{record.get('traceback', '')}"
    check_against_schedule(record)
    stage = pgps.Schedule.from_dict(record["schedule"]).stages[record["stage"]]
    target = record["loader_target"]["list"][0]  # deep supervision: the full-resolution map first
    assert target["shape"] == [stage.batch_size, 2 + 1, *stage.patch_size]  # regions a, b and the ignore mask
    assert target["device"] == record["loader_data"]["device"] == ("cuda:0" if FAMILIES[trainer][3] else "cpu")
    assert record["param_devices"] == record["grad_devices"] == ["cuda:0"] and math.isfinite(record["val_loss"])
    assert 0 < record["telemetry"]["class_presence_share"] <= 1 and record["params_changed"] > record["params"] // 3


@pytest.mark.parametrize("gradients", ["finite", "inf"])
def test_an_enabled_grad_scaler_skips_the_step_whose_gradients_overflow(emulated, gradients):
    """nnU-Net's GradScaler as on a GPU (scale, unscale, the overflow check on the device): an overflowing
    gradient skips the optimizer step and backs the scale off; finite gradients step and keep the scale."""
    record = emulated[(SCALED, gradients)]
    assert record["ok"], f"{record.get('error')}\n{record.get('traceback', '')}"
    (initial, after), backoff = record["scale"], record["backoff_factor"]
    assert record["param_devices"] == record["grad_devices"] == ["cuda:0"] and math.isfinite(record["val_loss"])
    if gradients == "inf":
        assert record["params_changed"] == 0 and after == initial * backoff
    else:
        assert record["params_changed"] > record["params"] // 3 and after == initial


@pytest.mark.parametrize("trainer", WITH_WORKERS)
def test_loader_workers_hand_over_pinned_batches_copied_without_blocking(emulated, trainer):
    """With augmentation workers, batchgenerators pins each batch in its own thread (as on a GPU) and the trainer's
    copies of it to the device are non-blocking: the same copies as without workers, that many fewer of them block
    the host. PGPS-Performance hands its crops over pinned and augments them on the device."""
    alone, pinned = emulated[(trainer, False)], emulated[(trainer, WORKERS)]
    assert pinned["ok"], f"{pinned.get('error')}\n{pinned.get('traceback', '')}"
    check_against_schedule(pinned)
    assert pinned["loader_data"] == alone["loader_data"] and pinned["param_devices"] == ["cuda:0"]
    assert pinned["h2d"]["all"] == alone["h2d"]["all"]
    if FAMILIES[trainer][3]:  # the device augmentation's copies: the crops and their context (batched.py)
        assert pinned["pinned"] is None and pinned["h2d"]["blocking"] < alone["h2d"]["blocking"]
    else:  # the batch's data and every deep-supervision target
        copies = 1 + len(pinned["loader_target"]["list"])
        assert (pinned["pinned"], alone["pinned"]) == (True, False)
        assert pinned["h2d"]["blocking"] == alone["h2d"]["blocking"] - copies


def test_every_listed_trainer_is_emulated_or_a_training_length_of_one():
    from pgps.nnunet.variants import TRAINERS, trainer_class

    lengths = {name: length_base(trainer_class(name)) for name in TRAINERS if name not in FAMILIES}
    assert lengths and all(base is not None and base.__name__ in FAMILIES for base in lengths.values()), lengths
    assert len(FAMILIES) > 40


def test_a_loader_that_ignores_the_stage_fails_the_schedule_check(emulated):
    """The measured telemetry can fail: a loader that always builds the planned (P_max) stage is caught."""
    record = emulated[(IGNORES_STAGE, True)]
    assert record["ok"], record.get("traceback")
    assert record["stage"] == 0 and record["telemetry"]["patch_size"] == fmt_size(nn.PATCH)
    with pytest.raises(AssertionError):
        check_against_schedule(record)


# -- FakeTensorMode: CUDA autocast and the telemetry, without values -----------------------------------------
def fake_cuda_module(module: torch.nn.Module) -> torch.nn.Module:
    """Move ``module`` to the fake CUDA device. ``Module.to`` would visit modules the decoder shares with the
    encoder twice, and a fake parameter cannot be swapped a second time (on a GPU the second visit is a no-op)."""
    for m in module.modules():
        for name, p in m._parameters.items():
            if p is not None:
                m._parameters[name] = torch.nn.Parameter(p.to("cuda:0"), requires_grad=p.requires_grad)
        for name, b in m._buffers.items():
            if b is not None:
                m._buffers[name] = b.to("cuda:0")
    return module


def cuda_autocast() -> torch.autocast:
    """nnU-Net's ``autocast("cuda")``; torch switches it off without a GPU, the fake tensors need it on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        autocast = torch.autocast("cuda", enabled=False)
    autocast._enabled = True
    return autocast


FORWARD = """
import json, sys, torch
sys.path.insert(0, sys.argv[2])
from nnunetv2.run.run_training import get_trainer_from_args
from torch._subclasses.fake_tensor import FakeTensorMode
from tests.test_cuda import cuda_autocast, fake_cuda_module
out = {}
for trainer_name, conf, plans in json.loads(sys.argv[1]):
    trainer = get_trainer_from_args("1", conf, 0, trainer_name, plans, device=torch.device("cpu"))
    trainer.initialize()
    stage = trainer.schedule.stages[0]
    scales = trainer._get_deep_supervision_scales() if trainer.enable_deep_supervision else None
    with FakeTensorMode(allow_non_fake_inputs=True):
        network = fake_cuda_module(trainer.network)
        x = torch.empty((stage.batch_size, 1, *stage.patch_size), device="cuda:0")
        shapes = [[round(p * s) for p, s in zip(stage.patch_size, scale)] for scale in scales] if scales else None
        target = ([torch.zeros((stage.batch_size, 1, *p), device="cuda:0") for p in shapes] if shapes
                  else torch.zeros((stage.batch_size, 1, *stage.patch_size), device="cuda:0"))
        with cuda_autocast():
            output = network(x)
            loss = trainer.loss(output, target)
        first = output[0] if isinstance(output, (list, tuple)) else output
        out[trainer_name] = {"output": [str(first.device), str(first.dtype), list(first.shape)],
                             "loss": [str(loss.device), str(loss.dtype)],
                             "stage": [stage.batch_size, *stage.patch_size]}
print(json.dumps(out))
"""


def test_forward_and_loss_under_cuda_autocast_with_fake_tensors(tiny_nnunet):
    """float16 activations on the device, a float32 loss: the forward pass of every network family as CUDA
    autocast runs it (the emulation computes on the CPU and cannot use CUDA's autocast)."""
    specs = [
        ["nnUNetTrainer_PGPS_Performance", *U_NET],
        ["nnUNetTrainer_PGPS_UNETR_Performance", "3d_unetr", nn.TRANSFORMER_PLANS],
        ["nnUNetTrainer_PGPS_SwinUNETR_Performance", "3d_swinunetr", nn.TRANSFORMER_PLANS],
    ]
    env = nn.env(tiny_nnunet, tiny_nnunet / "results_fake", nnUNet_compile="f")
    proc = subprocess.run([sys.executable, "-c", FORWARD, json.dumps(specs), str(REPO)], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for trainer, _, _ in specs:
        batch, *patch = found[trainer]["stage"]
        assert found[trainer]["output"] == ["cuda:0", "torch.float16", [batch, found[trainer]["output"][2][1], *patch]]
        assert found[trainer]["loss"] == ["cuda:0", "torch.float32"], trainer


def telemetry_batch(mode: FakeTensorMode | None, device: str):
    """A Performance-like batch with deep supervision: data (4, 1, 8^3), targets at 8^3 and 4^3."""
    context = mode if mode is not None else torch.no_grad()
    with context:
        data = torch.zeros((4, 1, 8, 8, 8), device=device)
        target = [torch.zeros((4, 1, 8, 8, 8), device=device), torch.zeros((4, 1, 4, 4, 4), device=device)]
    return data, target


def test_telemetry_runs_on_cuda_tensors_without_mixing_devices():
    """The per-iteration telemetry (shapes, foreground and class shares) with a CUDA target: the labels it
    compares with are made on the target's device, and nothing is copied to the host before the epoch ends."""
    from pgps.nnunet.telemetry import Telemetry

    telemetry = Telemetry([1, 2], has_regions=False)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        data, target = telemetry_batch(mode, "cuda:0")
        telemetry.add(data, target, fallbacks=0)
        assert all(share.device == torch.device("cuda:0") for share in telemetry._shares)
    assert telemetry.shapes == {(4, 8, 8, 8): 1} and telemetry.voxels == 4 * 8**3
    # what a device mix looks like to FakeTensorMode (the telemetry's bug before it made its labels on the device)
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(FakeTensorDeviceMismatchError):
        torch.isin(torch.zeros(4, dtype=torch.int64, device="cuda:0"), torch.as_tensor([1, 2]))


def test_telemetry_shares_are_measured_from_the_target():
    """Foreground-voxel and class-presence shares against a count made here with plain Python."""
    from pgps.nnunet.telemetry import Telemetry

    generator = torch.Generator().manual_seed(0)
    telemetry = Telemetry([1, 2, 3], has_regions=False, ignore_label=4)
    expected_fg, expected_presence = [], []
    for _ in range(3):
        seg = torch.randint(0, 5, (2, 1, 6, 6, 6), generator=generator)
        seg[seg == 3] = 0  # class 3 never present
        values = seg.flatten().tolist()
        expected_fg.append(sum(v in (1, 2, 3) for v in values) / len(values))
        expected_presence.append(sum(c in values for c in (1, 2, 3)) / 3)
        telemetry.add(torch.zeros(2, 1, 6, 6, 6), [seg, seg[:, :, ::2, ::2, ::2]], fallbacks=None)
    row = telemetry.epoch_row()
    assert row["fg_voxel_share"] == pytest.approx(sum(expected_fg) / 3)
    assert row["class_presence_share"] == pytest.approx(2 / 3)
    assert row["fg_fallbacks"] is None  # not measured (nnU-Net's own loader)
    assert (row["patch_size"], row["batch_size"], row["iterated_voxels"]) == ("6x6x6", 2, 3 * 2 * 6**3)


@pytest.mark.parametrize("ignore_label", [None, 4])
def test_region_telemetry_is_measured_from_the_region_channels(ignore_label):
    """With regions the target holds one binary channel per region and, with an ignore label, nnU-Net's ignore
    mask last (its validation step drops it): the shares come from the region channels only, on the device."""
    from pgps.nnunet.telemetry import Telemetry

    generator = torch.Generator().manual_seed(1)
    regions = (torch.rand(2, 3, 6, 6, 6, generator=generator) < 0.1).to(torch.int16)
    regions[:, 2] = 0  # the third region never present
    target = regions
    if ignore_label is not None:  # ignored voxels: everywhere no region is
        target = torch.cat([regions, (regions.sum(1, keepdim=True) == 0).to(torch.int16)], 1)
    flags = regions.flatten(2).tolist()  # [sample][region][voxel], counted with plain Python
    voxels = [any(flags[b][r][v] for r in range(3)) for b in range(2) for v in range(6**3)]
    present = [any(flags[b][r][v] for b in range(2) for v in range(6**3)) for r in range(3)]
    with EmulatedCuda() as emu:
        telemetry = Telemetry([1, 2, 3], has_regions=True, ignore_label=ignore_label)
        telemetry.add(torch.zeros(2, 1, 6, 6, 6).cuda(), [target.cuda()], fallbacks=0)
        assert emu.device_of(telemetry._shares[0]).type == "cuda"
        row = telemetry.epoch_row()
    assert row["fg_voxel_share"] == pytest.approx(sum(voxels) / len(voxels))
    assert row["class_presence_share"] == pytest.approx(sum(present) / 3) and sum(present) == 2


def test_the_emulation_refuses_what_cuda_refuses():
    """The emulation itself: the mixes torch refuses on a GPU raise, what it allows does not."""
    with EmulatedCuda() as emu:
        x = torch.ones(4, 3).cuda()
        assert x.device == torch.device("cuda:0") and x.is_cuda and emu.device_of(x.cpu()).type == "cpu"
        assert (x * torch.tensor(2.0)).device.type == "cuda"  # a CPU scalar tensor is allowed
        assert x[torch.tensor([0, 2])].shape == (2, 3)  # CPU indices are allowed
        assert torch.zeros(2, device=x.device).is_cuda and not torch.zeros(2).is_cuda
        for mix in (lambda: x + torch.ones(4, 3), lambda: torch.isin(x, torch.tensor([1.0, 2.0])),
                    lambda: x.index_add_(0, torch.tensor([0]).cuda(), torch.ones(1, 3)),
                    lambda: torch.randn(3, generator=torch.Generator(), device="cuda")):  # fmt: skip
            with pytest.raises(DeviceMismatchError):
                mix()
        with pytest.raises(TypeError, match="can't convert cuda"):
            x.numpy()
        w = torch.nn.Linear(3, 2).cuda()
        loss = w(x).square().mean()
        loss.backward()
        assert emu.device_of(w.weight.grad).type == "cuda"


def test_the_harness_convolves_in_bfloat16_as_exactly_as_torch_own_kernels():
    """The harness's bfloat16 steps: the weight gradient of a 3x3x3 convolution over a 2x2x2 input (the tiny
    U-Net's deepest decoder stage at the first Performance stage) against float64, within bfloat16's rounding.
    With oneDNN's kernel (torch 2.14.1, AVX512-BF16 CPUs) it was off by ~100% or more, at random."""
    from tests.cuda_harness import cuda_services_replaced

    gen = torch.Generator().manual_seed(0)
    x, out_grad = torch.randn(16, 32, 2, 2, 2, generator=gen), torch.randn(16, 16, 2, 2, 2, generator=gen)
    weight = 0.1 * torch.randn(16, 32, 3, 3, 3, generator=gen)

    def weight_grad(dtype: torch.dtype) -> torch.Tensor:
        w = weight.to(dtype).requires_grad_()
        torch.nn.functional.conv3d(x.to(dtype), w, padding=1).backward(out_grad.to(dtype))
        return w.grad.double()

    reference = weight_grad(torch.float64)
    with cuda_services_replaced():
        for _ in range(3):
            error = (weight_grad(torch.bfloat16) - reference).abs().max() / reference.abs().max()
            assert error < 0.05, error  # bfloat16 keeps 8 significant bits; 32 x 8 products per sum
