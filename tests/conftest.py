"""Shared fixtures: the project's shared test data, tiny checkpoints, small synthetic sets.

Paths and the checkpoint builder live in tests/testdata.py (importable by test modules);
per-folder conftests wrap these fixtures, they do not build their own.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from testdata import COCO_MINI, NO_SHARED_DATA, SHARED_DATA, make_checkpoint

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(NO_SHARED_DATA)
    return SHARED_DATA


@pytest.fixture(scope="session")
def coco_mini(shared_data: Path) -> Path:
    """../shared/data/coco_mini: real COCO images, test_coco.json and detections."""
    return COCO_MINI


@pytest.fixture(scope="session")
def coco_mini_dir(coco_mini: Path) -> Path:
    """The same folder as `coco_mini` (the export tests' name for it)."""
    return coco_mini


@pytest.fixture(scope="session")
def checkpoint_builder() -> Callable[..., Path]:
    """`build(path, input_hw=(128, 96), seed=0, spread_deconv=True)` -> a tiny checkpoint
    with fixed random weights (see testdata.make_checkpoint); for tests that need their
    own size or seed. Most tests want `tiny_ckpt` instead."""
    return make_checkpoint


@pytest.fixture(scope="session")
def tiny_ckpt(checkpoint_builder: Callable[..., Path],
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SimpleBaseline-R18 at 128x96, fixed random weights with BN to fold (read-only:
    tests share the file)."""
    return checkpoint_builder(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory) -> Path:
    """40 synthetic images (~100 persons): OUT/annotations.json + OUT/images/."""
    from posemum_deploy.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synthetic_small")
    return generate_dataset(out, 40, seed=3)
