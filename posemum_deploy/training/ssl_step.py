"""The semi-supervised step: weak view → teacher heatmaps → strong view → student loss.

Per step (Xie et al. 2021 setup, Eq. 1 of the paper):
1. a labeled batch (affine-augmented crops + heatmap targets) and an unlabeled batch
   (the weak view: the same affine recipe, no targets);
2. the teacher labels the weak view in eval mode under no_grad;
3. the strong view = weak view + second affine θ (image *and* pseudo-labels warped by θ),
   Joint Cutout at the teacher's joints, RandAugment, MUM image mixing — per preset;
4. one student forward over [labeled; strong] (one forward per step keeps DDP simple;
   mixing permutes samples, so BN batch statistics are what they would be unmixed), with
   Pose-MUM's feature mixing/unmixing in the `after_stage` hook;
5. L = L_sup + λu·L_unsup, Adam step, teacher update (EMAN/EMA/Single).
"""
from __future__ import annotations

import logging
from typing import Any, cast

import torch
from torch import Tensor, nn

from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.data.strong import joint_cutout, rand_augment
from posemum_deploy.data.transforms import normalize_batch
from posemum_deploy.models.cuda_graph import GraphedForward
from posemum_deploy.models.simple_baseline import SimpleBaseline, build_model
from posemum_deploy.training import distributed as ddp
from posemum_deploy.training.batch_streams import UnlabeledStream, make_unlabeled_stream
from posemum_deploy.training.config import TrainConfig
from posemum_deploy.training.losses import joints_mse_loss
from posemum_deploy.training.mum import MixHook, PoseMumMixer, check_group
from posemum_deploy.training.optimizer import load_adam_state, make_adam
from posemum_deploy.training.steps import STEP_EPOCH_STRIDE, STEP_SEED_STRIDE
from posemum_deploy.training.strong_view import StrongAffine, warp
from posemum_deploy.training.teachers import PAPER_DECAY, Teacher, build_teacher, unwrap

log = logging.getLogger(__name__)

# Seeds derived from `runtime.seed` (the unlabeled stream's: batch_streams.py):
DUAL_PARTNER_SEED_OFFSET = 1  # the initial weights of a dual pair's second network
# The strong-view generator of epoch e on rank r is seeded with
# (seed * STEP_SEED_STRIDE + e) * STEP_EPOCH_STRIDE + r (strides in steps.py).


class DualPartner(nn.Module):
    """Xie's second network of a dual pair, with its own Adam (a 'teacher' for the loop).

    `model` is the plain partner network (validated and saved as the run's "teacher"),
    `trainable` the same network as it is trained (DDP-wrapped under torchrun); its
    optimiser follows the main one's learning rate. state_dict holds network and
    optimiser, so checkpoints resume the pair exactly.
    """

    trainable: nn.Module  # set past nn.Module's registry, see __init__

    def __init__(self, model: nn.Module, trainable: nn.Module, optimizer: torch.optim.Adam) -> None:
        super().__init__()
        self.model, self.optimizer = model, optimizer
        object.__setattr__(self, "trainable", trainable)  # not a second registered copy

    # The pair's own checkpoint entry (student and optimiser), not nn.Module's keyword API.
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:  # type: ignore[override]
        self.model.load_state_dict(state["model"], strict=strict)
        load_adam_state(self.optimizer, state["optimizer"])


