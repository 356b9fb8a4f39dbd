"""`posemum train` and `posemum presets`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from posemum_deploy.cli.options import parse_hw

if TYPE_CHECKING:  # imported when a command runs: `posemum --help` stays fast
    from posemum_deploy.training.config import TrainConfig
    from posemum_deploy.training.tensorboard import TensorBoardCallbacks
    from posemum_deploy.training.trainer import TrainCallbacks


def train(
    preset: str | None = typer.Option(
        None, "--preset", help="paper variant (`posemum presets`) [default: the --config's "
        "own (a saved config.yaml reruns its run), else supervised]"),
    labeled: Path | None = typer.Option(
        None, "--labeled", help="COCO person-keypoints json, or a YOLO-pose data.yaml (its "
        "train split; then --images is not needed)"),
    images: Path | None = typer.Option(None, "--images", help="image folder of --labeled"),
    out: Path = typer.Option(Path("runs/train"), "--out", help="run directory"),
    val_ann: Path | None = typer.Option(
        None, "--val-ann", help="COCO json, or a YOLO-pose data.yaml (its val split)"),
    val_images: Path | None = typer.Option(None, "--val-images"),
    labeled_count: int | None = typer.Option(None, "--labeled-count",
                                             help="first N labeled persons (1K/5K/10K splits)"),
    unlabeled: Path | None = typer.Option(None, "--unlabeled",
                                          help="COCO json, pseudo-label json or image folder"),
    unlabeled_images: Path | None = typer.Option(None, "--unlabeled-images"),
    unlabeled_boxes: str | None = typer.Option(
        None, "--unlabeled-boxes", help="image folder: 'whole' or a detection results json"),
    epoch_unit: str | None = typer.Option(
        None, "--epoch-unit", help="labeled | unlabeled: what one epoch passes over"),
    init_from: Path | None = typer.Option(
        None, "--init-from", help="start the student from this checkpoint's weights"),
    backbone: str | None = typer.Option(None, "--backbone", help="resnet18 ... resnet152"),
    pretrained: Path | None = typer.Option(None, "--pretrained",
                                           help="local ImageNet state_dict for the ResNet"),
    input_size: str | None = typer.Option(None, "--input-size", help="HxW, e.g. 256x192"),
    deconv_channels: int | None = typer.Option(None, "--deconv-channels",
                                               help="head width (SimpleBaseline: 256)"),
    epochs: int | None = typer.Option(None, "--epochs"),
    milestones: str | None = typer.Option(None, "--milestones", help="e.g. 20,25"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    max_steps: int | None = typer.Option(None, "--max-steps"),
    warmup_steps: int | None = typer.Option(
        None, "--warmup-steps", help="linear lr warmup from 0.001x over N steps (mmpose: 500)",
        show_default="0: off"),
    steps_per_epoch: int | None = typer.Option(None, "--steps-per-epoch"),
    decay: float | None = typer.Option(None, "--decay", help="teacher EMA/EMAN decay"),
    clamp_targets: bool | None = typer.Option(
        None, "--clamp-targets/--no-clamp-targets", show_default="the preset's (pose-mum-plus: on)",
        help="clamp the teacher's heatmaps to [0, 1] before the unlabeled loss"),
    workers: int | None = typer.Option(None, "--workers", help="data loader processes"),
    decode: str | None = typer.Option(
        None, "--decode", help="host: loader workers decode and crop | device: workers read "
        "bytes, the GPU decodes (nvjpeg) and crops", show_default="host"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda"),
    precision: str | None = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16"),
    seed: int | None = typer.Option(None, "--seed"),
    val_every: int | None = typer.Option(None, "--val-every", help="epochs between val"),
    config: Path | None = typer.Option(None, "--config", help="YAML config to start from"),
    resume: bool = typer.Option(False, "--resume", help="continue RUN_DIR's last checkpoint"),
    tensorboard: bool = typer.Option(
        False, "--tensorboard", help="also write TensorBoard scalars to RUN_DIR/tensorboard "
        "(needs the tensorboard package: pip install 'posemum[tensorboard]')"),
) -> None:
    """Train a SimpleBaseline student (supervised or semi-supervised preset)."""
    from posemum_deploy.cli.progress import RichTrainCallbacks, console
    from posemum_deploy.training.config import TrainConfig
    from posemum_deploy.training.presets import apply_preset, load_preset_config, paper_schedule
    from posemum_deploy.training.trainer import train as run_training

    saved = out / "config.yaml"
    if resume and saved.is_file():
        cfg = TrainConfig.load(saved)
    else:
        cfg = load_preset_config(config) if config else TrainConfig()
        if preset or not config:  # an explicit --preset applies over the config's values
            apply_preset(cfg, preset or "supervised")
    overrides = {
        ("data", "labeled"): labeled, ("data", "images"): images,
        ("data", "val_ann"): val_ann, ("data", "val_images"): val_images,
        ("data", "labeled_count"): labeled_count, ("data", "workers"): workers,
        ("data", "decode"): decode,
        ("data", "input_hw"): parse_hw(input_size) if input_size else None,
        ("ssl", "unlabeled"): unlabeled, ("ssl", "unlabeled_images"): unlabeled_images,
        ("ssl", "decay"): decay, ("ssl", "clamp_targets"): clamp_targets,
        ("ssl", "unlabeled_boxes"): unlabeled_boxes,
        ("ssl", "epoch_unit"): epoch_unit, ("ssl", "init_from"): init_from,
        ("model", "backbone"): backbone, ("model", "pretrained"): pretrained,
        ("model", "deconv_channels"): deconv_channels,
        ("optim", "epochs"): epochs, ("optim", "batch_size"): batch_size, ("optim", "lr"): lr,
        ("optim", "max_steps"): max_steps, ("optim", "steps_per_epoch"): steps_per_epoch,
        ("optim", "warmup_steps"): warmup_steps,
        ("optim", "milestones"): tuple(int(m) for m in milestones.split(",")) if milestones else None,
        ("runtime", "device"): device, ("runtime", "precision"): precision,
        ("runtime", "seed"): seed, ("runtime", "val_every"): val_every,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(cfg, section), key, str(value) if isinstance(value, Path) else value)
    if labeled_count and epochs is None and milestones is None and not resume:
        cfg.optim.epochs, cfg.optim.milestones = paper_schedule(labeled_count)
    cfg.out = str(out)
    _from_yolo(cfg, out)
    _require(cfg.data.labeled, "--labeled")
    _require(cfg.data.images, "--images")
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: rank 0 alone shows progress
        run_training(cfg, None, resume=resume)
        return
    board = _tensorboard(out) if tensorboard else None  # refused before any training
    try:
        with RichTrainCallbacks() as callbacks:
            result = run_training(cfg, _with_board(callbacks, board), resume=resume)
    finally:
        if board is not None:
            board.close()
    console.print(f"done: {result.steps} steps, best val AP {result.best_ap:.4f}; "
                  f"checkpoints in {result.out_dir / 'checkpoints'}")
    if result.unreadable:
        from posemum_deploy.training.run_files import UNREADABLE_NAME

        console.print(f"[yellow]skipped {len(result.unreadable)} unreadable images[/] (listed "
                      f"in {result.out_dir / UNREADABLE_NAME})", highlight=False)


def _tensorboard(out: Path) -> TensorBoardCallbacks:
    from posemum_deploy.training.tensorboard import LOG_SUBDIR, TensorBoardCallbacks

    return TensorBoardCallbacks(out / LOG_SUBDIR)


def _with_board(callbacks: TrainCallbacks, board: TensorBoardCallbacks | None) -> TrainCallbacks:
    from posemum_deploy.training.tensorboard import FanOut

    return callbacks if board is None else FanOut(callbacks, board)


def _from_yolo(cfg: TrainConfig, out: Path) -> None:
    """--labeled / --val-ann given as a YOLO-pose data.yaml: its train / val split becomes
    a COCO json in the run folder, with --images / --val-images its image folder."""
    from posemum_deploy.data.yolo import yolo_split_json

    yaml_suffixes = (".yaml", ".yml")
    if cfg.data.labeled and Path(cfg.data.labeled).suffix.lower() in yaml_suffixes:
        cfg.data.labeled, cfg.data.images = yolo_split_json(cfg.data.labeled, "train", out)
    if cfg.data.val_ann and Path(cfg.data.val_ann).suffix.lower() in yaml_suffixes:
        cfg.data.val_ann, cfg.data.val_images = yolo_split_json(cfg.data.val_ann, "val", out)


def _require(value: object, flag: str) -> None:
    from posemum_deploy.errors import ConfigError

    if not value:
        raise ConfigError(f"{flag} is required (or give it in --config)")


def presets() -> None:
    """List the named paper variants, what each turns on and the paper's AP."""
    from posemum_deploy.training.presets import PRESETS

    table = Table(title="posemum presets (COCO AP from the Pose-MUM paper)",
                  caption="AP: ResNet-18, 1K labels unless noted. Schedules: Adam 1e-3, x0.1 at "
                          "20/25 of 30 epochs (1K) or 70/90 of 100 (5K/10K; applied when "
                          "--labeled-count > 1000 and no --epochs/--milestones).")
    table.add_column("preset", style="bold")
    table.add_column("turns on")
    table.add_column("paper AP")
    for p in PRESETS.values():
        table.add_row(p.name, p.summary, p.paper_ap or "-")
    Console().print(table)
