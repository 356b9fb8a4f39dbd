"""One place that turns exceptions into one-line CLI messages and exit codes."""
from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from posemum_deploy.errors import PosemumError


def run_app(app: typer.Typer) -> None:
    """Run the Typer app; a PosemumError, or an OSError (named by its file), becomes
    `error: <message>` and exit status 2."""
    err = Console(stderr=True)
    try:
        app(standalone_mode=True)
    except PosemumError as e:
        # escaped: messages hold install hints such as pip install 'posemum[ray]'
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:  # an output folder under a file, a full disk, no permission...
        where = f"{e.filename}: " if e.filename else ""
        reason = e.strerror or str(e)
        if isinstance(e, FileExistsError) and e.filename and Path(e.filename).is_file():
            reason = "is a file where a folder is needed; choose another path"  # mkdir
        err.print(f"[bold red]error:[/] {escape(where + reason)}", highlight=False,
                  soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
