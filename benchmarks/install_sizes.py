"""Installed size of ``pip install pgps`` and of each extra, as docs/pages/install.md's table gives them.

For the core and each extra, walks the dependency closure of pgps's requirements through the
distributions installed in this environment (``make venv`` installs ``.[all,test]``, so every one is
there) and sums the sizes of their installed files (each distribution's RECORD)::

    .venv/bin/python benchmarks/install_sizes.py
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXTRAS = ("torch", "monai", "synth", "nnunet", "report", "workflow", "carbon", "all")


def closure(extra: str) -> set[str]:
    """Distributions ``pip install 'pgps[extra]'`` installs besides pgps (``extra=""``: the core)."""
    seen: set[str] = set()
    todo = [(Requirement(r), extra) for r in distribution("pgps").requires or []]
    while todo:
        req, wanted = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": wanted}):
            continue
        if canonicalize_name(req.name) == "pgps":  # pgps[report] inside pgps[workflow]
            todo += [(Requirement(r), e) for e in req.extras for r in distribution("pgps").requires or []]
            continue
        key = canonicalize_name(req.name)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            print(f"  {req.name} is not installed here: left out")
            continue
        for e in sorted(req.extras) or [""]:
            todo += [(Requirement(r), e) for r in dist.requires or []]
        seen.add(key)
    return seen


def installed_bytes(names: set[str]) -> int:
    total = 0
    for name in names:
        for file in distribution(name).files or []:
            path = file.locate()
            if os.path.isfile(path):
                total += os.path.getsize(path)
    return total


def main() -> None:
    pgps_files = installed_bytes({"pgps"}) if distribution("pgps").files else 0
    core = closure("")
    print(f"pgps (core): {installed_bytes(core) / 2**20:,.0f} MiB for {', '.join(sorted(core))}, plus pgps itself "
          f"({pgps_files / 2**20:.1f} MiB as installed here)")  # fmt: skip
    for extra in EXTRAS:
        names = closure(extra)
        size = installed_bytes(names)
        print(f"pgps[{extra}]: {size / 2**20:,.0f} MiB ({size / 2**30:.1f} GiB), {len(names)} distributions")


if __name__ == "__main__":
    main()
