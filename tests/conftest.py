"""Shared fixtures: the project's shared test data, tiny checkpoints, small synthetic sets.

Paths and the checkpoint builder live in tests/testdata.py (importable by test modules);
per-folder conftests wrap these fixtures, they do not build their own.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from testdata import COCO_MINI, NO_SHARED_DATA, SHARED_DATA, make_checkpoint

from posemum_deploy.system import usable_cpus


def _threads_per_test_process() -> int:
    """Two torch threads in a lone pytest process; under pytest-xdist (`-n N`) each of
    the N workers gets its share of the CPUs, and so do the subprocesses its tests start
    (OMP_NUM_THREADS), so that side-by-side workers do not oversubscribe the cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = max(1, min(2, usable_cpus() // workers))
    if workers > 1:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


torch.set_num_threads(_threads_per_test_process())


# A worker's peak memory, its tests' subprocesses included: 2 workers peaked at 8.9 GB
# together (the largest process 5.6 GB) in a full run on 2026-12-07 (docs/development.md).
WORKER_MEMORY = 5 * 2**30


def _available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: unknown to a pytest without it
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per CPU this process may use (affinity mask and cgroup
    quota, which xdist's own count through psutil ignores), as many as the available
    memory holds at WORKER_MEMORY each."""
    memory = _available_memory()
    by_memory = memory // WORKER_MEMORY if memory else usable_cpus()
    return max(1, min(usable_cpus(), by_memory))


def pytest_configure(config: pytest.Config) -> None:
    """`-n N` hands whole files to the workers (`--dist loadfile`) unless `--dist` is
    given: module fixtures are then built once. Set here, not in pyproject's addopts,
    so that pytest without pytest-xdist (the `dev` extra) still runs."""
    given = any(a == "--dist" or a.startswith("--dist=") for a in config.invocation_params.args)
    if getattr(config.option, "dist", "no") == "load" and not given:
        config.option.dist = "loadfile"


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
