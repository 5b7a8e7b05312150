"""Which U-Net and memory format train fastest on this CPU at the demo's PGPS tensor sizes?

Builds nnU-Net's ``PlainConvUNet`` with the kwargs nnU-Net's plans use (3x3x3 convolutions,
InstanceNorm3d affine, LeakyReLU, deep supervision), one stride-1 stage and four stride-2 stages
for the demo's ``P_max`` 64^3, and times one training step (forward, nnU-Net's deep-supervised
Dice+CE loss, backward, SGD step) in NCDHW (``contiguous``) and ``channels_last_3d`` at the
(patch, batch) pairs of the PGPS-Performance schedule for ``P_max`` 64^3, ``b_base`` 2, step 16
(its last stage, 64^3 x 2, is also CPS). Both formats of one cell run interleaved, after warm-up,
and the median is reported: torch's CPU conv3d backward has format-dependent slow paths, so the
choice is measured here rather than guessed (results: the docstring of :mod:`pgps.nnunet.light`).

    .venv/bin/python benchmarks/cpu_network.py                     # default subset, ~2 min on 2 idle cores
    .venv/bin/python benchmarks/cpu_network.py --stages 0 3 6 9 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from machine import passive_openmp  # benchmarks/machine.py, next to this script
from torch import nn

import pgps

FORMATS = {
    "contiguous": torch.contiguous_format,
    "channels_last_3d": torch.channels_last_3d,
    "channels_last_3d_group_norm": torch.channels_last_3d,
    "channels_last_3d_torch_group_norm": torch.channels_last_3d,
}
SHORT = {"contiguous": "c", "channels_last_3d": "cl", "channels_last_3d_group_norm": "cl+gn",
         "channels_last_3d_torch_group_norm": "cl+tgn"}  # fmt: skip
"""The timed variants: a memory format, and the last two also nnU-Net's instance norms as one-group-per-channel group
norms: ``_group_norm`` as a PGPS trainer swaps them on a channels_last_3d network
(``pgps.nnunet.norm.use_group_norm``: its gradient from torch's contiguous kernel), ``_torch_group_norm`` torch's own
``GroupNorm`` throughout (the swap before, whose channels-last gradient is the slow one)."""
DEFAULT_FEATURES = ["4,8,16,32,32", "8,16,32,32,32", "8,16,32,64,64", "16,32,64,64,64"]


def build_unet(features: list[int], convs: int, num_classes: int) -> nn.Module:
    """``PlainConvUNet`` as nnU-Net builds it from plans: one stride-1 stage, then stride-2 stages."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from pgps.nnunet.norm import allow_single_voxel_norm

    n = len(features)
    net = PlainConvUNet(
        input_channels=1,
        n_stages=n,
        features_per_stage=features,
        conv_op=nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * n,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        n_conv_per_stage=[convs] * n,
        num_classes=num_classes,
        n_conv_per_stage_decoder=[convs] * (n - 1),
        conv_bias=True,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=True,
    )
    net.apply(net.initialize)
    allow_single_voxel_norm(net)  # the first PGPS stage has a 1x1x1 bottleneck
    return net


def make_loss(levels: int) -> nn.Module:
    """nnU-Net's default training loss: Dice + CE, deep supervision weights 1/2**i, lowest level off."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    loss = DC_and_CE_loss(
        {"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
        {},
        weight_ce=1,
        weight_dice=1,
        ignore_label=None,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    weights = [1 / 2**i for i in range(levels)]
    weights[-1] = 0
    total = sum(weights)
    return DeepSupervisionWrapper(loss, [w / total for w in weights])


class Step:
    """One training step of one network in one memory format on fixed random data."""

    def __init__(self, net: nn.Module, fmt: str, patch: tuple[int, ...], batch: int, num_classes: int) -> None:
        if fmt.endswith("_group_norm"):
            from pgps.nnunet.norm import ChannelsLastGroupNorm, retype_modules, use_group_norm

            use_group_norm(net)
            if fmt.endswith("_torch_group_norm"):
                retype_modules(net, ChannelsLastGroupNorm, nn.GroupNorm)
        self.net = net.to(memory_format=FORMATS[fmt])
        self.x = torch.randn(batch, 1, *patch).contiguous(memory_format=FORMATS[fmt])
        levels = len(net.decoder.seg_layers)
        target = torch.randint(0, num_classes, (batch, 1, *patch)).float()
        self.targets = [target[:, :, :: 2**i, :: 2**i, :: 2**i] for i in range(levels)]
        self.loss = make_loss(levels)
        self.optimizer = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)

    def __call__(self) -> float:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.net(self.x), self.targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 12)
        self.optimizer.step()
        return time.perf_counter() - start


def measure(features, convs, patch, batch, formats, args) -> dict[str, list[float]]:
    """Interleaved timings (seconds per step) for each format; fewer repeats if a step is very slow."""
    steps = {}
    for fmt in formats:
        torch.manual_seed(0)
        steps[fmt] = Step(build_unet(features, convs, args.num_classes), fmt, patch, batch, args.num_classes)
    times: dict[str, list[float]] = {fmt: [] for fmt in formats}
    slow = False
    for _ in range(args.warmup):
        for fmt in formats:
            slow |= steps[fmt]() > args.slow_step_s
    for _ in range(1 if slow else args.repeats):
        for fmt in formats:
            times[fmt].append(steps[fmt]())
    return times


def parse_features(text: str) -> list[int]:
    try:
        features = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"features must be comma-separated integers, got {text!r}") from None
    if len(features) != 5 or min(features) < 1:
        raise argparse.ArgumentTypeError(f"need 5 positive feature counts (5 stages for 64^3), got {text!r}")
    return features


def main(argv: list[str] | None = None) -> int:
    passive_openmp()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--features", nargs="+", type=parse_features, default=[parse_features(f) for f in DEFAULT_FEATURES],
        metavar="F0,..,F4", help="features_per_stage candidates (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--convs", nargs="+", type=int, default=[1, 2], help="convs per stage (default: %(default)s)")
    p.add_argument(
        "--stages", nargs="+", type=int, default=[0, 3, 9],
        help="PGPS-Performance stage indices to time (0..9; 9 = 64^3 x 2 = CPS) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS)[:2],
        help="variants to time side by side; ratios are to the first (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--repeats", type=int, default=4, help="timed steps per cell and format (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: %(default)s)")
    p.add_argument(
        "--slow-step-s", type=float, default=10.0,
        help="a warm-up step slower than this: time one step only (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--num-classes", type=int, default=5, help="output channels (demo 'organs': 5)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write every timing to FILE")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    schedule = pgps.make_schedule("performance", (64, 64, 64), (16, 16, 16), 2)
    for i in args.stages:
        if not 0 <= i < schedule.num_stages:
            p.error(f"--stages: index {i} outside 0..{schedule.num_stages - 1}")
    stages = [schedule.stages[i] for i in args.stages]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; seconds per training step, median (min)"
    )
    head = f"{'features':<16} {'convs':>5} {'params':>8} {'stage (patch x batch)':>22}"
    head += "".join(f" {fmt:>18}" for fmt in args.formats)
    head += "".join(f" {SHORT[args.formats[0]] + '/' + SHORT[other]:>10}" for other in args.formats[1:])
    print(head, flush=True)
    rows = []
    started = time.perf_counter()
    for features in args.features:
        for convs in args.convs:
            params = sum(q.numel() for q in build_unet(features, convs, args.num_classes).parameters())
            for index, stage in zip(args.stages, stages, strict=True):
                times = measure(features, convs, stage.patch_size, stage.batch_size, args.formats, args)
                med = {fmt: statistics.median(t) for fmt, t in times.items()}
                rows.append(
                    {"features": features, "convs": convs, "params": params, "stage": index,
                     "patch_size": list(stage.patch_size), "batch_size": stage.batch_size, "seconds": times}
                )  # fmt: skip
                label = f"{index}: {'x'.join(map(str, stage.patch_size))} x {stage.batch_size}"
                line = f"{','.join(map(str, features)):<16} {convs:>5} {params / 1e3:>7.0f}k {label:>22}"
                line += "".join(f" {f'{med[fmt]:.3f} ({min(times[fmt]):.3f})':>18}" for fmt in args.formats)
                line += "".join(f" {med[args.formats[0]] / med[other]:>10.2f}" for other in args.formats[1:])
                print(line, flush=True)

    print(
        f"\nsum of the medians over the timed stages (seconds); load average {os.getloadavg()[0]:.1f} "
        "(other processes on these cores make 2-thread timings erratic), "
        f"benchmark {time.perf_counter() - started:.0f} s"
    )
    totals = {}
    for row in rows:
        key = (tuple(row["features"]), row["convs"], row["params"])
        for fmt, t in row["seconds"].items():
            totals.setdefault(key, {}).setdefault(fmt, 0.0)
            totals[key][fmt] += statistics.median(t)
    for (features, convs, params), by_fmt in sorted(totals.items(), key=lambda kv: min(kv[1].values())):
        best = min(by_fmt, key=by_fmt.get)
        cells = "".join(f" {fmt}={s:.3f}" for fmt, s in by_fmt.items())
        print(f"{','.join(map(str, features)):<16} {convs:>5} {params / 1e3:>7.0f}k{cells}  best: {best}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