class SemiSupervisedStep:
    """One step of Eq. 1 for a preset's teacher and strong augmentations (see module doc)."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, amp: torch.dtype | None, teacher: Teacher | DualPartner,
                 stream: UnlabeledStream, env: ddp.DistEnv) -> None:
        self.cfg, self.ssl = cfg, cfg.ssl
        self.model, self.optimizer, self.device, self.amp = model, optimizer, device, amp
        self.teacher, self.stream, self.env = teacher, stream, env
        self.dual = isinstance(teacher, DualPartner)
        self.affine = StrongAffine() if cfg.ssl.strong_affine else None
        self.mixer = _mixer(cfg) if (cfg.ssl.mum or cfg.ssl.feature_mum) else None
        self.generator = torch.Generator()
        self.set_epoch(0)
        # One graph launch instead of ~140 kernel launches: on a fast GPU the step is
        # bound by Python launching kernels. Eval-mode teachers only (Single, EMAN); their
        # in-place updates are read by the next replay.
        self._teacher_graph: GraphedForward | None = None
        if (cfg.runtime.teacher_cuda_graph and isinstance(teacher, Teacher)
                and teacher.eval_mode_predict and device.type == "cuda"):
            self._teacher_graph = GraphedForward(teacher.predict)

    def set_epoch(self, epoch: int) -> None:
        """Re-seed the augmentation RNG and the unlabeled stream for this epoch and rank."""
        seed = (self.cfg.runtime.seed * STEP_SEED_STRIDE + epoch) * STEP_EPOCH_STRIDE
        self.generator.manual_seed(seed + self.env.rank)
        self.stream.set_epoch(epoch)

    def _images(self, batch: dict[str, Any]) -> Tensor:
        return normalize_batch(batch["image"].to(self.device, non_blocking=True))

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp or torch.float32,
                              enabled=self.amp is not None)

    def strong_view(self, weak: Tensor, pseudo: Tensor) -> tuple[Tensor, Tensor]:
        """Weak images [B, 3, H, W] and teacher heatmaps [B, K, h, w] → strong pair."""
        ssl, g = self.ssl, self.generator
        strong = weak
        if self.affine is not None:
            theta = self.affine.sample(weak.shape[0], (weak.shape[-2], weak.shape[-1]), g,
                                       weak.device)
            strong, pseudo = warp(strong, theta), warp(pseudo, theta)
        if ssl.joint_cutout:
            strong = joint_cutout(strong, pseudo, g)
        if ssl.rand_augment:
            strong = rand_augment(strong, g, n=ssl.rand_augment_ops,
                                  magnitude=ssl.rand_augment_magnitude)
        return strong, pseudo

    def _student_loss(self, model: nn.Module, labeled: Tensor, strong: Tensor, pseudo: Tensor,
                      target: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(L_sup, L_unsup) from one forward over [labeled; strong (mixed)]."""
        hook: MixHook | None = None
        if self.mixer is not None:
            strong, hook = self.mixer.start(strong, self.generator, skip=labeled.shape[0])
        x = torch.cat([labeled, strong])
        if self.cfg.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            pred = model(x, after_stage=hook)
        n = labeled.shape[0]
        return joints_mse_loss(pred[:n], target, weight), joints_mse_loss(pred[n:], pseudo)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """One step; the losses come back as device tensors (reading them would wait for
        the GPU every step: the trainer reads them only on the steps it logs)."""
        labeled = self._images(batch)
        target = batch["target"].to(self.device, non_blocking=True)
        weight = batch["target_weight"].to(self.device, non_blocking=True)
        weak = self._images(self.stream.next())
        students: list[tuple[nn.Module, torch.optim.Optimizer]] = [(self.model, self.optimizer)]
        if isinstance(self.teacher, DualPartner):
            students.append((self.teacher.trainable, self.teacher.optimizer))
        logs: dict[str, Tensor] = {}
        for i, (model, opt) in enumerate(students):
            with self._autocast():
                teacher_out = self._pseudo_labels(i, weak)
            pseudo = teacher_out.float()
            if self.ssl.clamp_targets:  # outputs past a target's range feed back otherwise
                pseudo = pseudo.clamp(0.0, 1.0)
            strong, pseudo = self.strong_view(weak, pseudo)
            sup, unsup = self._student_loss(model, labeled, strong, pseudo, target, weight)
            loss = sup + self.ssl.unsup_weight * unsup
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if i:
                opt.param_groups[0]["lr"] = self.optimizer.param_groups[0]["lr"]
            opt.step()
            suffix = f"_{i}" if i else ""
            logs.update({f"loss{suffix}": loss.detach(), f"loss_sup{suffix}": sup.detach(),
                         f"loss_unsup{suffix}": unsup.detach()})
        if not isinstance(self.teacher, DualPartner):
            ddp.sync_buffers(unwrap(self.model), self.env)
            self.teacher.update(unwrap(self.model))
            ddp.sync_buffers(self.teacher, self.env)
        return logs

    def _pseudo_labels(self, student_index: int, weak: Tensor) -> Tensor:
        if not isinstance(self.teacher, DualPartner):
            if self._teacher_graph is not None:
                # a copy (the graph's buffer is reused), made as the float32 the caller takes
                return self._teacher_graph(weak).to(torch.float32, copy=True)
            return self.teacher.predict(weak)
        partner = unwrap(self.teacher.model if student_index == 0 else self.model)
        was_training = partner.training
        partner.eval()
        try:
            with torch.no_grad():
                return partner(weak)
        finally:
            partner.train(was_training)


