"""Fault injection for the crash-safety tests (tests/test_resume.py, tests/test_slurm.py): on ``PYTHONPATH`` only there.

Python imports ``sitecustomize`` at start-up, so every process a test starts (``snakemake``, the rule's
``nnUNetv2_train``) loads this file; it does nothing unless ``PGPS_FAULT_KILL``,
``PGPS_FAULT_RECORD`` or ``PGPS_FAULT_PACE`` is set, and acts only in the main process of ``nnUNetv2_train`` (not in
nnU-Net's worker or export processes). When nnU-Net's trainer module is imported it wraps:

- ``PGPS_FAULT_KILL=iteration:E:I``: SIGKILL this process at training iteration ``I`` of epoch ``E``;
- ``PGPS_FAULT_KILL=save:NAME:E:F``: while ``torch.save`` writes a file whose name starts with ``NAME``
  (e.g. ``checkpoint_latest.pth``, also its temporary file) holding epoch ``E`` (``-1``: any), write
  the first fraction ``F`` of its bytes, then SIGKILL;
- ``PGPS_FAULT_KILL=validation:N``: SIGKILL at the ``N``-th sliding-window prediction (0 = the first)
  of nnU-Net's final validation;
- ``PGPS_FAULT_KILL=train_end``: SIGKILL when training has ended (before the final checkpoint);
- ``PGPS_FAULT_RECORD=FILE``: append ``epoch iteration md5(batch["data"])`` for every training batch;
- ``PGPS_FAULT_PACE=SECONDS``: make every training iteration last at least ``SECONDS`` (sleeping the rest), so
  that a test's training runs for a known time whatever the machine's load, with the CPU left to others.

And in ``snakemake`` (tests/test_slurm.py), not a fault: ``PGPS_TEST_SLURM_STATUS_SECONDS=S`` makes
snakemake-executor-plugin-slurm ask SLURM for its jobs' states every ``S`` seconds at most. The plugin waits 10 s
longer after every check that finds no job finished (up to 180 s), so a test would otherwise wait minutes to see
a job end; what it does with the states is unchanged.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import signal
import sys
import time

TRAINER_MODULE = "nnunetv2.training.nnUNetTrainer.nnUNetTrainer"


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _patch(module) -> None:
    import hashlib
    import io

    import numpy as np
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    kind, *args = os.environ.get("PGPS_FAULT_KILL", "none").split(":")
    record = os.environ.get("PGPS_FAULT_RECORD")
    pace = float(os.environ.get("PGPS_FAULT_PACE") or 0)
    trainer_class = module.nnUNetTrainer
    counts: dict[int, int] = {}

    train_step = trainer_class.train_step

    def counted_train_step(self, batch):
        epoch = self.current_epoch
        iteration = counts.get(epoch, 0)
        counts[epoch] = iteration + 1
        if record:
            data = np.ascontiguousarray(batch["data"].detach().cpu().numpy())
            with open(record, "a") as f:
                f.write(f"{epoch} {iteration} {hashlib.md5(data.tobytes()).hexdigest()}\n")
        if kind == "iteration" and (epoch, iteration) == (int(args[0]), int(args[1])):
            _kill()
        started = time.monotonic()
        out = train_step(self, batch)
        time.sleep(max(0.0, pace - (time.monotonic() - started)))
        return out

    trainer_class.train_step = counted_train_step

    if kind == "save":
        name, epoch, fraction = args[0], int(args[1]), float(args[2])
        real_save = torch.save

        def save(obj, f, *a, **kw):
            target = os.path.basename(os.fspath(f)) if isinstance(f, str | os.PathLike) else ""
            holds = isinstance(obj, dict) and (epoch < 0 or obj.get("current_epoch") == epoch + 1)
            if target.startswith(name) and holds:
                buf = io.BytesIO()
                real_save(obj, buf, *a, **kw)
                data = buf.getvalue()
                with open(f, "wb") as out:
                    out.write(data[: int(len(data) * fraction)])
                _kill()
            return real_save(obj, f, *a, **kw)

        torch.save = save

    if kind == "validation":
        predict = nnUNetPredictor.predict_sliding_window_return_logits
        calls = [0]

        def counted_predict(self, *a, **kw):
            if calls[0] == int(args[0]):
                _kill()
            calls[0] += 1
            return predict(self, *a, **kw)

        nnUNetPredictor.predict_sliding_window_return_logits = counted_predict

    if kind == "train_end":
        trainer_class.on_train_end = lambda self: _kill()


def _cap_status_interval(module) -> None:
    cap = float(os.environ["PGPS_TEST_SLURM_STATUS_SECONDS"])
    executor = module.Executor
    check = executor.check_active_jobs

    async def capped(self, active_jobs):
        async for job in check(self, active_jobs):
            yield job
        self.next_seconds_between_status_checks = min(self.next_seconds_between_status_checks, cap)

    executor.check_active_jobs = capped


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str = TRAINER_MODULE, patch=_patch) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            self.patch(module)

        loader.exec_module = exec_and_patch
        return spec


def _install() -> None:
    program = os.path.basename(sys.argv[0] if sys.argv else "")
    if os.environ.get("PGPS_TEST_SLURM_STATUS_SECONDS") and program == "snakemake":
        sys.meta_path.insert(0, _PatchAfterImport("snakemake_executor_plugin_slurm", _cap_status_interval))
    if not any(os.environ.get(f"PGPS_FAULT_{name}") for name in ("KILL", "RECORD", "PACE")):
        return
    if not program.startswith("nnUNetv2_train"):
        return
    sys.meta_path.insert(0, _PatchAfterImport())


_install()
