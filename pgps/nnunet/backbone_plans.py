"""Transformer backbones as nnU-Net configurations: their PGPS step, the ``P_max`` rule and the plans edit.

The journal (Sec. 3.5, Table 3) trains MONAI's UNETR and SwinUNETR inside nnU-Net with the
curriculum. Their architecture, not a stride list, fixes the smallest patch and the step:

- UNETR: the ViT token is 16^3 voxels (fixed in MONAI), so patches grow in steps of 16 per axis
  and ``P_min`` = 16^3 (one token). The learned positional embedding, made for the ``P_max`` token
  grid, is interpolated to each stage's grid (:mod:`pgps.nnunet.backbones`).
- SwinUNETR: a 2^3-voxel token and four patch mergings make every axis a multiple of 32
  (``P_min`` = 32^3, a 1^3 deepest feature map); no positional embedding.

:func:`add_backbone_configuration` adds a configuration (default ``3d_unetr`` / ``3d_swinunetr``)
that ``inherits_from`` a planned one (default ``3d_fullres``), so nnU-Net reuses its preprocessed
data: only the architecture and ``P_max`` change. ``P_max`` rule: on each axis the largest multiple
of the step not above the planned patch size, and at least one step (an axis planned below the
step grows to it; nnU-Net pads the crop). The batch size stays the planned one unless given. This
module imports neither torch nor nnU-Net::

    pgps backbone-plans --plans $nnUNet_preprocessed/Dataset017_BTCV/nnUNetPlans.json --backbone unetr
    nnUNetv2_train 17 3d_unetr 0 -tr nnUNetTrainer_PGPS_UNETR_Performance
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pgps.plans import STEPS_KEY, derived_configuration_source, resolve_configuration
from pgps.sizes import Size, as_size, check_divisible, fmt_size

BACKBONE_KEY = "pgps_backbone"
"""Configuration key naming the backbone (``"unetr"``, ``"swinunetr"``); the backbone trainers check it."""


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A transformer backbone: its PGPS step (voxels per axis), network class and default arguments."""

    name: str
    title: str
    step: int
    step_reason: str
    network_class_name: str
    arch_kwargs: Mapping[str, Any]


BACKBONES: dict[str, Backbone] = {
    "unetr": Backbone(
        name="unetr",
        title="UNETR",
        step=16,
        step_reason="the ViT token size, 16^3 voxels",
        network_class_name="pgps.nnunet.backbones.UNETRBackbone",
        arch_kwargs={  # MONAI 1.6 UNETR defaults (12 transformer layers, 16^3 tokens are fixed by MONAI)
            "feature_size": 16,
            "hidden_size": 768,
            "mlp_dim": 3072,
            "num_heads": 12,
            "norm_name": "instance",
            "conv_block": True,
            "res_block": True,
            "dropout_rate": 0.0,
            "qkv_bias": False,
        },
    ),
    "swinunetr": Backbone(
        name="swinunetr",
        title="SwinUNETR",
        step=32,
        step_reason="a 2^3-voxel token and four 2x patch mergings",
        network_class_name="pgps.nnunet.backbones.SwinUNETRBackbone",
        arch_kwargs={  # MONAI 1.6 SwinUNETR defaults (token 2^3 voxels)
            "feature_size": 24,
            "depths": [2, 2, 2, 2],
            "num_heads": [3, 6, 12, 24],
            "window_size": [7, 7, 7],
            "qkv_bias": True,
            "mlp_ratio": 4.0,
            "norm_name": "instance",
            "drop_rate": 0.0,
            "attn_drop_rate": 0.0,
            "dropout_path_rate": 0.0,
            "normalize": True,
            "patch_norm": False,
            "use_checkpoint": False,
            "downsample": "merging",
            "use_v2": False,
        },
    ),
}


