"""Imports point down the layer order: a lower layer never imports a higher one.

The order is declared here, once (docs/development.md points to it). A module may import
its own package, anything of a lower rank, and nothing else: not a higher rank, and not
a sibling package of the same rank (label/ and training/ stay independent, so a labeling
box needs no training code). Every import counts, lazy ones inside functions and
TYPE_CHECKING ones included, because each is a dependency someone has to install.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

PACKAGE = "posemum_deploy"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Lowest first. Each entry is one rank; names are top-level modules or subpackages.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("system",),
    ("data",),
    ("artifacts",),
    ("models",),
    ("evaluation",),
    ("inference",),
    ("export",),
    ("label", "training"),
    ("rounds",),
    ("demo", "doctor", "plots"),
    ("cli", "__init__", "__main__"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def unit_of(module: str) -> str:
    """'posemum_deploy.label.runner' → 'label'; the package itself → '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1] if len(parts) > 2 else [parts[0], "__init__"]
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import of the package anywhere in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):  # a bare `import posemum_deploy` reads __version__
            found += [(node.lineno, a.name) for a in node.names if a.name != PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == PACKAGE:  # `from posemum_deploy import x`: x is the unit
                found += [(node.lineno, f"{PACKAGE}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, name))
    return [(line, name) for line, name in found if name.split(".")[0] == PACKAGE]


def layer_violations(root: Path = ROOT) -> list[str]:
    """One line per upward or sideways import: 'file:line: a imports b (why)'."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        unit = unit_of(module)
        if unit not in RANK:
            problems.append(f"{path}:1: {unit!r} is not in the layer order; add it to "
                            "LAYERS in tests/test_layers.py")
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, target in imported_modules(tree, module):
            other = unit_of(target)
            if other == unit or other not in RANK:
                continue
            if RANK[other] > RANK[unit]:
                problems.append(f"{path}:{line}: {unit} imports {target}, a higher layer")
            elif RANK[other] == RANK[unit]:
                problems.append(f"{path}:{line}: {unit} imports {target}, a sibling of the same "
                                "layer")
    return problems


def test_imports_point_down() -> None:
    problems = layer_violations()
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_every_unit_is_in_the_order() -> None:
    units = {unit_of(module_name(p, ROOT)) for p in ROOT.rglob("*.py")}
    assert units <= set(RANK), f"not in LAYERS: {sorted(units - set(RANK))}"


@pytest.mark.parametrize("source, expected", [
    ("from posemum_deploy.label.runner import label_folder\n", "data imports posemum_deploy.label"),
    ("def f():\n    import posemum_deploy.training.trainer\n", "a higher layer"),
    ("from posemum_deploy import cli\n", "posemum_deploy.cli, a higher layer"),
    ("from ..export import formats\n", "posemum_deploy.export, a higher layer"),
])
def test_an_upward_import_fails(tmp_path: Path, source: str, expected: str) -> None:
    """The check catches a planted upward import (lazy and relative ones too), naming file and line."""
    pkg = tmp_path / PACKAGE
    (pkg / "data").mkdir(parents=True)
    (pkg / "label").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "label" / "runner.py").write_text("from posemum_deploy.data import coco\n")
    bad = pkg / "data" / "bad.py"
    bad.write_text(textwrap.dedent(source))
    problems = layer_violations(pkg)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{bad}:") and expected in problems[0]


def test_sibling_layers_stay_apart(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "training").mkdir(parents=True)
    (pkg / "training" / "step.py").write_text("x = 1\n\nfrom posemum_deploy.label import runner\n")
    problems = layer_violations(pkg)
    assert problems == [f"{pkg / 'training' / 'step.py'}:3: training imports "
                        "posemum_deploy.label, a sibling of the same layer"]