def _mixer(cfg: TrainConfig) -> PoseMumMixer:
    ssl = cfg.ssl
    mixer = PoseMumMixer(group_size=ssl.group_size, tiles=ssl.tiles,
                         mix_stages=tuple(ssl.mix_stages), p=ssl.mix_prob, unmix_at=ssl.unmix_at,
                         image_level=ssl.mum, feature_level=ssl.feature_mum)
    mixer.check_input_size(cfg.data.input_hw)
    check_group(ssl.unlabeled_batch_size, ssl.group_size)
    return mixer


def resolve_decay(cfg: TrainConfig) -> float:
    """The configured decay, or the paper's best EMAN decay for the backbone (Table 4)."""
    if cfg.ssl.decay is not None:
        return cfg.ssl.decay
    return PAPER_DECAY.get(cfg.model.backbone, 0.6)


def build_ssl_step(cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                   device: torch.device, amp: torch.dtype | None) -> SemiSupervisedStep:
    """Teacher, unlabeled stream and augmentations for `cfg`'s preset."""
    env = ddp.current()
    codec = HeatmapCodec(cfg.data.input_hw, cfg.data.heatmap_hw, cfg.data.sigma)
    if cfg.ssl.mum or cfg.ssl.feature_mum:
        _mixer(cfg)  # fail on a bad tile grid before loading any data
    stream = make_unlabeled_stream(cfg, codec, env, device)
    if cfg.ssl.teacher == "dual":
        partner = _dual_partner(cfg, model, device, env)
        return SemiSupervisedStep(cfg, model, optimizer, device, amp, partner, stream, env)
    teacher = build_teacher(cfg.ssl.teacher, unwrap(model), resolve_decay(cfg))
    assert isinstance(teacher, Teacher)  # only "dual" gives DualTeachers, handled above
    teacher.to(device)
    return SemiSupervisedStep(cfg, model, optimizer, device, amp, teacher, stream, env)


def _dual_partner(cfg: TrainConfig, model: nn.Module, device: torch.device,
                  env: ddp.DistEnv) -> DualPartner:
    """A second, differently initialised student with its own Adam (Xie's dual setup)."""
    student = cast(SimpleBaseline, unwrap(model))  # the trainer's build_model network
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.runtime.seed + DUAL_PARTNER_SEED_OFFSET)
        net = build_model(cfg.model.backbone, student.num_joints, cfg.model.pretrained,
                          cfg.model.deconv_channels)
    net.to(device)
    if cfg.runtime.channels_last:
        net.to(memory_format=torch.channels_last)
    wrapped = ddp.wrap_model(net, env, device)
    return DualPartner(net, wrapped, make_adam(net.parameters(), cfg.optim.lr, device))
