"""Which optional dependency (pip extra) each part of pgps needs, and a one-line message when it is missing.

``pip install pgps`` installs the core, which needs numpy only. The adapters and tools need an
extra: ``pgps[torch]`` (:mod:`pgps.torch`), ``pgps[monai]`` (:mod:`pgps.monai`), ``pgps[nnunet]``
(:mod:`pgps.nnunet`, ``pgps trainers/convert/characteristics``), ``pgps[synth]`` (``pgps synth``
writing NIfTI), ``pgps[report]`` (``pgps collect/report``), ``pgps[workflow]`` (the Snakemake
workflow) and ``pgps[all]``. :func:`require` stops an adapter's import with a line naming the
extra; :func:`missing_extra` turns a ``ModuleNotFoundError`` raised inside pgps into that line.
"""

from __future__ import annotations

import importlib.util

EXTRAS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "monai": ("torch", "monai"),
    "synth": ("SimpleITK", "tqdm"),
    "nnunet": (
        "torch", "torchvision", "nnunetv2", "monai", "batchgenerators", "batchgeneratorsv2", "acvl_utils",
        "threadpoolctl", "blosc2", "SimpleITK", "nibabel", "tqdm", "dynamic_network_architectures",
    ),
    "report": ("matplotlib", "seaborn", "scipy", "pandas"),
    "workflow": ("snakemake", "snakemake_executor_plugin_slurm", "matplotlib", "seaborn", "scipy", "pandas"),
}  # fmt: skip
"""The top-level modules each extra installs (import names, not distribution names)."""

PACKAGE_EXTRAS = {"pgps.torch": "torch", "pgps.monai": "monai", "pgps.nnunet": "nnunet", "pgps.report": "report",
                  "pgps.synth": "synth"}  # fmt: skip
"""The extra a pgps module needs, by package: a module missing there is named with this extra first."""


class MissingExtra(ModuleNotFoundError):
    """A module that an optional part of pgps needs is not installed; the message names the extra."""


def extra_for(module: str, importer: str | None = None) -> str | None:
    """The extra that installs top-level ``module`` (for a pgps module ``importer``, its own extra first)."""
    top = module.split(".")[0]
    if importer:
        for package, extra in PACKAGE_EXTRAS.items():
            if (importer == package or importer.startswith(package + ".")) and top in EXTRAS[extra]:
                return extra
    for extra, modules in EXTRAS.items():
        if top in modules:
            return extra
    return None


def message(what: str, extra: str, module: str) -> str:
    return f"{what} needs the '{extra}' extra (no module named '{module}'): pip install 'pgps[{extra}]'"


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` naming ``extra`` when one of its modules is not installed."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(message(what, extra, module), name=module)


def missing_extra(exc: ModuleNotFoundError, what: str) -> str | None:
    """One line for a missing third-party module (``exc``) that an extra installs; ``None`` for any other."""
    if isinstance(exc, MissingExtra):
        return str(exc)
    if not exc.name or exc.name.split(".")[0] == "pgps":
        return None
    tb, importer = exc.__traceback__, None
    while tb is not None:  # the innermost pgps module on the way to the failed import
        name = tb.tb_frame.f_globals.get("__name__", "")
        if name == "pgps" or name.startswith("pgps."):
            importer = name
        tb = tb.tb_next
    extra = extra_for(exc.name, importer)
    return None if extra is None else message(what, extra, exc.name.split(".")[0])
