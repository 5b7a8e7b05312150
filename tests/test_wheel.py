"""The distributions and the light install: the sdist and wheel that ``python -m build`` makes of this checkout, checked
with ``twine check``, and the wheel in a fresh virtual environment with numpy and nothing else.

The build runs without build isolation (the setuptools of the test environment) and, as ``python -m build`` does,
builds the wheel from the sdist; build and twine are the lock's (the ``test`` extra). numpy comes from a local
package source, the find-links folders and ``file://`` indexes of pip's own configuration (or
``PGPS_NUMPY_WHEELS``), else from the package registry.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import pgps
from pgps.sampling import BatchPlanner

ROOT = Path(__file__).resolve().parents[1]
PLANS = ROOT / "tests" / "data" / "nnUNetPlans_3d.json"
HEAVY = ("torch", "nnunetv2", "monai", "pandas", "matplotlib", "scipy", "yaml", "SimpleITK", "snakemake")


def _run(*argv, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, **kw)
    if check and proc.returncode:
        raise AssertionError(f"{shlex.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _local_sources() -> list[str]:
    """pip options naming only local package sources: PGPS_NUMPY_WHEELS, pip's find-links and file:// indexes
    (``--index-url`` is a local index, or ``--no-index``: pip never reaches for the network)."""
    listed = _run(sys.executable, "-m", "pip", "config", "list", check=False).stdout
    values = [os.environ.get("PGPS_NUMPY_WHEELS", "")]
    for key, value in re.findall(r"^\S*?\.?([\w-]+)='(.*)'$", listed, flags=re.M):
        if key in ("find-links", "index-url", "extra-index-url"):
            values.append(value)
    indexes, links = [], []
    for value in dict.fromkeys(" ".join(values).split()):
        if value.startswith("file://") and Path(value.removeprefix("file://")).is_dir():
            indexes.append(value)
        elif Path(value).is_dir():
            links.append(value)
    options = [f"--find-links={link}" for link in links]
    if not indexes:
        return ["--no-index", *options]
    return [f"--index-url={indexes[0]}", *(f"--extra-index-url={i}" for i in indexes[1:]), *options]


def _download(folder: Path, *pins: str) -> subprocess.CompletedProcess:
    """``pip download`` of the wheels ``pins`` (no dependencies) into ``folder``: from the local package sources, else
    from the package registry (reachable from CI too); the last attempt's result."""
    base = [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--only-binary=:all:"]
    got = _run(*base, *_local_sources(), "-d", folder, *pins, check=False)
    return got if got.returncode == 0 else _run(*base, "-d", folder, *pins, check=False)


def _build_tools(tmp: Path) -> dict[str, str]:
    """The environment in which ``python -m build`` and ``python -m twine`` run: the test environment's (make installs
    both from the lock), or, in an environment installed before they joined the lock, the lock's versions installed
    into a folder of the test's."""
    env = dict(os.environ)
    if all(importlib.util.find_spec(m) for m in ("build", "twine")):
        return env
    tools = tmp / "tools"
    _run(sys.executable, "-m", "pip", "install", "--quiet", "--target", tools, "-c", ROOT / "envs" / "constraints.txt",
         "build", "twine")  # fmt: skip
    return env | {"PYTHONPATH": os.pathsep.join([str(tools), *filter(None, [env.get("PYTHONPATH")])])}


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist, wheel, the files of the package, build's environment): ``python -m build`` of a clean copy of the
    checkout (the build writes build/ and *.egg-info next to the sources), the wheel built from the sdist."""
    tmp = tmp_path_factory.mktemp("dists")
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "pgps", source / "pgps", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    package = {p.relative_to(source).as_posix() for p in (source / "pgps").rglob("*") if p.is_file()}
    env = _build_tools(tmp)
    dist = tmp / "dist"
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source, env=env)
    (sdist,) = dist.glob("pgps-*.tar.gz")
    (wheel,) = dist.glob("pgps-*.whl")
    return sdist, wheel, package, env


def test_sdist_and_wheel_pass_twine_check_and_hold_the_package(dists):
    """twine check --strict (the metadata and the README as PyPI would render it); the sdist holds what a build
    needs (the wheel was built from it alone) and the wheel every file of pgps/, py.typed and the data included."""
    sdist, wheel, package, env = dists
    checked = _run(sys.executable, "-m", "twine", "check", "--strict", sdist, wheel, env=env).stdout
    assert checked.count("PASSED") == 2, checked
    with tarfile.open(sdist) as tar:
        top = f"{sdist.name.removesuffix('.tar.gz')}/"
        in_sdist = {m.name.removeprefix(top) for m in tar.getmembers() if m.isfile()}
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= in_sdist
    assert {n for n in in_sdist if n.startswith("pgps/")} == package
    with zipfile.ZipFile(wheel) as z:
        in_wheel = {n for n in z.namelist() if n.startswith("pgps/")}
    assert in_wheel == package and "pgps/py.typed" in in_wheel


@pytest.fixture(scope="module")
def light(tmp_path_factory, dists):
    """(python, pgps script, wheel) of a fresh venv holding numpy and the pgps wheel only."""
    tmp = tmp_path_factory.mktemp("wheel")
    _, wheel, _, _ = dists
    dist = tmp / "dist"
    dist.mkdir()
    wheel = Path(shutil.copy(wheel, dist))
    numpy_pin = f"numpy=={version('numpy')}"
    got = _download(dist, numpy_pin)
    if got.returncode:
        pytest.skip(
            f"no {numpy_pin} wheel in a local package source (pip's find-links or file:// indexes, or "
            "PGPS_NUMPY_WHEELS=DIR); the light-install test needs no network and so cannot fetch it"
        )
    env = tmp / "env"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env)
    python = env / "bin" / "python"
    _run(python, "-m", "pip", "install", "--isolated", "--no-index", "--find-links", dist, numpy_pin, wheel)
    return python, env / "bin" / "pgps", wheel


def test_wheel_metadata_requires_only_numpy_outside_extras(light):
    _, _, wheel = light
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = re.findall(r"^Requires-Dist: (.*)$", metadata, flags=re.M)
    unconditional = [r for r in requires if "extra ==" not in r]
    assert unconditional == ["numpy>=2.0"], unconditional
    extras = set(re.findall(r"^Provides-Extra: (.*)$", metadata, flags=re.M))
    assert extras >= {"torch", "monai", "synth", "nnunet", "report", "workflow", "all"}
    (python,) = re.findall(r"^Requires-Python: (.*)$", metadata, flags=re.M)
    assert sorted(python.split(",")) == ["<3.14", ">=3.11"], python
    for minor in (11, 12, 13):
        assert f"Classifier: Programming Language :: Python :: 3.{minor}" in metadata
    assert re.search(r"^License-Expression: Apache-2.0$", metadata, flags=re.M)
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "pgps/report/published/table1.csv" in names and "pgps/nnunet/ext/pgps_trainers.py" in names
    assert "pgps/py.typed" in names  # PEP 561: type checkers read pgps's annotations
    assert re.search(r"^Author: The pgps contributors$", metadata, flags=re.M)
    urls = dict(re.findall(r"^Project-URL: ([^,]+), (.*)$", metadata, flags=re.M))
    assert urls == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"] and urls
    cited = (ROOT / "CITATION.cff").read_text() + (ROOT / "README.md").read_text()
    for url in urls.values():  # every address is one the README or CITATION.cff gives
        assert url in cited or url.removeprefix("https://doi.org/") in cited, url


def test_light_install_imports_the_core_and_plans_schedules(light):
    python, script, _ = light
    installed = _run(python, "-m", "pip", "list", "--format=json").stdout
    assert {p["name"].lower() for p in json.loads(installed)} == {"numpy", "pgps", "pip"} | (
        {"setuptools"} if "setuptools" in installed else set()
    )
    probe = (
        "import sys, pgps, pgps.sampling, pgps.extras, pgps.cli\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
        "planner = pgps.sampling.BatchPlanner(pgps.make_schedule('performance', (32, 32, 32), (8, 8, 8), 2), 4)\n"
        "print(planner.plan(0).cases.tolist())\n"
    )
    out = _run(python, "-c", probe).stdout.splitlines()
    assert out[0] == "[]", f"import pgps pulled in {out[0]}"
    schedule = pgps.make_schedule("performance", (32, 32, 32), (8, 8, 8), 2)
    assert json.loads(out[1]) == BatchPlanner(schedule, 4).plan(0).cases.tolist()
    args = ["schedule", "--patch-size", "128", "128", "128", "--steps", "32", "32", "32", "--batch-size", "2"]
    shown = json.loads(_run(script, *args, "--mode", "performance", "--json").stdout)
    assert shown == pgps.make_schedule("performance", (128,) * 3, (32,) * 3, 2).summary()
    from_plans = json.loads(_run(script, "schedule", "--plans", PLANS, "--json").stdout)  # the plans reader
    assert from_plans["patch_size_max"] == [40, 56, 40] and from_plans["stages"][0]["batch_size"] == 1575
    assert _run(script, "--version").stdout.strip() == f"pgps {pgps.__version__}"


TORCHDATA_STACK = ("torchdata", "requests", "urllib3", "idna", "certifi", "charset-normalizer")
"""What ``pgps[torch]`` brings besides torch: torchdata (StatefulDataLoader) and its pure-Python requirements."""


def test_pgps_torch_joins_an_environment_that_has_another_torch(light, tmp_path):
    """The extras state ranges, not pins: resolving ``pgps[torch]`` where torch 2.15.0 is installed leaves torch as it
    is and adds only torchdata and its pure-Python requirements (pip's dry run, offline against their wheels at the
    lock's versions; the installed torch is its metadata only, all the resolver reads)."""
    python, _, wheel = light
    wheels = tmp_path / "wheels"
    pins = [f"{name}=={version(name)}" for name in TORCHDATA_STACK]
    got = _download(wheels, *pins)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-2000:]
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    fake = site / "torch-2.15.0.dist-info"
    fake.mkdir()
    try:
        (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.15.0\n")
        (fake / "RECORD").write_text("")
        (fake / "INSTALLER").write_text("pip\n")
        # no pip configuration, no PIP_* variables: a machine's own constraints (a cap on torch) must not decide
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
        proc = _run(python, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-", "--no-index",
                    "--find-links", wheel.parent, "--find-links", wheels, "pgps[torch]", env=env)  # fmt: skip
        report = json.loads(proc.stdout)
        installed = {item["metadata"]["name"].lower().replace("_", "-") for item in report["install"]}
        assert "torch" not in installed and installed <= set(TORCHDATA_STACK), installed
        assert "torchdata" in installed
    finally:
        shutil.rmtree(fake)


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["trainers"], "nnunet"),
        (["report", "--results", "r", "--out", "o"], "report"),
        (["synth", "--preset", "lesions", "--out", "raw", "--dataset-id", "9", "--cases", "1"], "synth"),
        (["characteristics", "--dataset", "D=nowhere", "--out", "c.csv"], "report,nnunet"),
    ],
)
def test_a_missing_extra_stops_a_command_with_one_line(light, tmp_path, argv, extra):
    _, script, _ = light
    proc = _run(script, *argv, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    named = " and ".join(f"'{e}'" for e in extra.split(","))  # every extra the command needs, in one message
    assert f"needs the {named} extra" in proc.stderr and f"pip install 'pgps[{extra}]'" in proc.stderr


@pytest.mark.parametrize(
    ("module", "extra"), [("pgps.torch", "torch"), ("pgps.monai", "monai"), ("pgps.nnunet.loading.sampling", "nnunet")]
)
def test_a_missing_extra_stops_an_import_naming_it(light, module, extra):
    python, _, _ = light
    proc = _run(python, "-c", f"import {module}", check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert f"needs the '{extra}' extra" in last and f"pip install 'pgps[{extra}]'" in last, proc.stderr
