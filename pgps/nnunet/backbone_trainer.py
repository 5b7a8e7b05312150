"""The trainer side of the transformer backbones: :class:`BackboneMixin` and :func:`build_backbone`.

:class:`BackboneMixin` turns a PGPS trainer into a backbone trainer: it builds the network from
a configuration made by ``pgps backbone-plans``, switches deep supervision off, takes the
backbone's step for the schedule and refuses a ``P_max`` that is not a multiple of it. The networks themselves
(:mod:`pgps.nnunet.backbones`) subclass MONAI's, so that module imports MONAI (about a second of CPU); it is
imported here only when a backbone is built, and every PGPS trainer module loads this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from pgps.nnunet.backbone_plans import BACKBONE_KEY, BACKBONES, check_arch_kwargs, get_backbone
from pgps.plans import configuration_steps
from pgps.sizes import Size, as_size, fmt_size, numel

UNETR_TOKEN = BACKBONES["unetr"].step


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
    from pgps.nnunet.backbones import NETWORKS  # MONAI's networks: imported when a backbone is built

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
