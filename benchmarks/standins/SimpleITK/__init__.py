"""Stand-in for SimpleITK on a GPU machine that lacks it (``benchmarks/gpu_check.py`` only, never the package).

nnU-Net's training path imports SimpleITK (its image readers and writers), but the check's dataset is
read and written with nibabel (``NibabelIO``), so nothing here is ever called: any use raises.
"""

from __future__ import annotations

STAND_IN = True


class _Missing:
    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            f"SimpleITK.{self._name} was called, but SimpleITK is a stand-in here (benchmarks/standins): "
            "install SimpleITK to read or write images with it"
        )

    def __getattr__(self, name: str) -> _Missing:
        return _Missing(f"{self._name}.{name}")


def __getattr__(name: str) -> _Missing:
    return _Missing(name)
