"""nnU-Net's own converters, run in a child Python whose ``nnUNet_raw`` is a staging folder (``python -m
pgps.nnunet.datasets.child CALL``); the folder they write is renamed to the requested one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgps.nnunet.datasets.base import Context, ConversionError, count_files
from pgps.progress import Progress


def run_nnunet(call: dict[str, Any], out: Path, dataset_id: int, expected_files: int, ctx: Context) -> None:
    """Run one of nnU-Net's converters in a child Python with ``nnUNet_raw`` set to a staging folder.

    The folder it writes (``DatasetXXX_<nnU-Net's name>``) is renamed to ``out``. Progress counts the
    files appearing in it against ``expected_files``; the child's output goes to a log file whose tail
    is shown if it fails.
    """
    raw = ctx.staging / "nnunet_raw"
    raw.mkdir()
    package_root = str(Path(__file__).resolve().parents[3])  # the folder holding pgps/
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(ctx.staging / "nnunet_preprocessed"),  # absent: no id clashes from there
        "nnUNet_results": str(ctx.staging / "nnunet_results"),
        "PYTHONPATH": os.pathsep.join([package_root, *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    if call["kind"] == "toothfairy2":
        call = {**call, "out": str(raw / f"Dataset{dataset_id:03d}_ToothFairy2_All")}
    log = ctx.staging / "nnunet_converter.log"
    bar = Progress(f"{call['kind']} -> {out.name} (nnU-Net)", expected_files, ctx.progress, unit="file")
    with open(log, "wb") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "pgps.nnunet.datasets.child", json.dumps(call)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            while child.poll() is None:
                time.sleep(0.5)
                bar.update(count_files(raw))
        finally:
            if child.poll() is None:  # interrupted: stop the child before the staging folder goes
                child.kill()
                child.wait()
    bar.update(count_files(raw))
    bar.close()
    if child.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-6:]
        raise ConversionError(
            f"nnU-Net's {call['kind']} converter failed (exit {child.returncode}): " + " | ".join(tail)
        )
    produced = sorted(raw.glob(f"Dataset{dataset_id:03d}_*"))
    if len(produced) != 1:
        raise ConversionError(f"nnU-Net's {call['kind']} converter wrote {[p.name for p in produced]} into {raw}")
    out.parent.mkdir(parents=True, exist_ok=True)
    produced[0].rename(out)


def _child_main(argv: list[str]) -> None:
    """Entry point of the child process: call the nnU-Net converter described by ``argv[0]`` (JSON)."""
    call = json.loads(argv[0])
    kind = call["kind"]
    if kind == "msd":
        from nnunetv2.dataset_conversion.convert_MSD_dataset import convert_msd_dataset

        convert_msd_dataset(call["source"], overwrite_target_id=call["dataset_id"], num_processes=call["workers"])
    elif kind == "kits23":
        from nnunetv2.dataset_conversion.Dataset220_KiTS2023 import convert_kits2023

        convert_kits2023(call["source"], call["dataset_id"])
    elif kind == "amos22":
        from nnunetv2.dataset_conversion.Dataset219_Amos2022_task2 import convert_amos_task2

        convert_amos_task2(call["source"], call["dataset_id"])
    elif kind == "toothfairy2":
        from nnunetv2.dataset_conversion import Dataset119_ToothFairy2_All as toothfairy

        # process_ds starts 12 processes; this child is ours, so its helpers can be given our count
        for helper in ("process_images", "process_labels"):
            setattr(toothfairy, helper, _with_processes(getattr(toothfairy, helper), call["workers"]))
        # os.path.join(root, absolute) is the absolute path: source and output may live anywhere
        toothfairy.process_ds(os.sep, call["source"], call["out"], toothfairy.mapping_DS119(), None)
    else:
        raise ValueError(f"unknown converter {kind!r}")


def _with_processes(helper: Callable[..., Any], processes: int) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        kwargs["n_processes"] = processes
        return helper(*args, **kwargs)

    return wrapped


if __name__ == "__main__":
    _child_main(sys.argv[1:])
