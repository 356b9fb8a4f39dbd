"""Fixtures for labeling tests (thin wrappers over tests/conftest.py's builder)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(checkpoint_builder: Callable[..., Path],
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight R18 at 128x96 whose head only is spread (the labeling tests' model)."""
    return checkpoint_builder(tmp_path_factory.mktemp("model") / "tiny.pt", spread_deconv=False)
