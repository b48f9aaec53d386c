"""Fixtures shared by the test modules (builders of inputs and run helpers: ``tests.fixtures``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.fixtures.paths import REPO_ROOT, TEST_DATA


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a module: tiny training batches only contend for the cores of a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (``tests.fixtures.REPO_ROOT``)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def test_data() -> Path:
    """tests/data (``tests.fixtures.TEST_DATA``)."""
    return TEST_DATA
