"""UNETR and SwinUNETR (MONAI 1.6) as nnU-Net networks for the PGPS curriculum.

Journal Sec. 3.5 / Table 3: both are trained inside nnU-Net, from scratch, without deep
supervision, on patches whose size is a multiple of the architecture's own step
(:mod:`pgps.nnunet.backbone_plans`: UNETR 16, SwinUNETR 32 voxels per axis).

- :class:`UNETRBackbone` is MONAI's UNETR whose forward accepts any multiple of its 16^3 token:
  the learned positional embedding (made for the ``P_max`` token grid) is interpolated
  trilinearly to the token grid of the input, as ViT fine-tuning at a new resolution does, and
  the token sequence is laid out on that grid. At ``P_max`` (and so in sliding-window inference)
  it is exactly MONAI's UNETR.
- :class:`SwinUNETRBackbone` is MONAI's SwinUNETR (no positional embedding; shifted-window masks
  are built per input size), with nnU-Net's constructor arguments and a clear error for sizes
  that are not multiples of 32. Its deepest map is 1^3 at ``P_min`` = 32^3; the PGPS trainers make
  its instance norms accept that (:mod:`pgps.nnunet.norm`), as for the U-Net's 1^3 bottleneck.

The trainers' side (:class:`pgps.nnunet.backbone_trainer.BackboneMixin`, :func:`build_backbone`) lives in
:mod:`pgps.nnunet.backbone_trainer`, which imports this module (and so MONAI) only when it builds a backbone: the
PGPS trainers of the U-Net start without MONAI. Both names are importable from here as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import UNETR, SwinUNETR
from torch import nn

from pgps.nnunet.backbone_plans import BACKBONES
from pgps.sizes import Size, as_size, check_divisible

UNETR_TOKEN = BACKBONES["unetr"].step
SWIN_STEP = BACKBONES["swinunetr"].step


def _check_construction(title: str, patch_size: Sequence[int], step: int, deep_supervision: bool) -> Size:
    """``P_max`` of a backbone built with nnU-Net's arguments: single output, each axis a multiple of ``step``."""
    if deep_supervision:
        raise ValueError(
            f"{title} has a single output; train it without deep supervision (nnUNetTrainer_PGPS_{title}_*)"
        )
    p_max = as_size("patch_size", patch_size)
    check_divisible("patch_size", p_max, (step,) * 3)
    return p_max


def _check_input(title: str, spatial: Sequence[int], step: int) -> Size:
    size = as_size(f"{title} input size", spatial)
    for axis, s in enumerate(size):
        if s % step:
            raise ValueError(f"{title} input axis {axis} (= {s}) is not a multiple of {step}; patch sizes must be")
    return size


class _PlannedNetwork:
    """A MONAI network built with nnU-Net's constructor arguments (``input_channels``, ``num_classes``, ``patch_size``
    = ``P_max``, ``deep_supervision``, then the plans' ``arch_kwargs``), ``P_max`` checked against the step."""

    title = ""
    step = 1

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        patch_size: Sequence[int],
        deep_supervision: bool = False,
        **arch_kwargs: Any,
    ) -> None:
        p_max = _check_construction(self.title, patch_size, self.step, deep_supervision)
        self._build(input_channels, num_classes, p_max, **arch_kwargs)
        self.patch_size_max: Size = p_max

    def _build(self, input_channels: int, num_classes: int, p_max: Size, **arch_kwargs: Any) -> None:
        raise NotImplementedError


