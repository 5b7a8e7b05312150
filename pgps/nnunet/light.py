"""A CPU-friendly nnU-Net configuration: fewer channels, one conv per level, channels-last memory.

:func:`add_light_configuration` adds a configuration (default ``3d_light``) to a plans dict that
``inherits_from`` a planned one (default ``3d_fullres``): nnU-Net 2.8 resolves the inheritance,
so the light configuration reuses the source's ``data_identifier`` and preprocessed data (no
re-preprocessing), and only the architecture (and, optionally, patch and batch size) changes.
The memory format is recorded under :data:`MEMORY_FORMAT_KEY`; a PGPS trainer converts its
network to it in ``initialize`` (:func:`use_channels_last_3d`, scoped to that network)::

    pgps light-plans --plans $nnUNet_preprocessed/Dataset500_SynthOrgans/nnUNetPlans.json
    nnUNetv2_train 500 3d_light 0 -tr nnUNetTrainer_PGPS_Performance -device cpu

Defaults, chosen by ``benchmarks/cpu_network.py`` on 2026-11-22 on the 2-core CPU this project
runs on (AMD EPYC, KVM, 2 vCPUs with AVX-512; torch 2.14.1, 2 threads, machine otherwise idle).
One training step (forward, deep-supervised Dice+CE, backward, SGD) of nnU-Net's
``PlainConvUNet`` with 5 stages (4 stride-2 levels, as planned for the demo's ``P_max`` 64^3), at
the PGPS-Performance tensors for ``P_max`` 64^3, ``b_base`` 2, step 16 (stage 9 = 64^3 x 2 = CPS);
median seconds of 4 interleaved repeats, NCDHW (contiguous) vs ``channels_last_3d``:

    features          convs  params  stage (patch x batch)   contiguous  channels_last_3d  ratio
    4,8,16,32,32         1    134k   0: 16x16x16 x 128         0.267         0.126        2.12
    4,8,16,32,32         1    134k   3: 32x32x32 x 16          0.274         0.102        2.68
    4,8,16,32,32         1    134k   9: 64x64x64 x 2           0.282         0.118        2.40
    4,8,16,32,32         2    235k   0: 16x16x16 x 128         0.416         0.190        2.18
    4,8,16,32,32         2    235k   3: 32x32x32 x 16          0.453         0.173        2.62
    4,8,16,32,32         2    235k   9: 64x64x64 x 2           0.450         0.172        2.62
    8,16,32,32,32        1    223k   0: 16x16x16 x 128         0.296         0.207        1.43
    8,16,32,32,32        1    223k   3: 32x32x32 x 16          0.323         0.198        1.63
    8,16,32,32,32        1    223k   9: 64x64x64 x 2           0.301         0.216        1.39
    8,16,32,32,32        2    379k   0: 16x16x16 x 128         0.425         0.299        1.42
    8,16,32,32,32        2    379k   3: 32x32x32 x 16          0.416         0.298        1.40
    8,16,32,32,32        2    379k   9: 64x64x64 x 2           0.434         0.297        1.46
    8,16,32,64,64        1    533k   0: 16x16x16 x 128         0.189         0.182        1.04
    8,16,32,64,64        1    533k   3: 32x32x32 x 16          0.200         0.170        1.18
    8,16,32,64,64        1    533k   9: 64x64x64 x 2           0.231         0.180        1.28
    8,16,32,64,64        2    938k   0: 16x16x16 x 128         0.435         0.309        1.41
    8,16,32,64,64        2    938k   3: 32x32x32 x 16          0.445         0.299        1.49
    8,16,32,64,64        2    938k   9: 64x64x64 x 2           0.467         0.316        1.48
    16,32,64,64,64       1    891k   0: 16x16x16 x 128         0.717         0.610        1.18
    16,32,64,64,64       1    891k   3: 32x32x32 x 16          0.744         0.680        1.09
    16,32,64,64,64       1    891k   9: 64x64x64 x 2           0.785         0.706        1.11
    16,32,64,64,64       2   1514k   0: 16x16x16 x 128         1.261         1.137        1.11
    16,32,64,64,64       2   1514k   3: 32x32x32 x 16          1.258         1.125        1.12
    16,32,64,64,64       2   1514k   9: 64x64x64 x 2           1.274         1.184        1.08
    32,64,128,256,320    2  16549k   0: 16x16x16 x 128         3.317         3.089        1.07
    32,64,128,256,320    2  16549k   9: 64x64x64 x 2           3.251         3.336        0.97

(the last two rows: nnU-Net's planned network for the demo, 2 repeats.) A second run gave the same
ranking (sums over the three stages, channels-last: 0.35, 0.54, 0.57, 0.65, 0.93, 0.99, 1.82,
3.34 s in the order 4/1, 4/2, 8-64/1, 8-32/1, 8-32/2, 8-64/2, 16/1, 16/2). ``channels_last_3d``
is faster for every light candidate (1.04x to 2.7x). Profiled, NCDHW loses in the backward of
the full-resolution layers with few channels: the first decoder convolution (8->4 channels at
64^3 x 2: 77 ms vs 19 ms) and the 1x1 segmentation head (44 ms vs 5 ms); with other processes
on the cores the same layers took over 1 s in NCDHW.

Chosen: features 8,16,32,64,64, one conv per level (encoder and decoder), ``channels_last_3d``:
about 0.18-0.19 s per step at every stage, 18x faster than the planned network (3.3 s). It is about as
fast as 4,8,16,32,32 with two convs and within 1.6x of the smallest candidate (4,8,16,32,32, one
conv: 0.12 s), with twice their channels at full resolution (8, not 4) and 2.3x to 4x their
parameters (533k); 8,16,32,32,32 is not faster despite fewer parameters. Four stride-2 levels
keep the demo's 10 PGPS stages (16^3 ... 64^3, the first with a 1x1x1 bottleneck). End to end
(``nnUNetv2_train 500 3d_light 0``, ``nnUNet_n_proc_DA=0``, data augmentation included): CPS
0.31 s per iteration in ``channels_last_3d`` vs 0.41 s contiguous; PGPS-Performance, 10 epochs
x 5 iterations through all 10 stages plus the final validation, 37 s.

With another CPU, torch version or thread count, re-run the benchmark: the format ranking is
not portable. Run it on an idle machine: 2-thread OpenMP timings are erratic (up to 10x) when
other processes share the cores.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pgps.plans import check_patch_strides, derived_configuration_source

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.hooks import RemovableHandle

MEMORY_FORMAT_KEY = "pgps_memory_format"
"""Configuration key read by :class:`pgps.nnunet.trainer.PGPSMixin` (nnU-Net itself ignores it)."""
MEMORY_FORMATS = ("channels_last_3d", "contiguous")
DEFAULT_FEATURES = (8, 16, 32, 64, 64)
DEFAULT_CONVS = 1
DEFAULT_MEMORY_FORMAT = "channels_last_3d"
ARCH_KEYS = (
    "n_stages",
    "features_per_stage",
    "kernel_sizes",
    "strides",
    "n_conv_per_stage",
    "n_conv_per_stage_decoder",
)
"""The ``arch_kwargs`` a light configuration overrides (nnU-Net's ``PlainConvUNet`` plans)."""


def _positive_ints(name: str, values: Any, length: int | None = None) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence of positive integers, got {values!r}")
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(values)}: {list(values)}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}[{i}] must be a positive integer, got {v!r}")
    return list(values)


