"""Read what the curriculum needs from an nnU-Net v2 plans file: P_max, b_base and the steps.

Only JSON is read (no nnU-Net import), so this works wherever ``pgps`` is installed.
nnU-Net 2.8 stores the strides in ``architecture.arch_kwargs.strides``; older plans have
``pool_op_kernel_sizes``; a transformer backbone's configuration states its step under
:data:`STEPS_KEY`. Configurations may inherit from another (``inherits_from``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import numbers
import os
from typing import Any

from pgps.sizes import Size, as_size, check_divisible, steps_from_strides

STEPS_KEY = "pgps_steps"
"""Configuration key with the PGPS step per axis of an architecture that is not a strided U-Net
(``pgps backbone-plans`` writes it for UNETR and SwinUNETR); it takes precedence over the strides."""


@dataclasses.dataclass(frozen=True)
class PlannedConfiguration:
    """The planned patch size ``P_max``, batch size ``b_base`` and per-axis steps of a configuration."""

    name: str
    patch_size: Size
    batch_size: int
    steps: Size


def resolve_configuration(configurations: dict[str, Any], name: str) -> dict[str, Any]:
    """Configuration ``name`` of a plans' ``configurations`` dict with its ``inherits_from`` chain merged in
    (what nnU-Net's ``PlansManager.get_configuration`` does, without importing nnU-Net)."""
    return _resolve(configurations, name, ())


def _resolve(configurations: dict[str, Any], name: str, seen: tuple[str, ...]) -> dict[str, Any]:
    if name not in configurations:
        raise ValueError(f"configuration {name!r} is not in the plans; it has: {', '.join(configurations)}")
    if name in seen:
        raise ValueError(f"configuration {name!r} inherits from itself via {' -> '.join(seen)}")
    conf = dict(configurations[name])
    parent = conf.pop("inherits_from", None)
    if parent is None:
        return conf
    merged = _resolve(configurations, parent, (*seen, name))
    merged.update(conf)
    return merged


def derived_configuration_source(
    plans: dict[str, Any], name: Any, source: str, owner_key: str, kind: str, maker: str
) -> dict[str, Any]:
    """Check that ``name`` may be (re)written into ``plans`` as a configuration derived from ``source``.

    ``name`` must be a new name, or a configuration an earlier call made (it holds ``owner_key``);
    replacing it must not break ``source``'s inheritance chain. ``kind`` and ``maker`` name the
    configuration and the function in the messages. Returns ``source`` resolved through its
    ``inherits_from`` chain.
    """
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise ValueError("not an nnU-Net v2 plans dict: it has no 'configurations'")
    configurations = plans["configurations"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name == source:
        raise ValueError(f"name and source are both {name!r}; the {kind} configuration needs its own name")
    existing = configurations.get(name)
    if existing is not None and owner_key not in existing:
        raise ValueError(f"configuration {name!r} already exists and was not made by {maker}; choose another name")
    resolved = resolve_configuration(configurations, source)
    seen, parent = set(), source
    while parent in configurations and parent not in seen:
        seen.add(parent)
        parent = configurations[parent].get("inherits_from")
        if parent == name:
            raise ValueError(f"source {source!r} inherits from {name!r}; replacing {name!r} would make a cycle")
    return resolved


def planned_configuration(
    plans: dict[str, Any] | str | os.PathLike, configuration: str = "3d_fullres"
) -> PlannedConfiguration:
    """``P_max``, ``b_base`` and steps of ``configuration`` from a plans dict or a plans JSON file."""
    if not isinstance(plans, dict):
        with open(plans) as f:
            plans = json.load(f)
    if "configurations" not in plans:
        raise ValueError("not an nnU-Net v2 plans file: it has no 'configurations'")
    conf = resolve_configuration(plans["configurations"], configuration)
    if "patch_size" not in conf or "batch_size" not in conf:
        raise ValueError(f"configuration {configuration!r} has no patch_size/batch_size")
    patch = conf["patch_size"]
    if len(patch) != 3:
        raise ValueError(
            f"configuration {configuration!r} is not 3D (patch_size {patch}); PGPS needs a 3D configuration"
        )
    return PlannedConfiguration(
        name=configuration,
        patch_size=as_size("patch_size", patch),
        batch_size=int(conf["batch_size"]),
        steps=configuration_steps(conf, configuration),
    )


VARIANT_KEY = "pgps_plans_variant"
"""Configuration key recording what :func:`add_plans_variant` changed (nnU-Net ignores it)."""


def check_patch_strides(patch: Any, strides: Any, network: str) -> None:
    """Raise ``ValueError`` naming the first axis whose patch size is not divisible by ``network``'s total stride
    there, with the nearest valid sizes."""
    check_divisible("patch_size", patch, strides, f"the total stride of {network},")


def variant_name(source: str, patch_size: Any, batch_size: int) -> str:
    """The default name of a plans variant, e.g. ``3d_fullres_p64x288x288_b2``."""
    return f"{source}_p{'x'.join(str(int(v)) for v in patch_size)}_b{int(batch_size)}"


def add_plans_variant(
    plans: dict[str, Any],
    source: str = "3d_fullres",
    name: str | None = None,
    *,
    patch_size: Any = None,
    batch_size: Any = None,
) -> dict[str, Any]:
    """A copy of ``plans`` with configuration ``name``: ``source``'s network with another patch and/or batch size.

    The new configuration ``inherits_from`` ``source``, so nnU-Net trains it on ``source``'s preprocessed
    data (same ``data_identifier``, spacing and normalization) with the same architecture; only
    ``patch_size`` and ``batch_size`` differ. A patch must be a multiple of the network's total stride on
    every axis (the error names the axis and the nearest valid sizes). An existing ``name`` is replaced only
    if this function made it. ``name`` defaults to ``<source>_p<Z>x<Y>x<X>_b<B>``.
    """
    if patch_size is None and batch_size is None:
        raise ValueError("a plans variant needs a patch size, a batch size or both")
    configurations = plans.get("configurations") if isinstance(plans, dict) else None
    if not isinstance(configurations, dict):
        raise ValueError("not an nnU-Net v2 plans dict: it has no 'configurations'")
    base = resolve_configuration(configurations, source)
    if "patch_size" not in base or "batch_size" not in base:
        raise ValueError(f"configuration {source!r} has no patch_size/batch_size")
    dim = len(base["patch_size"])
    patch = None
    if patch_size is not None:
        if isinstance(patch_size, (str, bytes)) or not hasattr(patch_size, "__len__") or len(patch_size) != dim:
            raise ValueError(f"patch_size must have {dim} entries (the axes of {source!r}), got {patch_size!r}")
        patch = [int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v for v in patch_size]
        for axis, v in enumerate(patch):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"patch_size axis {axis} must be a positive integer, got {v!r}")
        try:
            divisors = configuration_steps(base, source)
        except ValueError:  # a configuration without strides: any patch size
            divisors = (1,) * dim
        check_patch_strides(patch, divisors, f"{source!r}'s network")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if name is None:
        name = variant_name(source, patch or base["patch_size"], batch_size or base["batch_size"])
    derived_configuration_source(plans, name, source, VARIANT_KEY, "plans variant", "add_plans_variant")
    variant: dict[str, Any] = {"inherits_from": source}
    if patch is not None:
        variant["patch_size"] = patch
    if batch_size is not None:
        variant["batch_size"] = batch_size
    variant[VARIANT_KEY] = {"source": source, "patch_size": patch, "batch_size": batch_size}
    out = copy.deepcopy(plans)
    out["configurations"][name] = variant
    return out


def configuration_steps(conf: dict[str, Any], name: str = "the configuration") -> Size:
    """The PGPS step per axis of a resolved configuration (:func:`resolve_configuration`).

    :data:`STEPS_KEY` when the configuration states it (transformer backbones), else ``2**k`` per
    axis from the U-Net's strides (``architecture.arch_kwargs.strides`` of nnU-Net 2.8, or the
    older ``pool_op_kernel_sizes``). The one place that reads steps from plans: the CLI, the
    trainers and the backbone checks all ask it.
    """
    if STEPS_KEY in conf:
        return as_size(STEPS_KEY, conf[STEPS_KEY])
    strides = ((conf.get("architecture") or {}).get("arch_kwargs") or {}).get("strides")
    if strides is None:
        strides = conf.get("pool_op_kernel_sizes")
    if strides is None:
        raise ValueError(
            f"configuration {name!r} has neither architecture.arch_kwargs.strides "
            f"nor pool_op_kernel_sizes nor {STEPS_KEY}; pass the steps explicitly"
        )
    return steps_from_strides(strides)