class UNETRBackbone(_PlannedNetwork, UNETR):
    """MONAI's UNETR for inputs of any multiple of its 16^3 token (shape ``(B, C, X, Y, Z)`` voxels).

    ``patch_size`` is ``P_max`` (voxels per axis): it sets the learned positional embedding's
    token grid ``P_max / 16``. ``arch_kwargs`` are MONAI's (``feature_size``, ``hidden_size``, ...).
    """

    title, step = "UNETR", UNETR_TOKEN

    def _build(self, input_channels: int, num_classes: int, p_max: Size, **arch_kwargs: Any) -> None:
        UNETR.__init__(
            self, in_channels=input_channels, out_channels=num_classes, img_size=p_max, proj_type="conv", **arch_kwargs
        )
        if tuple(self.patch_size) != (UNETR_TOKEN,) * 3:
            raise RuntimeError(f"MONAI's UNETR token is {self.patch_size}, pgps expects {UNETR_TOKEN}^3")
        self.token_grid_max: Size = as_size("token grid", [p // UNETR_TOKEN for p in p_max])

    def token_grid(self, spatial: Sequence[int]) -> Size:
        """Tokens per axis for an input of ``spatial`` voxels (each a multiple of 16)."""
        return as_size("token grid", [s // UNETR_TOKEN for s in _check_input("UNETR", spatial, UNETR_TOKEN)])

    def position_embedding(self, grid: Sequence[int]) -> torch.Tensor:
        """The positional embedding of a token ``grid``: shape ``(1, numel(grid), hidden_size)``.

        At the ``P_max`` grid it is the learned parameter itself. Elsewhere the parameter, laid out
        on its grid, is interpolated trilinearly (``align_corners=False``) to ``grid``; gradients
        of every stage thus train the one ``P_max`` embedding that inference uses.
        """
        grid = as_size("token grid", grid)
        learned = self.vit.patch_embedding.position_embeddings  # (1, numel(token_grid_max), hidden)
        if grid == self.token_grid_max:
            return learned
        volume = learned.transpose(1, 2).reshape(1, self.hidden_size, *self.token_grid_max)
        resized = F.interpolate(volume, size=grid, mode="trilinear", align_corners=False)
        return resized.flatten(2).transpose(1, 2)

    def _volume(self, tokens: torch.Tensor, grid: Size) -> torch.Tensor:
        """Token sequence ``(B, N, hidden)`` -> feature map ``(B, hidden, *grid)`` (MONAI's ``proj_feat``)."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.hidden_size, *grid)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        grid = self.token_grid(x_in.shape[2:])
        embedding = self.vit.patch_embedding
        tokens = embedding.patch_embeddings(x_in).flatten(2).transpose(1, 2)
        tokens = embedding.dropout(tokens + self.position_embedding(grid))
        hidden = []
        for block in self.vit.blocks:
            tokens = block(tokens)
            hidden.append(tokens)
        enc1 = self.encoder1(x_in)
        enc2 = self.encoder2(self._volume(hidden[3], grid))
        enc3 = self.encoder3(self._volume(hidden[6], grid))
        enc4 = self.encoder4(self._volume(hidden[9], grid))
        dec3 = self.decoder5(self._volume(self.vit.norm(tokens), grid), enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        return self.out(self.decoder2(dec1, enc1))


class SwinUNETRBackbone(_PlannedNetwork, SwinUNETR):
    """MONAI's SwinUNETR with nnU-Net's constructor arguments; inputs ``(B, C, X, Y, Z)``, each axis a multiple of 32.

    ``patch_size`` is ``P_max`` (voxels per axis; checked only, Swin has no positional embedding).
    """

    title, step = "SwinUNETR", SWIN_STEP

    def _build(self, input_channels: int, num_classes: int, p_max: Size, **arch_kwargs: Any) -> None:
        SwinUNETR.__init__(self, in_channels=input_channels, out_channels=num_classes, **arch_kwargs)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        _check_input("SwinUNETR", x_in.shape[2:], SWIN_STEP)
        return super().forward(x_in)


NETWORKS: dict[str, type[nn.Module]] = {"unetr": UNETRBackbone, "swinunetr": SwinUNETRBackbone}


def __getattr__(name: str) -> Any:  # the trainer's side, under its former address
    if name in ("BackboneMixin", "build_backbone"):
        from pgps.nnunet import backbone_trainer

        return getattr(backbone_trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
