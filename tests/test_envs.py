"""Packaging: the core needs numpy only, each extra declares what its code imports and states a compatible range,
the artifact's lock (envs/constraints.txt, what make installs) pins every package exactly inside those ranges, and
the conda environment files under envs/ pin what the lock pins."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from pgps.extras import EXTRAS, PACKAGE_EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CORE = PYPROJECT["project"]["dependencies"]
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[;]", requirement, maxsplit=1)[0].strip()).lower()


def _extra(extra: str) -> set[str]:
    """The requirements of ``pgps[extra]``, self-references (``pgps[report]``) expanded, without spaces."""
    out = set()
    for r in OPTIONAL[extra]:
        if _name(r) == "pgps":
            for inner in re.search(r"\[(.*)\]", r).group(1).split(","):
                out |= _extra(inner.strip())
        else:
            out.add(r.replace(" ", ""))
    return out


LOCK = ROOT / "envs" / "constraints.txt"


def _lock() -> dict[str, str]:
    """The lock's pins: normalised name -> version."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{LOCK}: {line!r} is not an exact pin"
            pins[_name(name)] = version
    return pins


def _locked(requirements: set[str]) -> set[str]:
    """``name==version`` of the lock for each requirement's distribution."""
    lock = _lock()
    return {f"{_name(r)}=={lock[_name(r)]}" for r in requirements}


