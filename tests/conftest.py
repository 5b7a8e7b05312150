"""Fixtures shared by the test modules that train nnU-Net on the tiny dataset of tests/nnunet_env.py."""

from __future__ import annotations

import pytest

from tests import nnunet_env as nn


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """nnU-Net folders (raw, preprocessed with the reduced plans) of the tiny dataset, made once per session;
    each test trains into a results folder of its own."""
    root = tmp_path_factory.mktemp("nnunet")
    nn.write_raw(root)
    nn.plan_and_preprocess(root)
    return root
