"""Which optional dependency (pip extra) each part of pgps needs, and a one-line message when it is missing.

``pip install pgps`` installs the core, which needs numpy only. The adapters and tools need an
extra: ``pgps[torch]`` (:mod:`pgps.torch`), ``pgps[monai]`` (:mod:`pgps.monai`), ``pgps[nnunet]``
(:mod:`pgps.nnunet`, ``pgps trainers/convert/characteristics``), ``pgps[synth]`` (``pgps synth``
writing NIfTI), ``pgps[report]`` (``pgps collect/report``), ``pgps[workflow]`` (the Snakemake
workflow) and ``pgps[all]``. When a module of an extra is missing, importing the pgps module that
needs it fails with :class:`MissingExtra`, one line naming the extra to install (the CLI prints it and
exits with status 2), instead of a bare ``No module named ...`` from deep inside.

Why a finder and not a library's: MONAI's ``optional_import`` is not there in the numpy-only install (MONAI is an
extra itself), and it returns a stand-in that fails only when first used, not at the import; a ``try/except
ImportError`` per module would repeat itself in the 46 modules of the extras' packages that import a third-party
module at their top (77 imports, more inside functions), where one finder covers every import a pgps module makes.
"""

from __future__ import annotations

import importlib.abc
import sys

EXTRAS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "monai": ("torch", "monai"),
    "synth": ("SimpleITK", "tqdm"),
    "nnunet": (
        "torch", "torchvision", "nnunetv2", "monai", "batchgenerators", "batchgeneratorsv2", "acvl_utils",
        "threadpoolctl", "blosc2", "SimpleITK", "nibabel", "tqdm", "dynamic_network_architectures",
    ),
    "report": ("matplotlib", "seaborn", "scipy", "pandas"),
    "workflow": (
        "snakemake", "snakemake_executor_plugin_slurm", "filelock", "yaml", "matplotlib", "seaborn", "scipy", "pandas",
    ),
    "carbon": ("codecarbon",),
}  # fmt: skip
"""The top-level modules each extra installs (import names, not distribution names)."""

PACKAGE_EXTRAS = {"pgps.torch": "torch", "pgps.monai": "monai", "pgps.nnunet": "nnunet", "pgps.report": "report",
                  "pgps.data.synth": "synth", "pgps.experiments.gpu_slot": "workflow",
                  "pgps.experiments.config_files": "workflow",
                  "pgps.metrics.surface": "report"}  # fmt: skip
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


def require(what: str, needs: dict[str, tuple[str, ...]]) -> None:
    """Raise :class:`MissingExtra` naming *every* extra ``what`` still needs, in one message, when a module it
    needs (``needs``: extra -> its modules that ``what`` imports) is missing; nothing when all are there."""
    import importlib.util

    missing = {extra: [m for m in modules if importlib.util.find_spec(m) is None] for extra, modules in needs.items()}
    missing = {extra: modules for extra, modules in missing.items() if modules}
    if not missing:
        return
    names = " and ".join(f"'{extra}'" for extra in missing)
    modules = ", ".join(f"'{m}'" for ms in missing.values() for m in ms)
    raise MissingExtra(f"{what} needs the {names} extra{'s' if len(missing) > 1 else ''} (no module named {modules}): "
                       f"pip install 'pgps[{','.join(needs)}]'")  # fmt: skip


class _MissingExtraFinder(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``, so asked only about a module that no other finder found: when a pgps
    module outside the core imports it and an extra installs it, the import fails with :class:`MissingExtra`.
    Imports from anywhere else are left alone."""

    def find_spec(self, fullname, path=None, target=None):
        if path is not None:  # a submodule: its package was found
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith("importlib"):
            frame = frame.f_back
        importer = frame.f_globals.get("__name__", "") if frame is not None else ""
        if not any(importer == p or importer.startswith(p + ".") for p in PACKAGE_EXTRAS):
            return None
        extra = extra_for(fullname, importer)
        if extra is None:
            return None
        raise MissingExtra(message(importer, extra, fullname), name=fullname)


def install() -> None:
    """Put the finder behind every other one (once); ``import pgps`` does this."""
    if not any(isinstance(f, _MissingExtraFinder) for f in sys.meta_path):
        sys.meta_path.append(_MissingExtraFinder())
