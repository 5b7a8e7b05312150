"""pgps.progress: a tqdm bar when asked (or on a terminal), log lines about every tenth otherwise, nothing when off."""

from __future__ import annotations

import logging
import sys

import pytest

from pgps.progress import Progress, progress


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pgps.progress"]


def test_lines_about_every_tenth_when_not_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="pgps")
    assert list(progress(range(25), "count", unit="case")) == list(range(25))  # stderr is not a terminal here
    counts = [int(line.split()[1].split("/")[0]) for line in _lines(caplog)]
    assert counts == [*range(2, 25, 2), 25] and _lines(caplog)[-1] == "count: 25/25 case"


def test_off_is_silent_and_a_bar_goes_to_stderr(caplog, capsys):
    caplog.set_level(logging.DEBUG, logger="pgps")
    list(progress(range(5), "quiet", enabled=False))
    assert _lines(caplog) == [] and capsys.readouterr() == ("", "")
    pytest.importorskip("tqdm")
    list(progress(range(5), "drawn", enabled=True))
    out, err = capsys.readouterr()
    assert out == "" and "drawn: 100%" in err and "5/5" in err and _lines(caplog) == []


def test_a_bar_without_tqdm_warns_and_logs_lines(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    caplog.set_level(logging.INFO, logger="pgps")
    with pytest.warns(UserWarning, match="tqdm is not installed"):
        with Progress("bytes", total=1 << 26, enabled=True, unit="B") as bar:
            for _ in range(4):
                bar.advance(1 << 24)
    assert _lines(caplog)[-1] == f"bytes: {1 << 26}/{1 << 26} B"
