"""The tiny Janus and Emu3 stand-in folders, built once per test module."""

from __future__ import annotations

import pytest
from tokred_train.testing import save_tiny_emu3, save_tiny_janus, tiny_run_texts


@pytest.fixture(scope="module")
def janus_dir(tmp_path_factory):
    return save_tiny_janus(tmp_path_factory.mktemp("janus"), tiny_run_texts())


@pytest.fixture(scope="module")
def emu3_dir(tmp_path_factory):
    return save_tiny_emu3(tmp_path_factory.mktemp("emu3"), tiny_run_texts())
