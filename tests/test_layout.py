"""The package's layout as the README draws it: the top level is the numpy-only core, every subpackage is named in
the README's Layout section (at most 30 lines), and no module of a layer imports a layer above it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PGPS = ROOT / "pgps"
CORE = {"batch", "cost", "curriculum", "extras", "io", "lr", "names", "pacing", "plans", "processes", "progress",
        "sampling", "schedule", "sizes", "stages"}  # fmt: skip
"""The numpy-only core: schedule, pacing, batch sizing, cost model, sampling plans and their helpers."""
HEAVY = ("torch", "nnunetv2", "monai", "scipy", "pandas", "matplotlib", "seaborn", "SimpleITK", "snakemake",
         "filelock", "codecarbon", "tqdm")  # fmt: skip
LAYERS = {  # what a package may import of pgps (besides itself and the core), as the README's Layout says
    "metrics": set(),
    "data": {"metrics"},
    "experiments": {"data"},
    "torch": set(),
    "monai": {"torch"},
    "nnunet": {"data", "metrics"},
    "report": {"experiments"},
    "cli": {"data", "experiments", "metrics", "nnunet", "report"},
}


def test_the_top_level_is_the_numpy_core():
    modules = {p.stem for p in PGPS.glob("*.py")} - {"__init__", "__main__"}
    assert modules == CORE, "a top-level module that is not the core belongs in a subpackage (README: Layout)"
    code = "import sys, pgps\n" + "".join(f"import pgps.{m}\n" for m in sorted(CORE))
    code += f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def pgps_imports(path: Path) -> set[str]:
    """The pgps modules a file imports (at any depth of its code)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pgps"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pgps"))
    return found


def test_no_package_imports_a_layer_above_it():
    for package, allowed in LAYERS.items():
        for path in (PGPS / package).rglob("*.py"):
            for module in pgps_imports(path):
                parts = module.split(".")
                target = parts[1] if len(parts) > 1 else ""
                if target in CORE or target in ("", package, "__version__") or target in allowed:
                    continue
                if (PGPS / target).is_dir():
                    raise AssertionError(f"{path.relative_to(ROOT)} imports {module} (layer {package} may import "
                                         f"{sorted(allowed) or 'only the core'})")  # fmt: skip


def test_the_readme_layout_names_every_package():
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", readme, re.S | re.M)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)[1]
    assert len(block.splitlines()) <= 30
    packages = sorted(p.relative_to(ROOT).as_posix() for p in PGPS.rglob("__init__.py"))
    for init in packages:
        folder = init.removesuffix("/__init__.py") + "/"
        if folder.endswith("ext/"):
            continue
        assert folder.rstrip("/").rsplit("/", 1)[-1] + "/" in block, f"the README's Layout lacks {folder}"
