"""The tutorial's two examples of "Use the curriculum in your own PyTorch or MONAI loop" run as printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "docs" / "pages" / "tutorials" / "pytorch-monai.md"
SECTION = "# Use the curriculum in your own PyTorch or MONAI loop"


def examples() -> list[str]:
    text = README.read_text()
    assert text.startswith(SECTION)
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def run_example(code: str, tmp_path, monkeypatch, capsys) -> tuple[dict, list[str]]:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace, capsys.readouterr().out.splitlines()


def test_the_section_has_one_short_example_each():
    found = examples()
    assert len(found) == 2 and "pgps.torch" in found[0] and "pgps.monai" in found[1]
    assert all(len(code.splitlines()) <= 25 for code in found), [len(c.splitlines()) for c in found]


def test_plain_pytorch_example(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    ns, lines = run_example(examples()[0], tmp_path, monkeypatch, capsys)
    schedule, sampler = ns["schedule"], ns["sampler"]
    assert sampler.finished and len(lines) == schedule.epochs
    for epoch, line in enumerate(lines):
        stage = schedule.stage_at(epoch)
        shape = (stage.batch_size, 1, *stage.patch_size)
        assert line.startswith(f"epoch {epoch}: stage {schedule.stage_index(epoch)}, batch {shape}, loss "), line
    state = ns["checkpoint"]["sampler"]
    assert state["step"] == schedule.total_iterations
    resumed = ns["pgps"].torch.CurriculumBatchSampler(schedule, num_cases=8, strategy="split_crop", seed=0)
    resumed.load_state_dict(state)
    assert resumed.finished


def test_monai_example(tmp_path, monkeypatch, capsys):
    pytest.importorskip("monai")
    ns, lines = run_example(examples()[1], tmp_path, monkeypatch, capsys)
    schedule = ns["schedule"]
    assert ns["sampler"].finished and len(lines) == schedule.epochs
    for epoch, line in enumerate(lines):
        stage = schedule.stage_at(epoch)
        assert line.startswith(f"epoch {epoch}: patches {(stage.batch_size, 1, *stage.patch_size)}, loss "), line
