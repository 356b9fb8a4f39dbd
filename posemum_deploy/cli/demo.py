"""`posemum demo`: synthesise people, train on the CPU, evaluate, show the AP."""
from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="where data and the run go"),
    train_images: int = typer.Option(800, "--train-images"),
    val_images: int = typer.Option(100, "--val-images"),
    epochs: int | None = typer.Option(None, "--epochs"),
    seed: int = typer.Option(0, "--seed"),
    rounds: int = typer.Option(0, "--rounds", help="then run N pseudo-label retraining rounds"),
) -> None:
    """Run the main job on embedded synthetic data (about 10 minutes on 2 CPU cores)."""
    from rich.table import Table

    from posemum_deploy.cli.progress import RichTrainCallbacks, console
    from posemum_deploy.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=str(out), train_images=train_images, val_images=val_images, seed=seed)
    if epochs is not None:
        cfg.epochs = epochs
        cfg.milestones = tuple(m for m in (int(epochs * 0.7), int(epochs * 0.9)) if 0 < m < epochs)
    console.print(f"posemum demo: {train_images} train / {val_images} val synthetic images "
                  f"in {out / 'data'}")
    with RichTrainCallbacks() as callbacks:
        result = run_demo(cfg, callbacks)
    table = Table(title="posemum demo (synthetic val set, GT boxes)")
    table.add_column("model")
    table.add_column("AP", justify="right")
    table.add_row("untrained SimpleBaseline-ResNet-18", f"{result.untrained_ap:.4f}")
    table.add_row("trained (checkpoints/best.pt)", f"{result.trained_ap:.4f}")
    console.print(table)
    console.print(f"val AP {result.trained_ap:.4f} (untrained {result.untrained_ap:.4f}) in "
                  f"{result.seconds / 60:.1f} min; run dir: {result.run_dir}")
    if rounds:
        from posemum_deploy.cli.rounds import demo_rounds

        demo_rounds(cfg, result, rounds)
