"""Opt-in bfloat16 autocast for training on the CPU: ``PGPS_CPU_AUTOCAST=bf16``.

nnU-Net autocasts only on CUDA (float16); on a CPU it trains in float32. On CPUs with bfloat16
instructions (AVX512-BF16 or AMX), oneDNN's bfloat16 convolutions make a training step of the
demo's network about half as long (#29). With ``PGPS_CPU_AUTOCAST=bf16`` a PGPS trainer on the CPU runs its
training and validation steps under ``torch.autocast("cpu", dtype=torch.bfloat16)``; the final
sliding-window validation and inference stay float32. It is off by default (``off``, ``fp32`` or unset), and
refused with an error on a CPU without bfloat16 instructions, where it would be slower, not faster. On
CUDA it changes nothing (nnU-Net's float16 autocast).

torch 2.14.1's oneDNN computes the weight gradient of a stride-1 3x3x3 convolution whose input has
depth 2 wrongly in bfloat16 on AVX512-BF16 CPUs (relative error ~1 to 1e36 against float64; every
other depth, and the input gradient, within bfloat16's 3e-3): a PGPS stage whose patch depth is
twice the step feeds such a map to the U-Net's deepest convolutions. :func:`prepare` therefore makes
the network's ``Conv3d`` modules run in float32 on an input of depth 2 under CPU autocast
(:class:`Float32AtDepthTwoConv3d`; the same parameters and keys), ``tests/test_cpu_autocast.py``
checks the gradients against float64.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from pgps.nnunet.norm import retype_modules

ENV = "PGPS_CPU_AUTOCAST"
OFF = ("", "off", "fp32", "float32", "0", "none")


def requested() -> bool:
    """Whether ``PGPS_CPU_AUTOCAST`` asks for bfloat16 (``bf16``/``bfloat16``); any other value but off raises."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in OFF:
        return False
    if value in ("bf16", "bfloat16"):
        return True
    raise ValueError(
        f"{ENV}={os.environ[ENV]!r}: use bf16 (bfloat16 autocast on the CPU) or off (float32, the default)"
    )


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions torch's CPU kernels use (AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    return any(
        bool(getattr(cpu, name, lambda: False)()) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def enabled(device: torch.device) -> bool:
    """Whether a trainer on ``device`` trains under bfloat16 autocast: asked for, on the CPU, and supported
    (else :class:`RuntimeError`, naming the variable)."""
    if device.type != "cpu" or not requested():
        return False
    if not cpu_has_bf16():
        raise RuntimeError(
            f"{ENV}=bf16: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), where bfloat16 autocast is "
            f"slower than float32; unset {ENV} to train in float32"
        )
    return True


def autocast(on: bool) -> contextlib.AbstractContextManager:
    """``torch.autocast("cpu", dtype=torch.bfloat16)`` when ``on``, else nothing."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


class Float32AtDepthTwoConv3d(nn.Conv3d):
    """``Conv3d`` that runs in float32 under CPU autocast when its input has depth 2 (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5 and x.shape[2] == 2 and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def prepare(network: nn.Module) -> int:
    """Switch ``network``'s ``Conv3d`` modules to :class:`Float32AtDepthTwoConv3d` in place; returns the count."""
    return retype_modules(network, nn.Conv3d, Float32AtDepthTwoConv3d)
