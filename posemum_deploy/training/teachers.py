"""Teachers that produce pseudo-label heatmaps: Single, EMA, EMAN and Dual.

Each teacher is a small module holding its own copy of the network, with
`update(student)` after every optimiser step and `predict(images)` under no_grad.
EMA and EMAN differ only in *what* they average (Eq. 2 vs Eq. 2 + Eq. 3):

- Single: the teacher is the student (a copy refreshed at every update, weights and
  BN statistics), so pseudo-labels come from the current student in eval mode.
- EMA: θ_T ← τ·θ_T + (1−τ)·θ_S over parameters only. As in Mean Teacher and the
  paper's Sec. 3.3, BN normalises with the statistics of the teacher's own batch, and
  the running buffers are the teacher's own (they never come from the student).
- EMAN (Cai et al. 2021): the same average over *every* floating state_dict entry, so
  BN running mean/var follow Eq. 3 (the variance is averaged, as in EMAN's code);
  integer buffers (num_batches_tracked) are copied. Normalisation uses those running
  statistics, so pseudo-labels have no cross-sample dependency.
- Dual (Xie et al. 2021): two students, each pseudo-labelling the other's batch.

The teacher module can never enter train mode: `train()` is overridden, so calling
`.train()` on any parent leaves it in eval. Its parameters never require grad.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from posemum_deploy.errors import ConfigError

TEACHER_KINDS: tuple[str, ...] = ("single", "ema", "eman", "dual")
# Paper Table 4: best EMAN decay per backbone.
PAPER_DECAY: dict[str, float] = {"resnet18": 0.6, "resnet101": 0.9}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel/DataParallel wrapper."""
    return getattr(model, "module", model)


class Teacher(nn.Module):
    """A frozen, always-eval copy of the student; subclasses define `update`."""

    # predict() runs the network in eval mode and changes no state, so its forward can be
    # replayed from a CUDA graph (models/cuda_graph.py); EmaTeacher's uses batch statistics.
    eval_mode_predict = True

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(unwrap(student))
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> Teacher:  # noqa: ARG002 - mode is ignored on purpose
        """Always eval: a parent's `.train()` must not switch BN/dropout of the teacher."""
        return super().train(False)

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Pseudo-label heatmaps [B, K, H/4, W/4] for the weak view images [B, 3, H, W]."""
        return self.model(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.predict(images)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        raise NotImplementedError

    def _pairs(self, student: nn.Module, params_only: bool) -> Iterator[tuple[Tensor, Tensor]]:
        """(teacher tensor, student tensor) for parameters, or every state_dict entry."""
        if params_only:
            mine = dict(self.model.named_parameters())
            theirs = dict(unwrap(student).named_parameters())
        else:
            mine = self.model.state_dict(keep_vars=True)
            theirs = unwrap(student).state_dict(keep_vars=True)
        if mine.keys() != theirs.keys():
            missing = sorted(set(mine) ^ set(theirs))[:3]
            raise ConfigError(f"teacher and student architectures differ (e.g. {missing})")
        for key, t in mine.items():
            yield t.data if isinstance(t, nn.Parameter) else t, theirs[key].detach()


class SingleTeacher(Teacher):
    """Teacher = student (weights and BN statistics), evaluated in eval mode."""

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        pairs = list(self._pairs(student, params_only=False))
        torch._foreach_copy_([t for t, _ in pairs], [s for _, s in pairs])


class EmaTeacher(Teacher):
    """Eq. 2 over parameters only; BN uses the teacher's own batch statistics."""

    eval_mode_predict = False

    def __init__(self, student: nn.Module, decay: float) -> None:
        super().__init__(student)
        self.decay = _check_decay(decay)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        pairs = list(self._pairs(student, params_only=True))
        torch._foreach_lerp_([t for t, _ in pairs], [s for _, s in pairs], 1.0 - self.decay)

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Forward with BN in batch-statistics mode (classic EMA teacher), then back to eval."""
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        try:
            for m in bns:
                m.training = True
            return self.model(images)
        finally:
            for m in bns:
                m.training = False


class EmanTeacher(Teacher):
    """Eq. 2 + Eq. 3: every floating state entry averaged; integer buffers copied."""

    def __init__(self, student: nn.Module, decay: float) -> None:
        super().__init__(student)
        self.decay = _check_decay(decay)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        pairs = list(self._pairs(student, params_only=False))
        floats = [(t, s) for t, s in pairs if t.is_floating_point()]
        torch._foreach_lerp_([t for t, _ in floats], [s for _, s in floats], 1.0 - self.decay)
        counters = [(t, s) for t, s in pairs if not t.is_floating_point()]
        if counters:  # num_batches_tracked: one multi-tensor copy, not one launch per BN
            torch._foreach_copy_([t for t, _ in counters], [s for _, s in counters])


class DualTeachers:
    """Xie et al.'s dual networks: model i is trained on pseudo-labels from model 1−i.

    Both models are students (each has its own optimiser step); `teacher_for(i)` names the
    network that labels student i's unlabeled batch, and `predict(i, images)` runs it in eval
    mode under no_grad, restoring its mode afterwards. `update` is a no-op: the teachers are
    the other student's live weights. Costs twice the training compute of one student.
    """

    def __init__(self, model_a: nn.Module, model_b: nn.Module) -> None:
        self.models = (model_a, model_b)

    def teacher_for(self, student_index: int) -> nn.Module:
        if student_index not in (0, 1):
            raise ConfigError(f"dual training has students 0 and 1, got {student_index}")
        return self.models[1 - student_index]

    @torch.no_grad()
    def predict(self, student_index: int, images: Tensor) -> Tensor:
        """Heatmaps [B, K, h, w] from the partner of student `student_index`."""
        teacher = self.teacher_for(student_index)
        was_training = teacher.training
        teacher.eval()
        try:
            return teacher(images)
        finally:
            teacher.train(was_training)

    def update(self, student: nn.Module) -> None:  # noqa: ARG002 - nothing to average
        return None


def _check_decay(decay: float) -> float:
    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"teacher decay must be in [0, 1), got {decay}; the paper uses 0.6 "
                          f"(ResNet-18) or 0.9 (ResNet-101)")
    return float(decay)


def build_teacher(kind: str, student: nn.Module, decay: float = 0.6,
                  partner: nn.Module | None = None) -> Teacher | DualTeachers:
    """Teacher by name: single | ema | eman | dual (dual needs the second student)."""
    if kind == "single":
        return SingleTeacher(student)
    if kind == "ema":
        return EmaTeacher(student, decay)
    if kind == "eman":
        return EmanTeacher(student, decay)
    if kind == "dual":
        if partner is None:
            raise ConfigError("a dual teacher needs the second network (partner=...)")
        return DualTeachers(unwrap(student), unwrap(partner))
    raise ConfigError(f"unknown teacher {kind!r}; choose one of {', '.join(TEACHER_KINDS)}")