def _pip_requirements(env_file: Path) -> set[str]:
    env = yaml.safe_load(env_file.read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return {f"{_name(r)}=={r.split('==', 1)[1].strip()}" if "==" in r else r.replace(" ", "") for r in pip[0]
            if not r.startswith("-e")}  # fmt: skip


OPTIONAL_IMPORTS = {"progress.py": {"tqdm"}}
"""Imports a module does only when present: pgps.progress draws tqdm's bar if it can, log lines if not."""


def _third_party_imports(paths) -> set[str]:
    imported = set()
    for path in paths:
        here = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                here |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                here.add(node.module.split(".")[0])
        imported |= here - (OPTIONAL_IMPORTS.get(path.name, set()) if path.parent == ROOT / "pgps" else set())
    return {m for m in imported if m not in sys.stdlib_module_names and m != "pgps"}


def test_core_needs_numpy_only():
    assert [_name(r) for r in CORE] == ["numpy"]
    assert set(OPTIONAL) >= {"torch", "monai", "synth", "nnunet", "report", "workflow", "all", "test"}
    everything = set().union(*(_extra(e) for e in OPTIONAL if e not in ("all", "test", "docs")))
    assert _extra("all") == everything  # the tools of the tests and of the documentation site are not in [all]


def test_full_stack_env_pins_what_the_lock_pins():
    assert _pip_requirements(ROOT / "envs" / "pgps.yaml") == _locked(set(CORE) | _extra("all"))


def test_every_stack_pins_what_the_lock_pins():
    env_files = sorted((ROOT / "envs").glob("*.yaml"))
    assert len(env_files) >= 2, "envs/ should have the full stack and the analysis stack"
    assert _pip_requirements(ROOT / "envs" / "report.yaml") == _locked(set(CORE) | _extra("report"))


def test_the_lock_pins_every_requirement_inside_its_range():
    """Every requirement of the core and of every extra (the test and documentation tools too) is pinned by the
    lock, at a version its range allows; and the ranges are ranges (a user's environment may differ)."""
    from packaging.requirements import Requirement

    lock = _lock()
    for extra in [None, *OPTIONAL]:
        requirements = CORE if extra is None else [r for r in OPTIONAL[extra] if _name(r) != "pgps"]
        for text in requirements:
            requirement = Requirement(text)
            name = _name(requirement.name)
            assert name in lock, f"{LOCK} does not pin {name} (pgps[{extra}])"
            assert requirement.specifier.contains(lock[name], prereleases=True), (extra, text, lock[name])
            assert not any(s.operator in ("==", "===") for s in requirement.specifier), f"{text}: a pin, not a range"
    assert (lock["torch"], lock["torchvision"]) == ("2.14.1", "0.29.1")  # the pair that imports cleanly (SPEC 6)


def test_make_installs_from_the_lock():
    """make's install line passes the lock as pip constraints, and a changed lock reinstalls."""
    makefile = (ROOT / "Makefile").read_text()
    install = [line for line in makefile.splitlines() if "pip install" in line and "-e" in line and "EXTRAS" in line]
    assert len(install) == 1 and "-c envs/constraints.txt" in install[0], install
    assert re.search(r"^\$\(STAMP\): pyproject\.toml envs/constraints\.txt$", makefile, flags=re.M)


def test_every_conda_env_named_by_a_rule_exists():
    rules = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    named = set(re.findall(r'conda:\s*\n\s*"\.\./\.\./(envs/[\w.]+)"', rules))
    assert named and all((ROOT / env).is_file() for env in named), named


def test_report_stack_covers_pgps_report_imports():
    """The analysis stack can import pgps.report (and the core) without the training stack."""
    stack = {_name(r) for r in _pip_requirements(ROOT / "envs" / "report.yaml")} | {"pgps"}
    # characteristics reads nnU-Net's blosc2 files, synth writes NIfTI and gpu_slot (filelock) wraps the training
    # jobs: all run in envs/pgps.yaml; config_files (PyYAML) runs in Snakemake's own process
    skip = ("characteristics.py", "synth.py", "gpu_slot.py", "config_files.py")
    folders = ("report", "experiments", "metrics", "data")  # the report's and its imports', besides the core
    paths = [*(ROOT / "pgps").glob("*.py"), *(p for f in folders for p in (ROOT / "pgps" / f).glob("*.py"))]
    paths = [p for p in paths if p.name not in skip]
    assert _third_party_imports(paths) <= stack, sorted(_third_party_imports(paths) - stack)


def test_every_extra_installs_the_modules_it_promises():
    """pgps.extras names the import names of each extra; the extra's requirements must install them."""
    providers = importlib.metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        names = {_name(r) for r in _extra(extra)}
        for module in modules:
            dists = {_name(d) for d in providers.get(module, [])}
            assert dists & names, f"pgps[{extra}] promises {module} (from {sorted(dists)}) but requires {sorted(names)}"


def test_every_imported_module_is_declared_by_the_extra_of_its_package():
    """tqdm, SimpleITK, blosc2, batchgenerators, ... are declared where pgps imports them, not left to nnunetv2."""
    providers = importlib.metadata.packages_distributions()
    packages = {**{p.removeprefix("pgps."): e for p, e in PACKAGE_EXTRAS.items()}}
    for folder in sorted((ROOT / "pgps").iterdir()):
        if not folder.is_dir() or folder.name not in packages:
            continue
        extra = packages[folder.name]
        names = {_name(r) for r in _extra(extra)} | {"numpy"}
        allowed = {"blosc2"} if extra == "report" else set()  # characteristics reads nnU-Net's files (pgps[nnunet])
        if extra == "nnunet":  # optional inside the trainers: pgps.nnunet.carbon runs without it (pgps[carbon])
            allowed |= set(EXTRAS["carbon"])
        for module in _third_party_imports(folder.rglob("*.py")) - allowed:
            dists = {_name(d) for d in providers.get(module, [module])}
            assert dists & names, f"pgps/{folder.name} imports {module}, which pgps[{extra}] does not declare"
    # numpy-only packages but for a few modules: synth writes NIfTI (pgps[synth]), gpu_slot wraps the workflow's
    # training jobs on local GPUs and config_files reads YAML strictly (pgps[workflow]), surface computes the NSD
    # with scipy (pgps[report])
    own_extra = {
        "data/synth.py": "synth",
        "experiments/gpu_slot.py": "workflow",
        "experiments/config_files.py": "workflow",
        "metrics/surface.py": "report",
    }
    light = [*(ROOT / "pgps").glob("*.py"), *(p for f in ("data", "experiments", "metrics")
                                              for p in (ROOT / "pgps" / f).glob("*.py"))]  # fmt: skip
    core = [p for p in light if p.relative_to(ROOT / "pgps").as_posix() not in own_extra]
    assert _third_party_imports(core) == {"numpy"}, "the core, data, experiments and metrics import only numpy"
    for name, extra in own_extra.items():
        declared = {_name(r) for r in _extra(extra)}
        for module in _third_party_imports([ROOT / "pgps" / name]) - {"numpy"}:
            assert {_name(d) for d in providers.get(module, [module])} & declared, (name, module)


def test_a_missing_module_of_an_extra_names_the_extra(monkeypatch):
    """The finder that ``import pgps`` appends names the extra for imports made by pgps's optional parts only."""
    from pgps import extras

    monkeypatch.setitem(extras.EXTRAS, "report", (*extras.EXTRAS["report"], "pgps_test_absent_module"))
    code = compile("import pgps_test_absent_module", "<test>", "exec")
    with pytest.raises(extras.MissingExtra) as caught:
        exec(code, {"__name__": "pgps.report.figures"})
    assert str(caught.value) == (
        "pgps.report.figures needs the 'report' extra (no module named 'pgps_test_absent_module'): "
        "pip install 'pgps[report]'"
    )
    with pytest.raises(ModuleNotFoundError) as plain:  # anyone else's import is left alone
        exec(code, {"__name__": "my_training_script"})
    assert not isinstance(plain.value, extras.MissingExtra)
