"""Teachers: EMAN = Eq. 2 + Eq. 3 exactly, EMA = parameters only, always eval mode."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from posemum_deploy.errors import ConfigError
from posemum_deploy.models.simple_baseline import build_model
from posemum_deploy.training.teachers import (
    DualTeachers,
    EmanTeacher,
    EmaTeacher,
    SingleTeacher,
    build_teacher,
)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 2, 1))


def _train_student_a_bit(student: nn.Module) -> None:
    """Change parameters and BN statistics of the student (one SGD step, train mode)."""
    student.train()
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 3 + 1
    student(x).square().mean().backward()
    opt.step()


def test_eman_update_is_eq2_and_eq3_on_every_parameter_and_buffer():
    student = _tiny()
    teacher = EmanTeacher(student, decay=0.6)
    with torch.no_grad():  # make the teacher differ from the student everywhere
        for t in teacher.model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.25)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    _train_student_a_bit(student)
    teacher.update(student)
    after = teacher.model.state_dict()
    for key, s in student.state_dict().items():
        if s.is_floating_point():  # weights, biases, running_mean, running_var
            expected = 0.6 * before[key] + 0.4 * s
            assert torch.allclose(after[key], expected, atol=1e-6), key
        else:  # num_batches_tracked is copied
            assert torch.equal(after[key], s), key
    assert after["1.num_batches_tracked"].item() == 1
    assert not torch.equal(after["1.running_mean"], before["1.running_mean"])


def test_ema_update_touches_parameters_only():
    student = _tiny()
    teacher = EmaTeacher(student, decay=0.9)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    _train_student_a_bit(student)
    teacher.update(student)
    params = dict(student.named_parameters())
    after = teacher.model.state_dict()
    for key, old in before.items():
        if key in params:
            assert torch.allclose(after[key], 0.9 * old + 0.1 * params[key].detach(), atol=1e-6)
        else:  # BN running statistics and counters: the teacher's own
            assert torch.equal(after[key], old), key


def test_single_teacher_equals_student_after_update():
    student = _tiny()
    teacher = SingleTeacher(student)
    _train_student_a_bit(student)
    teacher.update(student)
    for key, value in student.state_dict().items():
        assert torch.equal(teacher.model.state_dict()[key], value)
    x = torch.randn(2, 3, 8, 8)
    student.eval()
    assert torch.equal(teacher.predict(x), student(x).detach())


@pytest.mark.parametrize("kind", ["single", "ema", "eman"])
def test_teacher_never_enters_train_mode_and_needs_no_grad(kind):
    student = _tiny()
    teacher = build_teacher(kind, student, decay=0.6)
    parent = nn.ModuleDict({"student": student, "teacher": teacher})
    parent.train()
    teacher.train(True)
    assert student.training
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    out = teacher.predict(torch.randn(2, 3, 8, 8))
    assert not out.requires_grad
    assert not any(m.training for m in teacher.modules())


def test_eman_teacher_uses_running_statistics_ema_uses_batch_statistics():
    student = _tiny()
    eman, ema = EmanTeacher(student, 0.6), EmaTeacher(student, 0.6)
    x = torch.randn(4, 3, 8, 8) * 5 + 3
    reference = student.eval()(x).detach()
    assert torch.equal(eman.predict(x), reference)  # init running stats, eval BN
    assert not torch.allclose(ema.predict(x), reference)  # batch statistics


def test_teacher_state_dict_round_trip():
    student = build_model("resnet18", num_joints=3)
    teacher = EmanTeacher(student, 0.6)
    _ = teacher.predict(torch.randn(1, 3, 64, 48))
    other = EmanTeacher(build_model("resnet18", num_joints=3), 0.6)
    other.load_state_dict(teacher.state_dict())
    for key, value in teacher.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)


def test_update_accepts_ddp_like_wrapper():
    student = _tiny()
    wrapper = nn.Module()
    wrapper.module = student
    teacher = EmanTeacher(wrapper, 0.5)
    _train_student_a_bit(student)
    teacher.update(wrapper)
    assert set(teacher.model.state_dict()) == set(student.state_dict())


def test_dual_teachers_label_each_other_and_restore_mode():
    a, b = _tiny(), _tiny()
    with torch.no_grad():
        b[0].weight.add_(1.0)
    dual = build_teacher("dual", a, partner=b)
    assert isinstance(dual, DualTeachers)
    assert dual.teacher_for(0) is b and dual.teacher_for(1) is a
    a.train(), b.train()
    x = torch.randn(2, 3, 8, 8)
    out = dual.predict(0, x)
    assert b.training and not out.requires_grad
    assert torch.equal(out, b.eval()(x).detach())
    with pytest.raises(ConfigError):
        dual.teacher_for(2)


def test_bad_kind_and_decay_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown teacher 'mean'"):
        build_teacher("mean", _tiny())
    with pytest.raises(ConfigError, match="decay"):
        build_teacher("eman", _tiny(), decay=1.0)
    with pytest.raises(ConfigError, match="partner"):
        build_teacher("dual", _tiny())