def _convs(name: str, value: int | Sequence[int], length: int) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return _positive_ints(name, [value] * length)
    return _positive_ints(name, value, length)


def add_light_configuration(
    plans: dict,
    source: str = "3d_fullres",
    name: str = "3d_light",
    *,
    patch_size: Sequence[int] | None = None,
    batch_size: int | None = None,
    features_per_stage: Sequence[int] = DEFAULT_FEATURES,
    n_conv_per_stage: int | Sequence[int] = DEFAULT_CONVS,
    n_conv_per_stage_decoder: int | Sequence[int] | None = None,
    memory_format: str = DEFAULT_MEMORY_FORMAT,
    strides: Sequence[Sequence[int]] | None = None,
    kernel_sizes: Sequence[Sequence[int]] | None = None,
) -> dict:
    """A copy of ``plans`` with configuration ``name`` = ``source`` with a lighter ``PlainConvUNet``.

    ``features_per_stage`` sets the number of resolution stages ``n``; the strides and kernel
    sizes are the source's first ``n`` (``n`` at most the source's stage count), so ``n - 1``
    downsamplings remain and the PGPS step is ``2**(stride-2 count)`` per axis of those.
    ``n_conv_per_stage``: an int or ``n`` values; ``n_conv_per_stage_decoder``: an int or
    ``n - 1`` values, deepest decoder stage first (default: the encoder's count at the same
    resolution). ``patch_size`` (voxels, one per axis) and ``batch_size`` override the source's
    when given; the patch must stay divisible by the total stride per axis. ``strides`` and
    ``kernel_sizes`` (one per stage, first stride ``[1, 1, 1]``) replace the source's (presets such
    as :data:`PRESETS` ``"cdl-unet"`` fix their own). ``memory_format``
    (``"channels_last_3d"`` or ``"contiguous"``) is recorded under :data:`MEMORY_FORMAT_KEY`.
    An existing configuration ``name`` is replaced only if this function made it.
    """
    resolved = derived_configuration_source(plans, name, source, MEMORY_FORMAT_KEY, "light", "add_light_configuration")

    arch = resolved.get("architecture")
    kwargs = (arch or {}).get("arch_kwargs") or {}
    missing = [k for k in ARCH_KEYS if k not in kwargs]
    if missing:
        raise ValueError(
            f"configuration {source!r} has no architecture.arch_kwargs {', '.join(missing)}; a light configuration "
            "needs nnU-Net 2.x plans of a PlainConvUNet"
        )
    planned_patch = resolved.get("patch_size")
    if planned_patch is None or "batch_size" not in resolved:
        raise ValueError(f"configuration {source!r} has no patch_size/batch_size")
    dim = len(planned_patch)
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
    if memory_format == "channels_last_3d" and dim != 3:
        raise ValueError(f"channels_last_3d needs a 3D configuration; {source!r} has patch size {planned_patch}")

    features = _positive_ints("features_per_stage", features_per_stage)
    n = len(features)
    planned_stages = int(kwargs["n_stages"])
    if not 2 <= n <= planned_stages:
        raise ValueError(
            f"features_per_stage has {n} entries (resolution stages); {source!r} has {planned_stages}, "
            f"so give 2 to {planned_stages} (fewer stages drop the deepest downsamplings)"
        )
    encoder = _convs("n_conv_per_stage", n_conv_per_stage, n)
    if n_conv_per_stage_decoder is None:
        n_conv_per_stage_decoder = encoder[-2::-1]  # decoder runs deepest first
    decoder = _convs("n_conv_per_stage_decoder", n_conv_per_stage_decoder, n - 1)
    strides = [list(s) for s in (kwargs["strides"] if strides is None else strides)[:n]]
    kernel_sizes = [list(k) for k in (kwargs["kernel_sizes"] if kernel_sizes is None else kernel_sizes)[:n]]
    for what, values in (("strides", strides), ("kernel_sizes", kernel_sizes)):
        if len(values) != n or any(len(v) != dim for v in values):
            raise ValueError(f"{what} must give {n} stages of {dim} values, got {values}")
        for i, v in enumerate(values):
            _positive_ints(f"{what}[{i}]", v, dim)
    total_stride = [math.prod(s[a] for s in strides) for a in range(dim)]

    patch = _positive_ints("patch_size", planned_patch if patch_size is None else patch_size, dim)
    check_patch_strides(patch, total_stride, f"the {n} stages")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    architecture = copy.deepcopy(arch)
    architecture["arch_kwargs"].update(
        n_stages=n,
        features_per_stage=features,
        kernel_sizes=kernel_sizes,
        strides=strides,
        n_conv_per_stage=encoder,
        n_conv_per_stage_decoder=decoder,
    )
    light: dict[str, Any] = {"inherits_from": source, "architecture": architecture}
    if patch_size is not None:
        light["patch_size"] = patch
    if batch_size is not None:
        light["batch_size"] = batch_size
    light[MEMORY_FORMAT_KEY] = memory_format
    out = copy.deepcopy(plans)
    out["configurations"][name] = light
    return out


