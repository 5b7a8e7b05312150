"""The conda environment files under envs/ pin exactly what pyproject.toml pins."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pip_requirements(env_file: Path) -> set[str]:
    env = yaml.safe_load(env_file.read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return {r.replace(" ", "") for r in pip[0] if not r.startswith("-e")}


def test_env_files_match_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {r.replace(" ", "") for r in pyproject["project"]["dependencies"]}
    env_files = sorted((ROOT / "envs").glob("*.yaml"))
    assert env_files, "envs/ has no environment file"
    for env_file in env_files:
        assert _pip_requirements(env_file) == wanted, env_file.name


def test_torch_is_pinned():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = pyproject["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
