"""Each loss term's share of the shared encoder's gradient norm (``--log-grad-shares N``)."""
from __future__ import annotations

import pytest
import torch

from conftest import read_metrics, tiny_trainer
from mtssl.training.grad_shares import gradient_shares


def test_gradient_shares_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    terms = {"a": w @ torch.tensor([3.0, 4.0]), "b": 2 * w[0], "c": torch.tensor(1.0)}
    logs = gradient_shares(terms, [w])
    assert logs["grad_norm/a"] == pytest.approx(5.0) and logs["grad_norm/b"] == pytest.approx(2.0)
    assert logs["grad_share/a"] == pytest.approx(5 / 7) and logs["grad_share/b"] == pytest.approx(2 / 7)
    assert logs["grad_share/c"] == 0.0  # a constant term trains nothing
    assert w.grad is None  # parameter gradients untouched


def test_trainer_logs_shares_every_n_steps_without_changing_training(host, tmp_path):
    plain = tiny_trainer(host, tmp_path / "plain", ["cls:fixmatch", "seg:kl"], steps=2)
    plain.fit()  # (one trainer at a time: each seeds the global generators when it is built)
    measured = tiny_trainer(host, tmp_path / "measured", ["cls:fixmatch", "seg:kl"], steps=2, log_grad_shares=2)
    measured.fit()
    lines = read_metrics(measured.run.path)
    assert "grad_share/seg/kl" not in lines[0]
    shares = {k: v for k, v in lines[1].items() if k.startswith("grad_share/")}
    assert set(shares) == {"grad_share/cls/sup", "grad_share/cls/fixmatch", "grad_share/seg/sup", "grad_share/seg/kl"}
    assert sum(shares.values()) == pytest.approx(1.0)
    after = [{k: v for k, v in line.items() if not k.startswith(("grad_", "step_time"))} for line in lines]
    before = [{k: v for k, v in line.items() if k != "step_time"} for line in read_metrics(plain.run.path)]
    assert after == before  # measuring does not change the run
