"""Fixtures shared by the test modules."""

from __future__ import annotations

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
