"""Several short nnU-Net trainings of :mod:`tests.nnunet_env` in one Python process.

Each process that imports torch and nnU-Net spends about 4-6 s of CPU on the imports and the trainer lookup, more
than a short CPU training itself, so tests that only read what their trainings wrote (not nnU-Net's command line)
run them one after another in one process: each run is :data:`tests.nnunet_env.RUN_TRAINING` with its own
arguments and environment (the trainer, ``nnUNet_results`` and the ``PGPS_*`` settings, which nnU-Net and the
trainer read when a trainer is made) and Python's, numpy's and torch's generators seeded anew from the system,
as :func:`tests.nnunet_env.train_only` would run it in a process of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests import nnunet_env as nn

MANY = """
import contextlib, json, os, random, sys, traceback
import numpy, torch
spec = json.loads(open(sys.argv[1]).read())
base, results = dict(os.environ), {}
for name, run in spec["runs"].items():
    os.environ.clear()
    os.environ.update(base, **run["env"])
    sys.argv = ["-c", *run["argv"]]
    random.seed(), numpy.random.seed(), torch.seed()  # unseeded, as a new process: a run inherits no random state
    with open(run["log"], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            exec(spec["script"], {"__name__": "__main__"})
            results[name] = {"status": 0}
        except SystemExit as exc:  # RUN_TRAINING's simulated pre-emption
            results[name] = {"status": exc.code}
        except Exception:
            traceback.print_exc()
            results[name] = {"status": 1}
    print(f"run {name}: status {results[name]['status']}", flush=True)
open(spec["out"], "w").write(json.dumps(results))
"""

SHORT = {"PGPS_EPOCHS": "4", "PGPS_ITERATIONS_PER_EPOCH": "2", "PGPS_VAL_ITERATIONS": "1", "nnUNet_n_proc_DA": "0"}
""":func:`tests.nnunet_env.train_only`'s short-run settings."""


def train_many(root: Path, work: Path, runs: dict[str, tuple], script: str = nn.RUN_TRAINING, **common: str
               ) -> dict[str, dict]:  # fmt: skip
    """Run ``runs`` (name -> ``(trainer, results, args, settings)``: ``args`` as for
    :func:`tests.nnunet_env.train_only`, ``settings`` a dict of environment variables over :data:`SHORT` and
    ``common``) in order in one process; returns name -> ``{"status": exit status, "log": its output}`` (a
    run that raised: status 1, the traceback at the end of its log). The process's own output: ``work/many.log``.
    ``script``: what each run executes (``sys.argv`` = ``["-c", trainer, *args]``) instead of
    :data:`tests.nnunet_env.RUN_TRAINING`; run once per run in one process, it must not wrap a class's method
    again each time."""
    work.mkdir(parents=True, exist_ok=True)
    spec = {"script": script, "out": str(work / "many.json"), "runs": {}}
    for name, (trainer, results, args, settings) in runs.items():
        env = {**SHORT, **common, **settings, "nnUNet_results": str(results)}
        spec["runs"][name] = {"argv": [trainer, *args], "env": env, "log": str(work / f"{name}.log")}
    (work / "many_spec.json").write_text(json.dumps(spec))
    with (work / "many.log").open("w") as log:
        proc = subprocess.run([sys.executable, "-c", MANY, str(work / "many_spec.json")], env=nn.env(root),
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    assert proc.returncode == 0, (work / "many.log").read_text()[-4000:]
    done = json.loads((work / "many.json").read_text())
    return {name: {**done[name], "log": (work / f"{name}.log").read_text()} for name in runs}
