"""The README and the documentation pages (docs/pages/) as a new user reads them: their snakemake commands, run as
written, and the demo numbers, study verdicts and CDL paragraph they quote, which must be the ones in the committed
outputs (paper_figures/demo/, written by `make demo`; paper_figures/study/, by `make study`; paper_figures/cdl/, by
the CDL experiment)."""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "pages").rglob("*.md"))]
README = "\n".join(p.read_text() for p in PAGES)  # the README and every documentation page
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
DEMO = ROOT / "paper_figures" / "demo"
STUDY = ROOT / "paper_figures" / "study"


def readme_commands(program: str) -> list[list[str]]:
    """Every command line of the fenced code blocks of the README and the documentation that runs ``program``
    (environment assignments, a ``$`` prompt and a trailing comment removed), as its arguments."""
    commands = []
    for block in re.findall(r"```(?:bash|console)\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            if not re.match(rf"^(\$ )?([A-Z_][A-Z0-9_]*=\S* )*{program}\b", line):
                continue
            words = shlex.split(line.removeprefix("$ "), comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                words = words[1:]
            if words and words[0] == program:
                commands.append(words[1:])
    return commands


def rule_names() -> set[str]:
    text = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")])
    return set(re.findall(r"^rule (\w+):", text, re.MULTILINE))


SNAKEMAKE_COMMANDS = readme_commands("snakemake")


def test_the_readme_has_its_snakemake_commands():
    assert len(SNAKEMAKE_COMMANDS) >= 5
    assert any("article_partial" in c for c in SNAKEMAKE_COMMANDS)
    assert any("--report" in c for c in SNAKEMAKE_COMMANDS)


@pytest.mark.parametrize("args", SNAKEMAKE_COMMANDS, ids=" ".join)
def test_readme_snakemake_command_parses_as_meant(args):
    """--configfile takes several values: a target written after it would be read as a config file."""
    from snakemake.cli import get_argument_parser

    parsed = get_argument_parser().parse_args(args)
    for config in parsed.configfile or []:
        assert (ROOT / config).is_file(), f"{' '.join(args)}: config file {config} does not exist"
    assert set(parsed.targets or ()) <= rule_names()
    if parsed.report:  # the report of every run fails while runs are unfinished: it names the partial target
        assert list(parsed.targets) == ["article_partial"], args


@pytest.mark.parametrize(
    "args", [c for c in SNAKEMAKE_COMMANDS if "--report" not in c and "-n" not in c][:3], ids=" ".join
)
def test_readme_snakemake_command_dry_runs(tmp_path, args):
    """The command as written, with a dry run added, in an empty working directory."""
    cmd = [SNAKEMAKE, *args, "-n", "--quiet", "rules", "-s", ROOT / "Snakefile", "-d", tmp_path]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_the_readme_unlock_command_clears_a_lock_left_by_a_killed_snakemake(tmp_path):
    """The README's recovery after a killed run: ``make demo``'s Snakemake killed (SIGKILL) once it holds its lock;
    the next run (which reruns the jobs cut short) stops at the lock; the command as written clears it."""
    import contextlib
    import signal
    import time

    found = re.search(r"`(\.venv/bin/snakemake --unlock[^`]*)`", README)
    assert found, "the README shows no snakemake --unlock command"
    from tests.test_makefile import recipe

    run = [*shlex.split(recipe("demo")), "-s", ROOT / "Snakefile", "-d", tmp_path]  # make demo's command
    locks = tmp_path / ".snakemake" / "locks"
    demo = subprocess.Popen(run, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (locks.is_dir() and any(f.stat().st_size for f in locks.iterdir())):  # the lock names its files
            assert demo.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.wait()
    blocked = subprocess.Popen(run, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        out, _ = blocked.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(blocked.pid, signal.SIGKILL)  # had it not stopped at the lock: nothing of it keeps running
    assert blocked.returncode != 0 and "cannot be locked" in out, out[-2000:]
    unlock = [SNAKEMAKE, *found[1].split()[1:], "-s", ROOT / "Snakefile", "-d", tmp_path]
    proc = subprocess.run(unlock, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not locks.exists() or not any(locks.iterdir())


# -- the demo's numbers --------------------------------------------------------------------------------------
def demo_numbers_block() -> str:
    """The README's demo table, generated from the committed demo outputs (tables/table1.csv, figure3.csv)."""
    table = pd.read_csv(DEMO / "tables" / "table1.csv").set_index("dataset")
    row = table.loc["lesions"]

    def pct(value: float, digits: int = 2) -> str:
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"

    lines = [
        "| strategy | Dice [%] | Δ rel. Dice [%] | rel. runtime [%] | rel. FLOPs [%] |",
        "|---|--:|--:|--:|--:|",
        f"| CPS | {pct(row['dice.cps'])} | – | – | – |",
    ]
    for mode, label in (("efficiency", "PGPS-Efficiency"), ("performance", "PGPS-Performance")):
        lines.append(
            f"| {label} | {pct(row[f'dice.{mode}'])} | {pct(row[f'reldice.{mode}'])} | "
            f"{pct(row[f'runtime.{mode}'], 1)} | {pct(row[f'flops.{mode}'], 1)} |"
        )
    return "\n".join(lines)


def readme_block(name: str) -> str:
    found = re.search(rf"<!-- {name}:begin[^>]*-->\n(.*?)\n<!-- {name}:end -->", README, re.DOTALL)
    assert found, f"neither the README nor docs/pages has the <!-- {name}:begin --> ... <!-- {name}:end --> block"
    return found[1]


def test_readme_demo_numbers_are_the_committed_demo_outputs():
    """Re-running `make demo` may change the numbers (other seeds, other code): then commit its outputs and paste
    this test's expected block (python tests/test_readme.py prints it) into the README."""
    assert readme_block("demo-numbers") == demo_numbers_block()


def test_committed_demo_outputs_are_what_make_demo_writes():
    from pgps.report import OUTPUTS

    committed = {p.relative_to(DEMO).as_posix() for p in DEMO.rglob("*") if p.is_file()}
    assert committed == set(OUTPUTS)


# -- the synthetic study's verdicts ----------------------------------------------------------------------------
def study_results_block() -> str:
    """The claim paragraphs of the committed ``paper_figures/study/results.md`` (written by ``make study``)."""
    text = (STUDY / "results.md").read_text()
    body = text.split("-->", 1)[1]  # after the "generated by pgps study-report" comment
    return body.split("\n## How the verdicts are decided")[0].strip()


def test_readme_study_verdicts_are_the_committed_study_outputs():
    assert readme_block("study-results") == study_results_block()


def test_committed_study_outputs_are_what_the_study_writes():
    from pgps.experiments.study import study_outputs

    committed = {p.relative_to(STUDY).as_posix() for p in STUDY.rglob("*") if p.is_file()}
    assert committed == set(study_outputs())


def test_committed_study_runs_name_their_folders_relative_to_the_study():
    """No machine's absolute path in the committed study: every run folder is relative to the study's nnU-Net folder."""
    import csv

    with (STUDY / "tables" / "study_runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and "fold_dir" not in rows[0]
    assert all(r["run_dir"].startswith("results/length") for r in rows)
    for path in STUDY.rglob("*"):
        if path.suffix in (".csv", ".md", ".tex"):
            assert str(ROOT) not in path.read_text() and "/home/" not in path.read_text(), path


# -- the CDL experiment's paragraph ---------------------------------------------------------------------------
def test_the_cdl_paragraph_is_the_committed_cdl_outputs():
    """The CDL guide quotes paper_figures/cdl/results.md (written by pgps cdl-report); until the redesigned
    experiment has been rendered there, it says so and states no finding."""
    from pgps.report.cdl import results_block

    assert readme_block("cdl-results") == results_block(ROOT / "paper_figures" / "cdl")


if __name__ == "__main__":
    if sys.argv[1:] == ["cdl"]:  # the CDL guide's block, from paper_figures/cdl/results.md
        from pgps.report.cdl import results_block

        print(results_block(ROOT / "paper_figures" / "cdl"))
    else:
        print(study_results_block() if sys.argv[1:] == ["study"] else demo_numbers_block())
