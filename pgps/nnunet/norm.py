"""Instance norm that trains on a single-voxel map: the journal's 1x1x1-bottleneck stage.

PyTorch's ``instance_norm`` refuses a map with one spatial element in training mode. On such a
map the normalised value is exactly 0 (``x - mean(x) = 0``), so the layer's output is its affine
bias and the gradient with respect to ``x`` is 0. :class:`SingleVoxelInstanceNorm3d` returns that
directly and defers to PyTorch otherwise. :func:`allow_single_voxel_norm` switches the instance
norms of one network to it in place: nothing in torch is patched.
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


def allow_single_voxel_norm(network: nn.Module) -> int:
    """Switch every ``InstanceNorm3d`` of ``network`` to :class:`SingleVoxelInstanceNorm3d`; returns the count."""
    count = 0
    for module in network.modules():
        if type(module) is nn.InstanceNorm3d:
            module.__class__ = SingleVoxelInstanceNorm3d
            count += 1
    return count
