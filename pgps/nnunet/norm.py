"""Instance norm that trains on a single-voxel map (the journal's 1x1x1-bottleneck stage), and without layout copies
on a ``channels_last_3d`` network.

PyTorch's ``instance_norm`` refuses a map with one spatial element in training mode. On such a
map the normalised value is exactly 0 (``x - mean(x) = 0``), so the layer's output is its affine
bias and the gradient with respect to ``x`` is 0. :class:`SingleVoxelInstanceNorm3d` returns that
directly and defers to PyTorch otherwise. :func:`allow_single_voxel_norm` switches the instance
norms of one network to it in place: nothing in torch is patched.

On a ``channels_last_3d`` network (the CPU demo's, :mod:`pgps.nnunet.light`), torch's CPU ``instance_norm`` converts
every input to the contiguous layout and its result back (about 200 copies per training step of the demo's U-Net, a
fifth of the step in the profile of #29). ``GroupNorm`` with one group per channel computes the same statistics (per
sample and channel, over the spatial axes, biased variance, the same ``eps``) with one affine weight and bias per
channel, and its CPU kernel reads ``channels_last_3d`` directly. :func:`use_group_norm` swaps it in where that is
exact: an ``InstanceNorm3d`` without running statistics (nnU-Net's plans), whose parameters it keeps (the same
tensors: an optimizer built on them stays valid, and checkpoints keep their keys). On a single-voxel map its
normalised value is 0 as well, so the swapped network also trains the 1x1x1 bottleneck.

torch 2.14.1's CPU group-norm *gradient* on ``channels_last_3d`` is the slow one: 5-6x its contiguous kernel for the
demo's first stage (8 channels at 64^3), more than the copies to and from the contiguous layout cost. The swapped
norm (:class:`ChannelsLastGroupNorm`) therefore keeps torch's forward on the channels-last input and computes its
gradient with torch's contiguous kernel (``benchmarks/cpu_network.py``; the same values, as exact against float64).
"""

from __future__ import annotations

import torch
from torch import nn


class SingleVoxelInstanceNorm3d(nn.InstanceNorm3d):
    """``InstanceNorm3d`` that also accepts maps with a single spatial element."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] * x.shape[3] * x.shape[4] != 1:
            return super().forward(x)
        out = x - x  # exact normalised value (0), keeps dtype, device and the autograd graph
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1, 1) + self.bias.view(1, -1, 1, 1, 1)
        return out


def retype_modules(network: nn.Module, source: type[nn.Module], subclass: type[nn.Module]) -> int:
    """Make every module of ``network`` whose type is exactly ``source`` an instance of ``subclass`` (a subclass that
    only changes ``forward``), in place: the same object, parameters and keys. Returns the count."""
    count = 0
    for module in network.modules():
        if type(module) is source:
            module.__class__ = subclass
            count += 1
    return count


def allow_single_voxel_norm(network: nn.Module) -> int:
    """Switch every ``InstanceNorm3d`` of ``network`` to :class:`SingleVoxelInstanceNorm3d`; returns the count."""
    return retype_modules(network, nn.InstanceNorm3d, SingleVoxelInstanceNorm3d)


class _GroupNormContiguousGradient(torch.autograd.Function):
    """torch's group norm on the input as it is, its gradient with the contiguous kernel (module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        n, c = x.shape[:2]
        spatial = x[0, 0].numel()
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, n, c, spatial, groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c = x.shape[:2]
        wanted = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        dx, dweight, dbias = torch.ops.aten.native_group_norm_backward(
            grad.contiguous(), x.contiguous(), mean, rstd, weight, n, c, x[0, 0].numel(), ctx.groups, wanted
        )
        if dx is not None:
            dx = dx.contiguous(memory_format=torch.channels_last_3d)
        return dx, dweight, dbias, None, None


class ChannelsLastGroupNorm(nn.GroupNorm):
    """``GroupNorm`` whose gradient on a ``channels_last_3d`` CPU input comes from torch's contiguous kernel (module
    docstring); the same forward, parameters and keys. Any other input: ``GroupNorm`` itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dim() == 5
            and x.device.type == "cpu"
            and torch.is_grad_enabled()
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last_3d)
        ):
            return _GroupNormContiguousGradient.apply(x, self.weight, self.bias, self.num_groups, self.eps)
        return super().forward(x)


def use_group_norm(network: nn.Module) -> int:
    """Replace every ``InstanceNorm3d`` of ``network`` without running statistics (also
    :class:`SingleVoxelInstanceNorm3d`) by a ``GroupNorm`` with one group per channel (:class:`ChannelsLastGroupNorm`),
    in place, keeping its ``eps``, affine parameters (the same tensors) and training mode; returns how many norms were
    replaced. A norm that the network holds under two names (nnU-Net's blocks keep ``norm`` and ``all_modules``)
    becomes one ``GroupNorm``.
    See the module docstring for when it is exact."""
    swapped: dict[int, nn.GroupNorm] = {}
    for parent in list(network.modules()):
        for name, module in list(parent._modules.items()):
            if not isinstance(module, nn.InstanceNorm3d) or module.track_running_stats:
                continue
            if id(module) not in swapped:
                norm = ChannelsLastGroupNorm(module.num_features, module.num_features, eps=module.eps,
                                             affine=module.affine)  # fmt: skip
                if module.affine:
                    norm.weight, norm.bias = module.weight, module.bias
                swapped[id(module)] = norm.train(module.training)
            setattr(parent, name, swapped[id(module)])
    return len(swapped)
