"""The training loop, top to bottom: data, model, optimiser, steps, validation, checkpoints.

Supervised training is the `supervised` preset; the semi-supervised presets plug a
different step (teacher, strong view, Pose-MUM) into the same loop, which knows a step
only through `steps.TrainStep` (set_epoch, the step call, its teacher and stream).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.data.datasets import (
    UnreadableImages,
    check_json_images,
)
from posemum_deploy.models.checkpoint import read_checkpoint
from posemum_deploy.models.simple_baseline import build_model
from posemum_deploy.system import resolve_device
from posemum_deploy.training import distributed as ddp
from posemum_deploy.training.batch_streams import labeled_batches, labeled_data, make_labeled_loader
from posemum_deploy.training.config import TrainConfig
from posemum_deploy.training.device_batches import batch_crops
from posemum_deploy.training.optimizer import WarmupLR, load_adam_state, make_adam, make_scheduler
from posemum_deploy.training.run_files import (
    UNREADABLE_NAME,
    MetricsLog,
    record_unreadable,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    without_resume_state,
)
from posemum_deploy.training.steps import StepTeacher, TrainStep, build_step

log = logging.getLogger(__name__)


class TrainCallbacks(Protocol):
    """Progress hooks the CLI implements with rich; the library never prints."""

    def on_start(self, total_steps: int, start_step: int) -> None: ...
    # `logs`: the values of the last logged step (every runtime.log_every steps); losses
    # are read from the GPU only then, so steps in between queue up without waiting.
    def on_step(self, step: int, logs: dict[str, float]) -> None: ...
    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass
class TrainResult:
    out_dir: Path
    best_ap: float
    last_metrics: dict[str, float]
    steps: int
    model: nn.Module | None = None     # the trained student (unwrapped)
    teacher: StepTeacher | None = None  # its teacher, when the preset has one
    unreadable: list[str] = field(default_factory=list)  # images skipped (unreadable_images.txt)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16/AMX); else fp32."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def model_metadata(cfg: TrainConfig) -> ModelMetadata:
    return ModelMetadata(backbone=cfg.model.backbone,
                         deconv_channels=cfg.model.deconv_channels, input_hw=cfg.data.input_hw,
                         heatmap_hw=cfg.data.heatmap_hw, sigma=cfg.data.sigma, format="torch")


def adopt_architecture(cfg: TrainConfig, meta: dict[str, Any]) -> None:
    """A warm start takes the init checkpoint's backbone and head width (e.g. a ResNet-50
    brought in by `posemum import`): the config's defaults would not fit its weights."""
    for key in ("backbone", "deconv_channels"):
        theirs = meta.get(key, getattr(cfg.model, key))
        if theirs != getattr(cfg.model, key):
            log.warning("--init-from %s is a %s=%s model: training that (config said %s)",
                        cfg.ssl.init_from, key, theirs, getattr(cfg.model, key))
            setattr(cfg.model, key, theirs)


def epoch_length(cfg: TrainConfig, loader: DataLoader, step_fn: TrainStep) -> int:
    """Steps per epoch: the setting, else one pass over the labeled or unlabeled set."""
    if cfg.optim.steps_per_epoch:
        return cfg.optim.steps_per_epoch
    if step_fn.stream is not None and cfg.ssl.epoch_unit == "unlabeled":
        return len(step_fn.stream)
    return len(loader)