def get_backbone(name: str) -> Backbone:
    """The :class:`Backbone` called ``name``; a clear error for an unknown name."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def backbone_patch_size(planned: Sequence[int], step: int) -> Size:
    """``P_max`` for a backbone of ``step``: per axis the largest multiple of ``step`` not above the
    planned size, at least ``step``.

    >>> backbone_patch_size((80, 192, 160), 32)
    (64, 192, 160)
    >>> backbone_patch_size((20, 8, 40), 16)
    (16, 16, 32)
    """
    planned = as_size("planned patch_size", planned)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive integer, got {step!r}")
    return as_size("patch_size", [max(step, p // step * step) for p in planned])


def check_arch_kwargs(backbone: Backbone, arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``backbone``'s default arguments updated by ``arch_kwargs``, checked for name, type and MONAI's constraints."""
    out = copy.deepcopy(dict(backbone.arch_kwargs))
    for key, value in arch_kwargs.items():
        if key not in out:
            raise ValueError(
                f"{backbone.title} has no architecture argument {key!r}; choose from: {', '.join(backbone.arch_kwargs)}"
            )
        default = out[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            value = float(value) if ok else value
        elif isinstance(default, list):
            ok = (
                isinstance(value, list)
                and len(value) == len(default)
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            )
        else:
            ok = isinstance(value, str) and bool(value)
        if not ok:
            raise ValueError(
                f"{backbone.title} architecture argument {key}={value!r} must be like its default {default!r}"
                + (" (positive)" if isinstance(default, (int, list)) and not isinstance(default, bool) else "")
            )
        out[key] = value
    if backbone.name == "unetr" and out["hidden_size"] % out["num_heads"]:
        raise ValueError(
            f"UNETR hidden_size ({out['hidden_size']}) must be divisible by num_heads ({out['num_heads']})"
        )
    if backbone.name == "swinunetr":
        if out["feature_size"] % 12:
            raise ValueError(f"SwinUNETR feature_size ({out['feature_size']}) must be divisible by 12 (MONAI)")
        for stage, heads in enumerate(out["num_heads"]):
            channels = out["feature_size"] * 2**stage
            if channels % heads:
                raise ValueError(f"SwinUNETR stage {stage}: {channels} channels are not divisible by {heads} heads")
    return out


def add_backbone_configuration(
    plans: dict,
    backbone: str,
    source: str = "3d_fullres",
    name: str | None = None,
    *,
    patch_size: Sequence[int] | None = None,
    batch_size: int | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> dict:
    """A copy of ``plans`` with configuration ``name`` (default ``3d_<backbone>``) for ``backbone``.

    The configuration inherits ``source`` (its preprocessed data, spacing, batch size) and sets the
    backbone's architecture, its step per axis (under :data:`pgps.plans.STEPS_KEY`) and ``P_max``:
    ``patch_size`` if given (voxels per axis, each a multiple of the step), else
    :func:`backbone_patch_size` of the source's patch. ``arch_kwargs`` override the backbone's
    MONAI defaults (:data:`BACKBONES`). An existing configuration ``name`` is replaced only if this
    function made it.
    """
    spec = get_backbone(backbone)
    name = f"3d_{spec.name}" if name is None else name
    resolved = derived_configuration_source(plans, name, source, BACKBONE_KEY, "backbone", "add_backbone_configuration")
    planned = resolved.get("patch_size")
    if planned is None or "batch_size" not in resolved:
        raise ValueError(f"configuration {source!r} has no patch_size/batch_size")
    if len(planned) != 3:
        raise ValueError(f"{spec.title} needs a 3D configuration; {source!r} has patch size {planned}")
    steps = (spec.step,) * 3
    if patch_size is None:
        p_max = backbone_patch_size(planned, spec.step)
    else:
        p_max = as_size("patch_size", patch_size)
        check_divisible("patch_size", p_max, steps)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    config: dict[str, Any] = {
        "inherits_from": source,
        "patch_size": list(p_max),
        "architecture": {
            "network_class_name": spec.network_class_name,
            "arch_kwargs": check_arch_kwargs(spec, arch_kwargs or {}),
            "_kw_requires_import": [],
        },
        BACKBONE_KEY: spec.name,
        STEPS_KEY: list(steps),
    }
    if batch_size is not None:
        config["batch_size"] = batch_size
    from pgps.nnunet.light import MEMORY_FORMAT_KEY  # torch-free

    if MEMORY_FORMAT_KEY in resolved:  # a light source's channels-last choice was benchmarked for its U-Net only
        config[MEMORY_FORMAT_KEY] = "contiguous"
    out = copy.deepcopy(plans)
    out["configurations"][name] = config
    return out


def parse_arch_options(items: Sequence[str], backbones: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``[BACKBONE:]KEY=VALUE`` options (``pgps backbone-plans --arch``) as architecture keywords per backbone: a
    value is JSON when it parses as JSON, else a string; without ``BACKBONE:`` the key is every backbone's."""
    arch: dict[str, dict[str, Any]] = {b: {} for b in backbones}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--arch {item!r} is not [BACKBONE:]KEY=VALUE")
        prefix, colon, key = key.rpartition(":")
        if colon and prefix not in arch:
            raise ValueError(f"--arch {item!r}: {prefix!r} is not one of the backbones given ({', '.join(arch)})")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string such as norm_name=batch
        for backbone in [prefix] if colon else arch:
            arch[backbone][key] = value
    return arch


def add_backbone_configurations(
    plans: dict,
    backbones: Sequence[str],
    source: str,
    names: Sequence[str] | None = None,
    *,
    patch_size: Sequence[int] | None = None,
    batch_size: int | None = None,
    arch_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict, list[str]]:
    """:func:`add_backbone_configuration` for several backbones (names default to ``3d_<backbone>``): the new
    plans and the configuration names."""
    names = list(names or [f"3d_{b}" for b in backbones])
    if len(names) != len(backbones):
        raise ValueError(f"--name gives {len(names)} names for {len(backbones)} backbones")
    for backbone, name in zip(backbones, names, strict=True):
        plans = add_backbone_configuration(
            plans, backbone, source, name, patch_size=patch_size, batch_size=batch_size,
            arch_kwargs=(arch_kwargs or {}).get(backbone, {}),
        )  # fmt: skip
    return plans, names


def describe(plans: dict, name: str) -> str:
    """One line about backbone configuration ``name`` of ``plans`` (for the CLI)."""
    conf = resolve_configuration(plans["configurations"], name)
    spec = get_backbone(conf[BACKBONE_KEY])
    kwargs = conf["architecture"]["arch_kwargs"]
    changed = {k: v for k, v in kwargs.items() if spec.arch_kwargs.get(k) != v}
    return (
        f"configuration {name} inherits {plans['configurations'][name].get('inherits_from')}: {spec.title}, P_max "
        f"{fmt_size(conf['patch_size'])}, batch {conf['batch_size']}, PGPS step {spec.step} per axis "
        f"({spec.step_reason}), P_min {fmt_size((spec.step,) * 3)}"
        + (f", arguments {changed}" if changed else ", MONAI default arguments")
    )