@dataclasses.dataclass(frozen=True)
class LightPreset:
    """A published light network as ``add_light_configuration`` arguments, with the numbers its paper prints."""

    features: tuple[int, ...]
    convs: int
    patch_size: tuple[int, int, int]
    batch_size: int
    strides: tuple[tuple[int, int, int], ...]
    kernel_sizes: tuple[tuple[int, int, int], ...]
    reference_channels: int
    reference_classes: int
    published_params: float
    published_flops: float
    source: str


PRESETS: dict[str, LightPreset] = {
    "cdl-unet": LightPreset(
        features=(16, 32, 64, 128),
        convs=2,
        patch_size=(32, 128, 192),
        batch_size=2,
        strides=((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)),
        kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
        reference_channels=1,
        reference_classes=14,
        published_params=1.39e6,
        published_flops=64.02e9,
        source="CDL-UNet (Wang et al., FLARE 2024) Sec. 2.2.3 and Table 2: patch 32x128x192, 16 initial channels, "
        "three downsamplings, batch 2, 1.39 M parameters, 64.02 GFLOPs. Channels 16-32-64-128 (max 128), two "
        "convolutions per stage, first-stage kernel 1x3x3 and strides 1x2x2, 2x2x2, 2x2x2: the authors' "
        "nnUNetTrainerV2_LightUnet (4 stages of their ExperimentPlanner3D_LightUnet plans, github.com/iam-nacl/"
        "FLARE2024). Reference network for the printed numbers: 1 CT channel, 14 outputs (13 organs + background).",
    ),
}
"""Light networks from the literature for ``pgps light-plans --preset``."""


