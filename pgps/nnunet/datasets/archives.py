"""Publishers' archives: which files are archives, extracting one with progress, and finding a dataset's root up to
three folders below where it was extracted."""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from pgps.nnunet.datasets.base import ConversionError, Format, subfolders
from pgps.progress import Progress

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


SEARCH_DEPTH = 3


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def extract(archive: Path, into: Path, progress: bool | None) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip archive into ``into`` (refusing paths outside it); return ``into``."""
    into.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                members = z.infolist()
                bar = Progress(f"extract {archive.name}", len(members), progress, unit="file")
                for member in members:
                    z.extract(member, into)  # zipfile drops absolute and '..' parts
                    bar.advance()
        else:
            with tarfile.open(archive, "r:*") as t:
                bar = Progress(f"extract {archive.name}", None, progress, unit="file")
                for member in t:
                    t.extract(member, into, filter="data")
                    bar.advance()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ConversionError(f"{archive}: cannot extract ({exc})") from None
    bar.close()
    return into


def find_root(base: Path, is_root: Callable[[Path], bool], spec: Format) -> Path:
    """The shallowest folder under ``base`` (``base`` included, up to 3 levels down) that ``is_root``."""
    level = [base]
    for _ in range(SEARCH_DEPTH + 1):
        found = [d for d in level if is_root(d)]
        if len(found) == 1:
            return found[0]
        if found:
            raise ConversionError(f"{base}: several {spec.name} datasets found: {', '.join(map(str, found))}")
        level = [c for d in level for c in subfolders(d)]
    raise spec.layout_error(base, f"No such folder in it or up to {SEARCH_DEPTH} levels below")
