"""UNETR and SwinUNETR (MONAI 1.6) as nnU-Net networks for the PGPS curriculum, and their trainer mixin.

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

:class:`BackboneMixin` turns a PGPS trainer into a backbone trainer: it builds the network from
a configuration made by ``pgps backbone-plans``, switches deep supervision off, takes the
backbone's step for the schedule and refuses a ``P_max`` that is not a multiple of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import UNETR, SwinUNETR
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from pgps.nnunet.backbone_plans import BACKBONE_KEY, BACKBONES, check_arch_kwargs, get_backbone
from pgps.plans import configuration_steps
from pgps.sizes import Size, as_size, check_divisible, fmt_size, numel

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


def build_backbone(
    configuration: Mapping[str, Any],
    num_input_channels: int,
    num_output_channels: int,
    backbone: str | None = None,
    deep_supervision: bool = False,
) -> nn.Module:
    """The network of a backbone configuration (a resolved nnU-Net configuration dict made by ``pgps backbone-plans``).

    ``backbone`` (if given) is the backbone the caller trains; a configuration of another
    architecture is refused with a message that says how to make the right one.
    """
    name = configuration.get(BACKBONE_KEY)
    wanted = get_backbone(backbone) if backbone is not None else None
    if name is None or (wanted is not None and name != wanted.name):
        what = f"a {get_backbone(name).title} configuration" if name else "not a backbone configuration"
        arch = (configuration.get("architecture") or {}).get("network_class_name", "?")
        target = wanted.name if wanted else "unetr|swinunetr"
        raise ValueError(
            f"this configuration is {what} (network {arch}); add one with `pgps backbone-plans --plans "
            f"<nnUNetPlans.json> --backbone {target}` and train that configuration (default name 3d_{target})"
        )
    spec = get_backbone(name)
    architecture = configuration.get("architecture") or {}
    if architecture.get("network_class_name") != spec.network_class_name:
        raise ValueError(
            f"a {spec.title} configuration must have network_class_name {spec.network_class_name}, "
            f"got {architecture.get('network_class_name')!r}"
        )
    kwargs = check_arch_kwargs(spec, architecture.get("arch_kwargs") or {})
    return NETWORKS[name](
        num_input_channels, num_output_channels, configuration["patch_size"], deep_supervision, **kwargs
    )


class BackboneMixin:
    """A PGPS trainer for a transformer backbone (put it first in the bases; ``backbone``: a key of ``BACKBONES``).

    The configuration must be one made by ``pgps backbone-plans --backbone <backbone>``: its
    ``P_max`` a multiple of the backbone's step per axis, which is also the curriculum's step and
    ``P_min``. Deep supervision is off (one output).
    """

    backbone: str = ""

    def initialize(self) -> None:
        self.enable_deep_supervision = False  # before the network is built (one output)
        super().initialize()

    @classmethod
    def build_network_architecture(
        cls,
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """nnU-Net's hook (training and inference): the backbone network of the configuration."""
        return build_backbone(
            configuration_manager.configuration,
            num_input_channels,
            num_output_channels,
            cls.backbone,
            enable_deep_supervision,
        )

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """The backbones have one output and no deep supervision to switch (nnU-Net calls this around validation)."""

    def curriculum_steps(self) -> Size:
        """The backbone's step per axis; refuses a configuration of another architecture or a ``P_max`` off the step."""
        spec = get_backbone(self.backbone)
        conf = self.configuration_manager.configuration
        hint = (
            f"`pgps backbone-plans --plans <nnUNetPlans.json> --backbone {spec.name}` adds a configuration "
            f"(default 3d_{spec.name}) with a valid P_max: per axis the largest multiple of {spec.step} not above "
            "the planned patch size"
        )
        if conf.get(BACKBONE_KEY) != spec.name:
            arch = (conf.get("architecture") or {}).get("network_class_name", "?")
            raise ValueError(
                f"{type(self).__name__} trains {spec.title}, but configuration {self.configuration_name} is "
                f"{'for ' + conf[BACKBONE_KEY] if conf.get(BACKBONE_KEY) else 'not a backbone configuration'} "
                f"(network {arch}); {hint}"
            )
        steps = (spec.step,) * 3
        stated = configuration_steps(conf, self.configuration_name)
        if stated != steps:
            raise ValueError(
                f"configuration {self.configuration_name} states steps {list(stated)}, {spec.title} has {steps}"
            )
        p_max = as_size("patch_size", self.configuration_manager.patch_size)
        for axis, p in enumerate(p_max):
            if p % spec.step:
                raise ValueError(
                    f"{spec.title} needs P_max to be a multiple of {spec.step} per axis ({spec.step_reason}); "
                    f"configuration {self.configuration_name} has P_max {fmt_size(p_max)}, axis {axis} (= {p}) is not; "
                    f"{hint}"
                )
        return steps

    def describe_stage(self, index: int) -> str:
        text = super().describe_stage(index)
        if self.backbone == "unetr":
            patch = self.schedule.stages[index].patch_size
            grid = [p // UNETR_TOKEN for p in patch]
            grid_max = [p // UNETR_TOKEN for p in self.schedule.patch_size_max]
            how = "learned" if grid == grid_max else f"interpolated from {fmt_size(grid_max)}"
            text += f", token grid {fmt_size(grid)} ({numel(grid)} tokens, positional embedding {how})"
        return text