def validate(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """COCO keypoint AP on the val set with GT boxes (the model is put back in train mode).
    Without data.val_images the json's file names are read as they are, as
    `check_json_images` checked them before training."""
    from posemum_deploy.evaluation.coco_eval import evaluate_results
    from posemum_deploy.inference.predict import predict_coco
    from posemum_deploy.inference.torch_backend import TorchBackend

    assert cfg.data.val_ann is not None  # train validates only with a val json
    was_training = model.training
    precision = "bf16" if autocast_dtype(cfg.runtime.precision, device) == torch.bfloat16 else "fp32"
    backend = TorchBackend(model, model_metadata(cfg), device=str(device), precision=precision,
                           channels_last=cfg.runtime.channels_last)
    results = predict_coco(backend, cfg.data.val_ann, cfg.data.val_images or "",
                           flip=cfg.runtime.val_flip, batch_size=cfg.optim.batch_size)
    model.train(was_training)
    return evaluate_results(cfg.data.val_ann, results)


def train(cfg: TrainConfig, callbacks: TrainCallbacks | None = None,
          resume: bool = False) -> TrainResult:
    """Train a pose network as `cfg` says; writes RUN_DIR/{config.yaml, metrics.jsonl,
    checkpoints/last.pt (all a resume needs), checkpoints/best.pt (weights and metadata)}."""
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    seed_everything(cfg.runtime.seed)
    device = resolve_device(cfg.runtime.device)
    env = ddp.init_distributed(device)  # torchrun: rank 0 alone writes files
    device = ddp.local_device(device, env)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.runtime.cudnn_benchmark
    amp = autocast_dtype(cfg.runtime.precision, device)
    codec = HeatmapCodec(cfg.data.input_hw, cfg.data.heatmap_hw, cfg.data.sigma)
    loader = make_labeled_loader(cfg, codec, env)
    if cfg.data.val_ann and cfg.runtime.val_every:  # a wrong folder fails now, not an epoch in
        check_json_images(cfg.data.val_ann, cfg.data.val_images)

    init = read_checkpoint(cfg.ssl.init_from) if cfg.ssl.init_from and not resume else None
    if init is not None:
        adopt_architecture(cfg, init["model_meta"])
    model = build_model(cfg.model.backbone, labeled_data(loader).num_joints, cfg.model.pretrained,
                        cfg.model.deconv_channels)
    model.to(device)
    if cfg.runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    if init is not None:  # e.g. a supervised warm-up; the teacher copies it
        model.load_state_dict(init["model"])
    student = ddp.wrap_model(model, env, device)  # DDP under torchrun, else `model`
    optimizer = make_adam(model.parameters(), cfg.optim.lr, device)
    scheduler = make_scheduler(optimizer, cfg)
    warmup = WarmupLR(optimizer, scheduler, cfg.optim.warmup_steps)
    step_fn = build_step(cfg, student, optimizer, device, amp)
    steps_per_epoch = epoch_length(cfg, loader, step_fn)
    total = cfg.optim.epochs * steps_per_epoch
    if cfg.optim.max_steps:
        total = min(total, cfg.optim.max_steps)

    start_epoch, step, best_ap, last_metrics = 0, 0, -1.0, {}
    logs: dict[str, float] = {}  # the last logged step's losses, lr and rate
    if resume and (ckpt_dir / "last.pt").is_file():
        # Read onto the CPU: load_state_dict copies onto the device, and the RNG states
        # must stay CPU tensors (torch.set_rng_state refuses a CUDA one).
        state = read_checkpoint(ckpt_dir / "last.pt")
        model.load_state_dict(state["model"])
        load_adam_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if step_fn.teacher is not None and state.get("teacher_state"):
            step_fn.teacher.load_state_dict(state["teacher_state"])
        set_rng_state(state["rng"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        best_ap, last_metrics = state.get("best_ap", -1.0), state.get("metrics", {})
        log.info("resumed from %s at epoch %d", ckpt_dir / "last.pt", start_epoch)
    elif resume:
        log.warning("--resume: no %s yet, starting fresh", ckpt_dir / "last.pt")
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
    metrics = MetricsLog(out / "metrics.jsonl", enabled=env.is_main, from_step=step)
    if callbacks:
        callbacks.on_start(total, step)

    crops = batch_crops(cfg.data.decode, device, cfg.data.input_hw)  # decode: device
    unreadable = [UnreadableImages(labeled_data(loader))]
    if step_fn.stream is not None:
        unreadable.append(step_fn.stream.unreadable)
    skipped: list[str] = []
    model.train()
    for epoch in range(start_epoch, cfg.optim.epochs):
        if step >= total:
            break
        step_fn.set_epoch(epoch)  # e.g. SSL: augmentation RNG and unlabeled stream
        t0, seen = time.perf_counter(), 0
        for batch in labeled_batches(loader, steps_per_epoch, cfg.runtime.seed, epoch):
            if step >= total:
                break
            if crops is not None:
                batch = crops(batch)
            unreadable[0].note(batch)
            warmup.before_step(step)
            losses = step_fn(batch)
            step += 1
            seen += len(batch["image"])
            if step % cfg.runtime.log_every == 0 or step == total:
                logs = {k: float(v) for k, v in losses.items()}  # the only wait for the GPU
                logs.update(lr=optimizer.param_groups[0]["lr"], epoch=epoch,
                            crops_per_s=seen / (time.perf_counter() - t0))
                metrics.write("train", step=step, **logs)
            if callbacks:
                callbacks.on_step(step, logs)
        warmup.restore()  # the per-epoch schedule steps from its own lr, not a warmed one
        scheduler.step()
        last_epoch = epoch + 1 == cfg.optim.epochs or step >= total
        if cfg.data.val_ann and cfg.runtime.val_every and \
                ((epoch + 1) % cfg.runtime.val_every == 0 or last_epoch):
            if env.is_main:
                eval_model = step_fn.teacher.model if step_fn.teacher is not None else model
                last_metrics = validate(eval_model, cfg, device)
                metrics.write("val", step=step, epoch=epoch, **last_metrics)
                if callbacks:
                    callbacks.on_eval(epoch, last_metrics)
            ddp.barrier(env)
        seen_bad = ddp.union_across_ranks(set().union(*(u.paths() for u in unreadable)), env)
        if env.is_main:
            skipped = record_unreadable(out, seen_bad)
            if skipped:
                metrics.write("unreadable", step=step, epoch=epoch, images=len(skipped))
            payload = _checkpoint(cfg, model, step_fn, optimizer, scheduler, epoch, step,
                                  max(best_ap, last_metrics.get("AP", -1.0)), last_metrics)
            save_checkpoint(ckpt_dir / "last.pt", payload)
            # Without validation there is no "best": best.pt follows the latest weights.
            unscored = "AP" not in last_metrics
            if unscored or last_metrics["AP"] > best_ap or not (ckpt_dir / "best.pt").exists():
                best_ap = max(best_ap, last_metrics.get("AP", -1.0))
                save_checkpoint(ckpt_dir / "best.pt", without_resume_state(payload))
    ddp.shutdown(env)
    if skipped:
        log.warning("%d images could not be read and were skipped; listed in %s",
                    len(skipped), out / UNREADABLE_NAME)
    return TrainResult(out, best_ap, last_metrics, step, model, step_fn.teacher, skipped)


def _checkpoint(cfg: TrainConfig, model: nn.Module, step_fn: TrainStep,
                optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int, step: int,
                best_ap: float, metrics: dict[str, float]) -> dict[str, Any]:
    teacher = step_fn.teacher
    return {"model": model.state_dict(),
            "teacher": teacher.model.state_dict() if teacher is not None else None,
            "teacher_state": teacher.state_dict() if teacher is not None else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "step": step, "best_ap": best_ap, "metrics": dict(metrics),
            "config": cfg.to_dict(), "model_meta": model_metadata(cfg).to_dict(),
            "rng": rng_state()}
