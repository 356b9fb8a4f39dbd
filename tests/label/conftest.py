"""Fixtures for labeling tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from label_helpers import make_checkpoint


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")
