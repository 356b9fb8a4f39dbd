"""The repository passes ruff with the rules in pyproject.toml ([tool.ruff]).

Run as a test so that CI holds the line the code is written to: pyflakes' errors (unused
or undefined names), bugbear's traps (loop variables captured by closures, `zip` without
`strict=`, mutable defaults), sorted imports and the Python 3.10 syntax the package
requires. Fix findings with `.venv/bin/ruff check --fix .` where ruff offers a fix.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_repository_passes_ruff() -> None:
    ruff_main = pytest.importorskip("ruff.__main__", reason="ruff comes with the dev extra")
    proc = subprocess.run([ruff_main.find_ruff_bin(), "check", "--no-cache", "--output-format",
                           "concise", str(ROOT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
