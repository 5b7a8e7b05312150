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
