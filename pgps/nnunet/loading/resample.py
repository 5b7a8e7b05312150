"""Progressive Resolution's resampling: the ``P_max`` crop shrunk to the stage's input size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from torch.nn.functional import interpolate


class ResampleTransform(BasicTransform):
    """Resample a sample (``(C, X, Y, Z)``) to ``size``: images trilinear, labels nearest neighbour."""

    def __init__(self, size: Sequence[int]) -> None:
        super().__init__()
        self.size = tuple(int(s) for s in size)

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        if tuple(img.shape[1:]) == self.size:
            return img
        return interpolate(img[None].float(), self.size, mode="trilinear", align_corners=False)[0]

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        if tuple(segmentation.shape[1:]) == self.size:
            return segmentation
        out = interpolate(segmentation[None].float(), self.size, mode="nearest-exact")[0]
        return out.to(segmentation.dtype)
