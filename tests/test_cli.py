"""The ``pgps schedule`` command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pgps
from pgps.cli import main

PLANS = Path(__file__).parent / "data" / "nnUNetPlans_3d.json"
EXPLICIT = ["--patch-size", "128", "128", "128", "--steps", "32", "32", "32", "--batch-size", "2"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_issue_example_prints_ten_stages(capsys):
    code, out, err = run(capsys, "schedule", *EXPLICIT, "--mode", "performance")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert "10 stages" in lines[0]
    rows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 10
    assert rows[0][:3] == ["0", "32x32x32", "128"]
    assert rows[-1][:3] == ["9", "128x128x128", "2"]
    assert "relative voxels" in lines[-1]


@pytest.mark.parametrize("mode", list(pgps.MODES))
def test_json_shape(capsys, mode):
    code, out, _ = run(capsys, "schedule", *EXPLICIT, "--mode", mode, "--epochs", "100", "--json")
    assert code == 0
    data = json.loads(out)
    assert list(data) == ["mode", "patch_size_max", "batch_size_base", "stages", "relative_voxels"]
    assert data["mode"] == mode
    assert data["patch_size_max"] == [128, 128, 128] and data["batch_size_base"] == 2
    assert isinstance(data["relative_voxels"], float)
    for stage in data["stages"]:
        assert list(stage) == ["patch_size", "batch_size", "epochs"]
        assert len(stage["patch_size"]) == 3 and all(isinstance(v, int) for v in stage["patch_size"])
        assert isinstance(stage["batch_size"], int) and isinstance(stage["epochs"], int)
    assert sum(s["epochs"] for s in data["stages"]) == 100
    expected = pgps.make_schedule(mode, (128, 128, 128), (32, 32, 32), 2, epochs=100)
    assert data == expected.summary()


@pytest.mark.parametrize(("pool", "stages"), [(None, 9), ("miccai", 9), ("journal", 10)])
def test_rpss_pool_is_named_in_the_stage_table(capsys, pool, stages):
    code, out, _ = run(capsys, "schedule", *EXPLICIT, "--mode", "rpss", *(["--rpss-pool", pool] if pool else []))
    assert code == 0
    assert f"{stages} stages" in out.splitlines()[0]
    assert f"note: RPSS pool: {pgps.schedule.RPSS_POOLS[pool or 'miccai']}" in out


def test_plans_file_input(capsys):
    code, out, _ = run(capsys, "schedule", "--plans", str(PLANS), "--configuration", "3d_fullres", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["patch_size_max"] == [40, 56, 40] and data["batch_size_base"] == 9
    assert data["stages"][0] == {"patch_size": [8, 8, 8], "batch_size": 1575, "epochs": 66}
    # inherited configuration and legacy pool_op_kernel_sizes
    assert pgps.planned_configuration(PLANS, "3d_fullres_bs2").batch_size == 2
    legacy = pgps.planned_configuration(PLANS, "3d_legacy")
    assert legacy.steps == (16, 32, 32) and legacy.patch_size == (80, 192, 160)


def test_training_length(capsys):
    code, out, _ = run(capsys, "schedule", *EXPLICIT, "--mode", "efficiency", "--training-length", "0.1")
    assert code == 0 and "x 25 iterations" in out.splitlines()[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--patch-size", "128", "100", "128", "--steps", "32", "32", "32", "--batch-size", "2"],
            "axis 1 (= 100) is not divisible by its step 32",
        ),
        (["--patch-size", "128", "128", "--steps", "32", "32", "32", "--batch-size", "2"], "must have 3 axes"),
        (["--patch-size", "128", "128", "128"], "missing --steps, --batch-size"),
        (["--plans", str(PLANS), "--configuration", "2d"], "is not 3D"),
        (["--plans", str(PLANS), "--configuration", "3d_lowres"], "configuration '3d_lowres' is not in the plans"),
        (["--plans", "/nonexistent/plans.json"], "No such file"),
        (["--plans", str(PLANS), *EXPLICIT], "not both"),
        ([*EXPLICIT, "--training-length", "2"], "training_length must be in"),
    ],
)
def test_errors_go_to_stderr_with_status_2(capsys, argv, message):
    code, out, err = run(capsys, "schedule", *argv)
    assert code == 2 and out == ""
    assert message in err


def test_usage_errors_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "pgps", "schedule", *EXPLICIT, "--mode", "fast"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "invalid choice: 'fast'" in proc.stderr


def test_trainers_lists_variants_and_ext_path(capsys):
    code, out, _ = run(capsys, "trainers", "--ext-path")
    ext = Path(out.strip())
    assert code == 0 and (ext / "pgps_trainers.py").is_file()
    code, out, _ = run(capsys, "trainers")
    names = out.splitlines()[1:]
    assert code == 0 and "nnUNetTrainer_PGPS_Performance" in names and "nnUNetTrainer_PGPS_Efficiency_10pct" in names
    from pgps.nnunet.variants import TRAINERS

    assert names == sorted(TRAINERS)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"pgps {pgps.__version__}"


def test_every_command_takes_the_output_options():
    """-v/-q and --progress/--no-progress on every command, once (no command keeps its own)."""
    from pgps.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert len(commands) >= 20
    for name, parser in commands.items():
        flags = [flag for action in parser._actions for flag in action.option_strings]
        shared = ["-v", "--verbose", "-q", "--quiet", "--progress", "--no-progress"]
        assert [f for f in flags if f in shared] == shared, name


def test_logging_and_warnings_go_to_stderr_with_the_command_name(capsys, monkeypatch):
    """A library note (INFO on a ``pgps`` logger) and a warning reach stderr as ``pgps COMMAND: ...``; -q keeps the
    warning and drops the note; after ``main`` the loggers and ``warnings`` are as before."""
    import logging
    import warnings

    from pgps.cli import curriculum

    def run(args):
        logging.getLogger("pgps.cli.test").info("a note")
        logging.getLogger("pgps.cli.test").debug("a detail")
        warnings.warn("a thing to see once", stacklevel=1)
        return 0

    monkeypatch.setattr(curriculum, "_run_schedule", run)  # main builds its parser, which binds the function
    shown = warnings.showwarning
    argv = ["schedule", "--patch-size", "64", "64", "64", "--steps", "16", "16", "16", "--batch-size", "2"]
    for extra, expected in (([], ["a note", "warning: a thing to see once"]),
                            (["-v"], ["a note", "a detail", "warning: a thing to see once"]),
                            (["-q"], ["warning: a thing to see once"])):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            assert main([*argv, *extra]) == 0
        assert capsys.readouterr().err.splitlines() == [f"pgps schedule: {line}" for line in expected], extra
    assert warnings.showwarning is shown and not logging.getLogger("pgps").handlers
