"""The documentation: the README fits on a screen, the site builds strictly (every link resolves), its generated pages
are what the code writes today, every page is in the navigation, every `pgps` command a page shows parses, and the
guide "Your own dataset with nnU-Net" runs as written (short, on the CPU).

The README's and the pages' snakemake commands, demo numbers and study verdicts: tests/test_readme.py; the
tutorial's PyTorch and MONAI examples: tests/test_readme_loops.py."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted((DOCS / "pages").rglob("*.md"))
BIN = Path(sys.executable).parent
sys.path.insert(0, str(DOCS))

from gen_pages import PAGES as GENERATED  # noqa: E402
from gen_pages import generated  # noqa: E402


def test_the_readme_fits_on_a_screen_and_links_only_existing_pages():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for target in re.findall(r"\]\((docs/pages/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_pages_are_what_the_code_writes(name):
    """After a change to the parsers, the schema or docs/timings.yaml: `python docs/gen_pages.py`."""
    assert (DOCS / "pages" / name).read_text() == generated(name), f"run: python docs/gen_pages.py ({name})"


def test_the_flops_page_holds_the_fit_table_the_benchmark_computes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("performance_flops", ROOT / "benchmarks" / "performance_flops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (DOCS / "pages" / "explanation" / "flops.md").read_text()
    table = page.split("(tests/test_docs.py checks it) -->\n", 1)[1].split("\n<!-- end of fit table -->", 1)[0]
    assert table == module.fit_table(), "run: .venv/bin/python benchmarks/performance_flops.py --markdown"


def test_every_page_is_in_the_navigation():
    nav = yaml.safe_load((DOCS / "mkdocs.yml").read_text())["nav"]

    def files(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for value in node:
                yield from files(value)
        else:
            yield node

    listed = set(files(nav))
    assert {p.relative_to(DOCS / "pages").as_posix() for p in PAGES} | {"index.md"} == listed


def test_the_site_builds_strictly(tmp_path):
    """make docs' mkdocs line as written (from ``make -n docs``), into a scratch folder instead of results/site."""
    recipe = subprocess.run(["make", "-n", "docs", f"BIN={BIN}"], cwd=DOCS.parent, capture_output=True, text=True)
    (line,) = [line for line in recipe.stdout.splitlines() if "mkdocs build" in line]
    assert "--strict" in line
    proc = subprocess.run(f"{line} -d {tmp_path / 'site'}", shell=True, cwd=DOCS.parent, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()
    assert "make_schedule" in (tmp_path / "site" / "reference" / "api" / "index.html").read_text()


def page_commands(program: str) -> list[tuple[str, list[str]]]:
    """``(page, arguments)`` of every command of a bash or console block (its ``$`` lines) of a page or the README that
    runs ``program``; continued lines (trailing backslash) are joined, environment assignments and comments removed."""
    out = []
    for path in [ROOT / "README.md", *PAGES]:
        for kind, block in re.findall(r"```(bash|console)\n(.*?)```", path.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if kind == "console" and not line.startswith("$ "):
                    continue  # a console block's output
                line = line.removeprefix("$ ")
                words = shlex.split(line, comments=True) if line.strip() else []
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                    words = words[1:]
                if words and words[0] == program:
                    out.append((path.relative_to(ROOT).as_posix(), words[1:]))
    return out


def test_every_pgps_command_of_the_documentation_parses():
    """The options and choices each shown `pgps` command uses exist (a renamed option fails here)."""
    from pgps.cli import build_parser

    commands = page_commands("pgps")
    assert len(commands) >= 15
    for page, args in commands:
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            if exc.code != 0:  # --help and --version exit 0
                raise AssertionError(f"{page}: pgps {' '.join(args)} does not parse") from None


@pytest.mark.nnunet
def test_the_own_dataset_guide_runs_as_written(tmp_path):
    """Its first block, as written, in an empty folder: synthesize, convert, plan, print the schedule, add the CPU
    configuration, train PGPS-Performance (shortened by the documented PGPS_* overrides) and validate."""
    page = (DOCS / "pages" / "how-to" / "own-dataset.md").read_text()
    block = re.findall(r"```bash\n(.*?)```", page, re.S)[0]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PGPS_EPOCHS": "2",
           "PGPS_ITERATIONS_PER_EPOCH": "2", "PGPS_VAL_ITERATIONS": "1", "nnUNet_n_proc_DA": "1",
           "OMP_NUM_THREADS": "1", "nnUNet_def_n_proc": "1", "PGPS_CARBON": "off",
           "PGPS_PROGRESS_EVERY": "0"}  # no progress.png: matplotlib, 0.6 s of CPU an epoch; unread  # fmt: skip
    proc = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mode performance: P_max" in proc.stdout  # pgps schedule's table of the planned configuration
    fold = tmp_path / "nnunet" / "results" / "Dataset501_Mine" / "nnUNetTrainer_PGPS_Performance__nnUNetPlans__3d_light"
    rows = (fold / "fold_0" / "pgps_telemetry.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 and (fold / "fold_0" / "validation" / "summary.json").is_file()