def network_report(
    arch: dict, patch_size: Sequence[int], input_channels: int, num_classes: int, batch_size: int = 1
) -> dict[str, float]:
    """Parameters and forward cost of an nnU-Net ``architecture`` entry (class name, kwargs) at ``patch_size``.

    Builds the network with nnU-Net's ``get_network_from_plans`` (no deep supervision: inference)
    and counts one forward pass of ``batch_size`` patches on the meta device (shapes, no arithmetic)
    with ``torch.utils.flop_counter``
    (convolutions and matrix products only; FLOPs = 2 x multiply-accumulates). Returns ``params``,
    ``flops``, ``macs``, the counts per operator, and ``v1_params``: the parameters as nnU-Net v1's
    ``Generic_UNet`` (CDL-UNet's network) has them, without the biases of the transposed
    convolutions and of the segmentation heads that nnU-Net v2's ``PlainConvUNet`` adds.
    """
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from torch.utils.flop_counter import FlopCounterMode

    network = get_network_from_plans(
        arch["network_class_name"], arch["arch_kwargs"], arch.get("_kw_requires_import", ()), input_channels,
        num_classes, allow_init=False, deep_supervision=False,
    )  # fmt: skip
    params = sum(p.numel() for p in network.parameters())
    heads = getattr(getattr(network, "decoder", None), "seg_layers", [])
    v2_biases = [m.bias for m in network.modules() if isinstance(m, torch.nn.modules.conv._ConvTransposeNd)]
    v2_biases += [m.bias for m in heads]
    v1_params = params - sum(b.numel() for b in v2_biases if b is not None)
    network.eval().to("meta")  # shapes only: counting needs no arithmetic
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.zeros((batch_size, input_channels, *patch_size), device="meta"))
    flops = counter.get_total_flops()
    by_op = {str(k): v for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {"params": params, "v1_params": v1_params, "flops": flops, "macs": flops / 2, "by_operator": by_op}


def light_report(plans: dict, name: str, dataset_json: str | None = None, preset: LightPreset | None = None) -> str:
    """Parameters and forward FLOPs of configuration ``name`` (one patch), for the dataset and for the preset's
    reference network beside the published numbers."""
    import json

    from pgps.plans import resolve_configuration

    conf = resolve_configuration(plans["configurations"], name)
    arch, patch = conf["architecture"], conf["patch_size"]
    lines = []
    if dataset_json is not None:
        from nnunetv2.utilities.label_handling.label_handling import LabelManager

        with open(dataset_json) as f:
            meta = json.load(f)
        channels = len(meta.get("channel_names", meta.get("modality", {"0": ""})))
        classes = LabelManager(meta["labels"], meta.get("regions_class_order")).num_segmentation_heads
        r = network_report(arch, patch, channels, classes)
        lines.append(
            f"network for this dataset ({channels} channel(s), {classes} outputs), one {_size(patch)} patch: "
            f"{r['params']:,} parameters, {r['flops'] / 1e9:.2f} GFLOPs forward ({r['macs'] / 1e9:.2f} G "
            "multiply-accumulates)"
        )
    if preset is not None:
        r = network_report(arch, preset.patch_size, preset.reference_channels, preset.reference_classes)
        lines += [
            f"published reference ({preset.reference_channels} channel, {preset.reference_classes} outputs, one "
            f"{_size(preset.patch_size)} patch):",
            f"  parameters: {r['params']:,} (nnU-Net v2), {r['v1_params']:,} without the transposed-convolution and "
            f"head biases nnU-Net v1 omits; printed {preset.published_params / 1e6:.2f} M",
            f"  forward: {r['flops'] / 1e9:.2f} GFLOPs = {r['macs'] / 1e9:.2f} G multiply-accumulates; printed "
            f"{preset.published_flops / 1e9:.2f} G (ratio to our multiply-accumulates "
            f"{preset.published_flops / r['macs']:.3f}; see docs/pages/how-to/cdl.md on the difference)",
        ]
    return "\n".join(lines)


def _size(patch: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in patch)


def use_channels_last_3d(network: nn.Module) -> RemovableHandle:
    """Convert ``network``'s 5D parameters to ``channels_last_3d`` in place and its 5D inputs on every call.

    Only this network is touched (its parameters keep their identity, so an optimizer built on
    them stays valid); the returned handle removes the input hook.
    """
    import torch

    def to_channels_last_3d(module: nn.Module, args: tuple) -> tuple:
        return tuple(
            a.contiguous(memory_format=torch.channels_last_3d) if isinstance(a, torch.Tensor) and a.dim() == 5 else a
            for a in args
        )

    network.to(memory_format=torch.channels_last_3d)
    return network.register_forward_pre_hook(to_channels_last_3d)
