"""``pgps download``: a public archive streamed to ``out.part``, resumed with an HTTP Range request, checked against
an MD5 and renamed to ``out``.

Not pooch's ``retrieve`` nor MONAI's ``download_url``: both download into a temporary file that an interruption
discards, so a broken download of a 23.6 GB archive (TotalSegmentatorV2) starts again from its first byte; neither
sends a Range request. pooch is also not in the lock.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pgps.io import writer_lock
from pgps.nnunet.datasets.base import ConversionError
from pgps.progress import Progress


def download(
    url: str,
    out: str | os.PathLike[str],
    md5: str | None = None,
    *,
    progress: bool | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``out`` (a file, or a folder to put the URL's file name in) and return the file.

    Bytes go to ``out.part``; a ``.part`` left by an interrupted download is resumed with an HTTP
    Range request (or restarted when the server ignores it). The file is renamed to ``out`` only when
    complete and, with ``md5``, when its MD5 matches; a mismatch removes the ``.part`` and raises
    :class:`ConversionError`. An existing ``out`` is kept (and checked against ``md5``).
    """
    into_folder = os.fspath(out).endswith(("/", os.sep))
    out = Path(out).expanduser()
    if out.is_dir() or into_folder:
        basename = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
        if not basename:
            raise ConversionError(f"cannot name a file after {url}; give OUT as a file path")
        out = out / basename
    md5 = md5.lower() if md5 else None
    if md5 is not None and not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise ConversionError(f"--md5 must be 32 hex digits, got {md5!r}")
    if out.is_file():
        if md5 is not None and (got := _md5_of(out)) != md5:
            raise ConversionError(f"{out} exists with md5 {got}, expected {md5}; remove it to download again")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(out):  # one download into out at a time: a second fails naming the first
        if out.is_file():  # finished by another download meanwhile
            return out
        part = out.with_name(out.name + ".part")
        for attempt in range(2):  # a second, full attempt after a 416 on a stale .part
            have = part.stat().st_size if part.is_file() else 0
            request = urllib.request.Request(url, headers={"User-Agent": "pgps-download"})
            if have:
                request.add_header("Range", f"bytes={have}-")
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and have and attempt == 0:
                    if md5 is not None and _md5_of(part) == md5:
                        break  # the .part was already complete
                    part.unlink()
                    continue
                raise ConversionError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError) as exc:  # no network, unknown host, refused, timed out
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                raise ConversionError(
                    f"{url}: cannot download ({reason}); check the network, or fetch the file yourself and point "
                    "the dataset's raw_path at it"
                ) from None
            with response:
                start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
                resumed = (
                    have > 0 and getattr(response, "status", None) == 206 and start and int(start.group(1)) == have
                )
                if have and not resumed:
                    have = 0  # the server sent the whole file
                digest = _md5_of(part, hashlib.md5()) if resumed else hashlib.md5()
                length = response.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else None
                bar = Progress(f"download {out.name}", total, progress, unit="B", initial=have)
                try:
                    with open(part, "ab" if resumed else "wb") as f:
                        while chunk := response.read(chunk_size):
                            f.write(chunk)
                            digest.update(chunk)
                            bar.advance(len(chunk))
                except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                    raise ConversionError(f"{url}: the download broke off ({exc}); run again to resume it") from None
                finally:
                    bar.close()
            if total is not None and part.stat().st_size != total:
                raise ConversionError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume")
            if md5 is not None and (got := digest.hexdigest()) != md5:
                part.unlink()
                raise ConversionError(f"{url}: md5 {got} does not match the expected {md5}; removed {part}")
            break
        os.replace(part, out)
        return out


def _md5_of(path: Path, digest: Any = None, chunk_size: int = 1 << 20) -> Any:
    """MD5 of a file: a hex string, or ``digest`` updated with the file's bytes when one is given."""
    own = digest is None
    digest = hashlib.md5() if own else digest
    with open(path, "rb") as f:
        for chunk in _chunks(f, chunk_size):
            digest.update(chunk)
    return digest.hexdigest() if own else digest


def _chunks(f: Any, size: int) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk
