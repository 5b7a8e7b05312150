"""Which packages of ``gpu_base_packages.txt`` the wheels of ``gpu_wheels.txt`` require: what
``make gpu-check-py312`` installs beside torch, numpy and those wheels so that its virtual environment
holds what a bare GPU machine holds for the check, and nothing else.

    python benchmarks/gpu_check_requirements.py     # one requirement per line, run by the environment's own Python

It reads the installed wheels' metadata (``importlib.metadata``), evaluates their markers for the running
interpreter, and prints the requirements (with their version bounds) on packages that the GPU machine's image
carries and this environment lacks.
Requirements outside that image (SimpleITK, imagecodecs: see ``gpu_wheels.txt``) stay uninstalled, as there.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent


def names(path: Path) -> list[str]:
    """The normalised package names a requirements file lists (comments, pins and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [canonicalize_name(Requirement(line).name) for line in lines if line]


def missing_base_requirements(wheels: list[str], base: set[str], installed: set[str], requires) -> list[str]:
    """The requirements on packages of ``base`` that the distributions ``wheels`` declare (``requires(name)``: their
    requirement strings) and that ``installed`` does not satisfy, one per name with every wheel's version bounds
    (``timm<1.0.23``), sorted. Markers are evaluated for this interpreter; extras are not taken."""
    bounds: dict[str, set[str]] = {}
    for wheel in wheels:
        for text in requires(wheel) or ():
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            if name in base and name not in installed:
                bounds.setdefault(name, set()).update(str(s) for s in requirement.specifier)
    return [name + ",".join(sorted(bounds[name])) for name in sorted(bounds)]


def main() -> int:
    installed = {canonicalize_name(d.metadata["Name"]) for d in md.distributions()}
    wheels = names(HERE / "gpu_wheels.txt")
    absent = [w for w in wheels if w not in installed]
    if absent:
        print(f"gpu_check_requirements: install the wheels first: {', '.join(absent)}", file=sys.stderr)
        return 2
    base = set(names(HERE / "gpu_base_packages.txt"))
    print("\n".join(missing_base_requirements(wheels, base, installed, md.requires)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
