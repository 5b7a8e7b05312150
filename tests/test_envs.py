"""The conda environment files under envs/ pin exactly what pyproject.toml pins."""

import ast
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
WANTED = {r.replace(" ", "") for r in PYPROJECT["project"]["dependencies"]}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[]", requirement, maxsplit=1)[0].lower()


def _pip_requirements(env_file: Path) -> set[str]:
    env = yaml.safe_load(env_file.read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return {r.replace(" ", "") for r in pip[0] if not r.startswith("-e")}


def test_full_stack_env_matches_pyproject():
    assert _pip_requirements(ROOT / "envs" / "pgps.yaml") == WANTED


def test_every_stack_pins_what_pyproject_pins():
    env_files = sorted((ROOT / "envs").glob("*.yaml"))
    assert len(env_files) >= 2, "envs/ should have the full stack and the analysis stack"
    for env_file in env_files:
        requirements = _pip_requirements(env_file)
        assert requirements <= WANTED, f"{env_file.name}: {sorted(requirements - WANTED)} differ from pyproject.toml"


def test_every_conda_env_named_by_a_rule_exists():
    rules = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    named = set(re.findall(r'conda:\s*\n\s*"\.\./\.\./(envs/[\w.]+)"', rules))
    assert named and all((ROOT / env).is_file() for env in named), named


def test_report_stack_covers_pgps_report_imports():
    """The analysis stack can import pgps.report (and the core) without the training stack."""
    stack = {_name(r) for r in _pip_requirements(ROOT / "envs" / "report.yaml")} | {"pgps", "yaml"}
    imported = set()
    for path in [*(ROOT / "pgps" / "report").glob("*.py"), *(ROOT / "pgps").glob("*.py")]:
        # characteristics reads nnU-Net's blosc2 files, synth writes NIfTI and gpu_slot (filelock) wraps the
        # training jobs: all run in envs/pgps.yaml
        if path.name in ("characteristics.py", "synth.py", "gpu_slot.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in __import__("sys").stdlib_module_names}
    assert third_party <= stack, sorted(third_party - stack)


def test_torch_is_pinned():
    deps = PYPROJECT["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
