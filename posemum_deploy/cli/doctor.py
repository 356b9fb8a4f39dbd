"""`posemum doctor`: a table of what this machine can run, with a fix per missing piece."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def doctor(
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when anything is missing."),
) -> None:
    """Report torch/CUDA, ONNX Runtime providers, TensorRT, OpenVINO, GPU and Ray."""
    from posemum_deploy.doctor import diagnose

    rows = diagnose()
    table = Table(title="posemum doctor")
    for column in ("component", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = "[green]ok[/]" if row.ok else "[red]missing[/]"
        table.add_row(escape(row.name), status, escape(row.detail), escape(row.fix))
    Console().print(table)
    if strict and not all(row.ok for row in rows):
        raise typer.Exit(1)
