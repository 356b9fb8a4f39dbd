"""Typer app: wires one short module per command; the library does the work."""
from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(
    name="posemum",
    help="Semi-supervised 2D human pose (Pose-MUM+): train, export, label, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.callback()
def _root() -> None:
    """Semi-supervised 2D human pose (Pose-MUM+): train, export, label, evaluate."""


# module name -> command names it defines (each module exposes a function per command).
_COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "synth": ("synth",),
    "train": ("train", "presets"),
    "evaluate": ("evaluate",),
    "demo": ("demo",),
    "export": ("export",),
    "doctor": ("doctor",),
    "label": ("label", "merge", "visualize"),
    "rounds": ("rounds",),
    "import_model": ("import",),
    "convert": ("convert",),
    "calibrate": ("calibrate",),
    "plot": ("plot",),
}

for _module_name, _commands in _COMMAND_MODULES.items():
    _module = importlib.import_module(f"posemum_deploy.cli.{_module_name}")
    for _command in _commands:
        _name = _command.replace("-", "_")  # a Python keyword (import) gets a trailing _
        app.command(name=_command)(getattr(_module, _name, None) or getattr(_module, _name + "_"))


def main() -> None:
    """Console-script entry point: run the app, turning toolkit errors into one line."""
    from posemum_deploy.cli.errors import run_app

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_app(app)
