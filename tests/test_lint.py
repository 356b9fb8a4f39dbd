"""The repository passes ruff and the package passes mypy, with pyproject.toml's settings.

Run as tests so that CI holds the line the code is written to: pyflakes' errors (unused
or undefined names), bugbear's traps (loop variables captured by closures, `zip` without
`strict=`, mutable defaults), sorted imports and the Python 3.10 syntax the package
requires; and type hints that agree with how the code is called. Fix ruff's findings with
`.venv/bin/ruff check --fix .` where it offers a fix; `.venv/bin/mypy` lists mypy's.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_repository_passes_ruff() -> None:
    ruff_main = pytest.importorskip("ruff.__main__", reason="ruff comes with the dev extra")
    proc = subprocess.run([ruff_main.find_ruff_bin(), "check", "--no-cache", "--output-format",
                           "concise", str(ROOT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_package_passes_mypy() -> None:
    """The annotations are checked, not only written: mypy with [tool.mypy]'s settings."""
    pytest.importorskip("mypy", reason="mypy comes with the dev extra")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
