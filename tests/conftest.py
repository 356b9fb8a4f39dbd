"""Shared fixtures: the project's shared test data and small synthetic sets."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def coco_mini(shared_data: Path) -> Path:
    return shared_data / "coco_mini"


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory) -> Path:
    """40 synthetic images (~100 persons): OUT/annotations.json + OUT/images/."""
    from posemum_deploy.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synthetic_small")
    return generate_dataset(out, 40, seed=3)
