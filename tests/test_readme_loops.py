"""The tutorial's two examples of "Use the curriculum in your own PyTorch or MONAI loop" run as printed; the MONAI
one is also interrupted mid-epoch after a checkpoint and started again, as written, to resume bit for bit."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "docs" / "pages" / "tutorials" / "pytorch-monai.md"
SECTION = "# Use the curriculum in your own PyTorch or MONAI loop"


def examples() -> list[str]:
    text = README.read_text()
    assert text.startswith(SECTION)
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def run_example(code: str, tmp_path, monkeypatch, capsys) -> tuple[dict, list[str]]:
    """Run ``code`` in ``tmp_path``, torch's generator seeded as a fresh process would have it for one seed."""
    monkeypatch.chdir(tmp_path)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(0)  # the network's initial weights: the same in every run of the test
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace, capsys.readouterr().out.splitlines()


def test_the_section_has_one_short_example_each():
    found = examples()
    assert len(found) == 2 and "pgps.torch" in found[0] and "pgps.monai" in found[1]
    # the MONAI example also checkpoints and resumes
    assert [len(code.splitlines()) <= limit for code, limit in zip(found, (25, 32), strict=True)] == [True, True]


def test_plain_pytorch_example(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from torchdata.stateful_dataloader import StatefulDataLoader

    ns, lines = run_example(examples()[0], tmp_path, monkeypatch, capsys)
    schedule, sampler, pgps = ns["schedule"], ns["sampler"], ns["pgps"]
    assert sampler.finished and len(lines) == schedule.epochs
    for epoch, line in enumerate(lines):
        stage = schedule.stage_at(epoch)
        shape = (stage.batch_size, 1, *stage.patch_size)
        assert line.startswith(f"epoch {epoch}: stage {schedule.stage_index(epoch)}, batch {shape}, loss "), line
    # the checkpoint's loader state is the end of the schedule: a new loader given it has nothing left to train
    resumed = pgps.torch.CurriculumBatchSampler(schedule, num_cases=8, strategy="split_crop", seed=0)
    loader = StatefulDataLoader(ns["dataset"], batch_sampler=resumed, collate_fn=pgps.torch.collate_patches,
                                num_workers=2)  # fmt: skip
    loader.load_state_dict(ns["checkpoint"]["loader"])
    with pytest.raises(RuntimeError, match="are done"):
        list(loader)
    assert resumed.finished


class Interrupted(Exception):
    """Stands for a killed job: raised by the n-th torch.save once its checkpoint is written."""


def test_monai_example_resumes_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    """Run as written (A); run as written again in a fresh folder, stopped after the 5th checkpoint (mid-epoch:
    2 iterations per epoch), then once more as written: it resumes, and the loss saw the same network outputs and
    labels, bit for bit, and the printed epochs (losses included) are those of A."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from monai.losses import DiceCELoss

    seen: list[tuple] = []
    forward = DiceCELoss.forward

    def recording(self, output, target):
        seen.append((output.detach().clone(), target.as_tensor().clone() if hasattr(target, "as_tensor") else target))
        return forward(self, output, target)

    monkeypatch.setattr(DiceCELoss, "forward", recording)
    code = examples()[1]
    (tmp_path / "whole").mkdir()
    ns, whole_lines = run_example(code, tmp_path / "whole", monkeypatch, capsys)
    schedule = ns["schedule"]
    whole, seen[:] = list(seen), []
    assert ns["sampler"].finished and len(whole) == schedule.total_iterations == 18
    assert len(whole_lines) == schedule.epochs
    for epoch, line in enumerate(whole_lines):
        stage = schedule.stage_at(epoch)
        step = (epoch + 1) * schedule.iterations_per_epoch - 1
        assert line.startswith(f"step {step}: patches {(stage.batch_size, 1, *stage.patch_size)}, loss "), line

    save, saves = torch.save, []

    def save_then_stop(obj, path, *args, **kwargs):
        save(obj, path, *args, **kwargs)
        saves.append(path)
        if len(saves) == 5:
            raise Interrupted

    (tmp_path / "resumed").mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", save_then_stop)
        with pytest.raises(Interrupted):
            run_example(code, tmp_path / "resumed", monkeypatch, capsys)
    first_lines = capsys.readouterr().out.splitlines()
    part, seen[:] = list(seen), []
    assert len(part) == 5 and len(first_lines) == 2  # stopped inside epoch 2
    ns, rest_lines = run_example(code, tmp_path / "resumed", monkeypatch, capsys)
    assert ns["sampler"].finished
    assert first_lines + rest_lines == whole_lines
    assert len(part) + len(seen) == len(whole)
    for (output, label), (output_whole, label_whole) in zip(part + seen, whole, strict=True):
        assert torch.equal(label, label_whole) and torch.equal(output, output_whole)
