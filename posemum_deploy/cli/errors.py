"""One place that turns exceptions into one-line CLI messages and exit codes."""
from __future__ import annotations

import sys

import typer
from rich.console import Console

from posemum_deploy.errors import PosemumError


def run_app(app: typer.Typer) -> None:
    """Run the Typer app; a PosemumError becomes `error: <message>` and exit status 2."""
    err = Console(stderr=True)
    try:
        app(standalone_mode=True)
    except PosemumError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
