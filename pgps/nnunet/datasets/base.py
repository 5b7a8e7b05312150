"""What every converter of :mod:`pgps.nnunet.datasets.convert` shares: its error, its context (staging folder,
workers, progress), a progress display and the helpers that lay out a raw dataset folder."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgps.io import read_json


class ConversionError(ValueError):
    """A source that cannot be converted (missing, unexpected layout, existing output, ...)."""


@dataclasses.dataclass(frozen=True)
class Format:
    """One source format: the layout it expects, where to get such data, and its converter."""

    name: str
    layout: str
    obtain: str
    locate: Callable[[Path], Path]
    convert: Callable[[Path, Path, int, str, Context], str]

    def layout_error(self, where: Path, problem: str = "") -> ConversionError:
        """The error for a source without this format's layout: what was expected and where to get it."""
        problem = f"{problem}. " if problem else ""
        return ConversionError(
            f"{where}: not a {self.name} source. {problem}Expected {self.layout}. Get the data: {self.obtain}"
        )


@dataclasses.dataclass
class Context:
    staging: Path
    workers: int
    progress: bool | None
    source_is_extracted: bool


def subfolders(folder: Path) -> list[Path]:
    """Sub-folders, skipping hidden ones and macOS's __MACOSX."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return []


def files_in(folder: Path, suffix: str = "") -> list[Path]:
    """Files (not hidden, not starting with '_', e.g. MSD's '._' resource forks) ending with ``suffix``."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix) and p.name[0] not in "._")


def count_files(folder: Path) -> int:
    """Image and label files written so far (dataset.json and splits files are not counted)."""
    return sum(not f.endswith(".json") for _, _, files in os.walk(folder) for f in files)


def read_source_json(path: Path) -> Any:
    try:
        return read_json(path)
    except ValueError as exc:
        raise ConversionError(str(exc)) from None


def make_raw_dirs(out: Path, test: bool) -> None:
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    if test:
        (out / "imagesTs").mkdir()


def place(src: Path, dst: Path, ctx: Context | None = None, move: bool = False) -> None:
    """Move ``src`` to ``dst`` when it is our extracted copy; otherwise hard-link it, or copy it across devices."""
    if move or (ctx is not None and ctx.source_is_extracted):
        os.replace(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_dataset_json(
    out: Path, name: str, channels: dict[str, str], labels: dict[str, int], cases: int, **extra: Any
) -> None:
    meta = {
        "channel_names": channels,
        "labels": labels,
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "name": name,
        **extra,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n")


def annotate(out: Path, name: str, provenance: dict[str, str]) -> None:
    """Set ``name`` and add the ``pgps_convert`` provenance to ``out/dataset.json``."""
    path = out / "dataset.json"
    meta = read_source_json(path)
    meta["name"] = name
    meta["pgps_convert"] = provenance
    tmp = path.with_name("dataset.json.tmp")
    tmp.write_text(json.dumps(meta, indent=4) + "\n")
    os.replace(tmp, path)  # a new file: never writes through a hard link into a source
