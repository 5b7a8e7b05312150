"""Fixtures shared by the test modules. OpenMP waits passively in the tests and every process they start, unless
``OMP_WAIT_POLICY`` is set (set before torch loads libgomp: see the Makefile)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import pytest

from tests import nnunet_env as nn


@pytest.fixture(scope="session")
def tiny_nnunet(tmp_path_factory):
    """The tiny nnU-Net dataset of :mod:`tests.nnunet_env`, planned and preprocessed once per session, with the
    reduced U-Net plans and the tiny UNETR/SwinUNETR configurations (``nnUNetTransformerPlans``)."""
    root = tmp_path_factory.mktemp("nnunet")
    nn.write_raw(root)
    nn.plan_and_preprocess(root)
    nn.add_transformer_plans(root)
    return root


LONGEST_FIRST = ("test_ddp.py", "test_resume.py", "test_study.py", "test_cuda.py", "test_cdl_nnunet.py",
                 "test_nnunet.py", "test_runlock.py", "test_compile.py", "test_gpu_check.py", "test_backbones.py",
                 "test_article.py", "test_preemption.py")  # fmt: skip
"""The test files that take longest (wall time, waits included), longest first. ``make test`` hands whole files to
its 2 workers (``--dist loadfile``) in collection order; run last, a long file kept one worker busy minutes after
the other had finished (#29's 10-minute budget)."""


def pytest_collection_modifyitems(config, items):
    """The files of :data:`LONGEST_FIRST` first, in that order; the others after them, as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
