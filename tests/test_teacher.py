"""The EMA teacher: its update by hand, how strategies ask for it, and how the trainer runs it."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_trainer
from mtssl.training.teacher import EMATeacher, requested_decay


def test_ema_update_by_hand():
    student = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        student.weight.fill_(1.0)
    teacher = EMATeacher(student, decay=0.9)
    assert not any(p.requires_grad for p in teacher.module.parameters())
    teacher.update(student)  # a = min(0.9, 1 - 1/1) = 0: a copy
    assert teacher.module.weight.item() == pytest.approx(1.0)
    with torch.no_grad():
        student.weight.fill_(3.0)
    teacher.update(student)  # a = min(0.9, 1/2): 0.5*1 + 0.5*3
    assert teacher.module.weight.item() == pytest.approx(2.0)
    with torch.no_grad():
        student.weight.fill_(4.0)
    teacher.update(student)  # a = min(0.9, 2/3)
    assert teacher.module.weight.item() == pytest.approx(2.0 * 2 / 3 + 4.0 / 3)
    for _ in range(20):
        teacher.update(student)
    assert teacher.rate() == 0.9  # the warm-up ends at the requested decay


def test_teacher_state_round_trips():
    student = torch.nn.Linear(2, 1)
    teacher = EMATeacher(student, 0.99)
    teacher.update(student)
    other = EMATeacher(torch.nn.Linear(2, 1), 0.99)
    other.load_state_dict(teacher.state_dict())
    assert int(other.updates) == 1 and torch.equal(other.module.weight, teacher.module.weight)


def test_strategies_must_agree_on_one_decay(host):
    a = host.create("strategy", "meanteacher", ema=0.99)
    b = host.create("strategy", "meanteacher", ema=0.9)
    assert requested_decay([a, host.create("strategy", "fixmatch")]) == 0.99
    assert requested_decay([host.create("strategy", "fixmatch")]) is None
    with pytest.raises(ValueError, match="different decays"):
        requested_decay([a, b])


def test_teacher_views_run_without_autograd_and_the_teacher_follows_the_student(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["seg:meanteacher:rampup=0"])
    assert trainer.teacher is not None and trainer.teacher.decay == 0.99
    views = trainer.gather_views()
    assert [(v.key, v.grad, v.model) for v in views] == [
        ("labeled", True, "student"), ("meanteacher/student", True, "student"),
        ("meanteacher/teacher", False, "teacher")]
    assert torch.equal(views[1].images, views[2].images)  # aligned: the teacher sees the student's pixels
    seen = {}
    strategy = trainer.parts.strategies["seg"][0]
    original = strategy.loss
    strategy.loss = lambda inputs: (seen.update(inputs.views), original(inputs))[1]
    trainer.compute_loss(views)
    assert seen["student"].requires_grad and not seen["teacher"].requires_grad
    before = [p.clone() for p in trainer.teacher.module.parameters()]
    trainer.train_step()
    student = list(trainer.model.parameters())
    # first update copies the student (a = 0)
    assert all(torch.equal(t, s) for t, s in zip(trainer.teacher.module.parameters(), student))
    assert not all(torch.equal(b, s) for b, s in zip(before, student))
