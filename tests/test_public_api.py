"""The public API and the CLI surface: names resolve to their defining modules, the
package imports cheaply, and every command is listed and documented."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import posemum_deploy


def test_every_public_name_is_the_object_its_module_defines() -> None:
    api = posemum_deploy._API
    assert posemum_deploy.__all__ == ["__version__", *api]
    assert len(set(posemum_deploy.__all__)) == len(posemum_deploy.__all__)
    for name, module in api.items():
        obj = getattr(posemum_deploy, name)
        assert obj is getattr(importlib.import_module(module), name), name
        if callable(obj) and hasattr(obj, "__module__"):
            assert obj.__module__ == module, f"{name} is defined in {obj.__module__}"


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'train_model'"):
        posemum_deploy.train_model  # noqa: B018
    assert not hasattr(posemum_deploy, "_not_there")


def test_importing_the_package_loads_no_heavy_dependency() -> None:
    """`import posemum_deploy` is lazy: a labeling box pays for torch only when it uses it."""
    code = ("import sys, posemum_deploy; "
            "print(sorted(m for m in ('torch', 'numpy', 'cv2', 'onnxruntime', 'openvino') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_cli_lists_and_documents_every_command() -> None:
    from posemum_deploy.cli.app import _COMMAND_MODULES, app

    runner = CliRunner()
    registered = [c.name for c in app.registered_commands]
    assert registered == [c for commands in _COMMAND_MODULES.values() for c in commands]
    assert {"synth", "train", "presets", "evaluate", "demo", "export", "doctor", "label",
            "merge", "visualize", "rounds", "plot"} <= set(registered)
    main_help = runner.invoke(app, ["--help"])
    assert main_help.exit_code == 0
    for command in app.registered_commands:
        summary = (command.callback.__doc__ or "").strip().split("\n")[0]
        assert summary, f"posemum {command.name} has no help text"
        assert command.name in main_help.output
        result = runner.invoke(app, [command.name, "--help"])
        assert result.exit_code == 0, (command.name, result.output)
        assert f"posemum {command.name}" in result.output or "Usage" in result.output
        assert summary.split()[0] in result.output, (command.name, result.output)
