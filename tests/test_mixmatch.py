"""MixMatch: its pure math against hand-computed values, the strategy's wiring, and a short training run."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtssl.api import StrategyInputs, guess_labels, mixup, mixup_lambda, sharpen, soft_cross_entropy
from mtssl.run.config import RunConfig, TaskData
from mtssl.plugins import PluginHost
from mtssl.run.rundir import RunDir
from mtssl.training.trainer import Trainer
from mtssl_plugins.functional import probability_l2
from mtssl_plugins.strategies.mixmatch import MixMatch


def test_sharpen_hand_computed():
    # 0.6^2 = 0.36, 0.4^2 = 0.16, sum 0.52
    out = sharpen(torch.tensor([[0.6, 0.4]]), 0.5)
    assert out.tolist()[0] == pytest.approx([0.36 / 0.52, 0.16 / 0.52], abs=1e-6)
    # T = 1 is the identity; a tiny T tends to one-hot
    p = torch.tensor([[0.2, 0.3, 0.5]])
    assert torch.allclose(sharpen(p, 1.0), p)
    assert sharpen(p, 0.01).argmax(1).item() == 2 and sharpen(p, 0.01)[0, 2] > 0.999
    with pytest.raises(ValueError, match="temperature"):
        sharpen(p, 0.0)


def test_guessed_labels_average_then_sharpen_and_carry_no_gradient():
    a = torch.log(torch.tensor([[0.8, 0.2]])).requires_grad_(True)
    b = torch.log(torch.tensor([[0.4, 0.6]])).requires_grad_(True)
    guessed = guess_labels([a, b], 0.5)
    # mean [0.6, 0.4] -> sharpened [0.6923, 0.3077]
    assert guessed.tolist()[0] == pytest.approx([0.36 / 0.52, 0.16 / 0.52], abs=1e-5)
    assert not guessed.requires_grad


def test_mixup_lambda_prefers_first_input():
    torch.manual_seed(0)
    draws = [mixup_lambda(0.75) for _ in range(200)]
    assert all(0.5 <= lam <= 1.0 for lam in draws)
    assert len({round(lam, 6) for lam in draws}) > 100  # actually random
    with pytest.raises(ValueError, match="alpha"):
        mixup_lambda(0.0)


def test_mixup_hand_computed():
    x, y = mixup(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]),
                 torch.tensor([3.0, 4.0]), torch.tensor([0.0, 1.0]), 0.75)
    assert x.tolist() == pytest.approx([1.5, 1.0])
    assert y.tolist() == pytest.approx([0.75, 0.25])


def test_soft_cross_entropy_matches_hard_cross_entropy_on_one_hot():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    soft = soft_cross_entropy(logits, F.one_hot(labels, 3).float())
    assert soft.item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)


def test_probability_l2_hand_computed():
    logits = torch.log(torch.tensor([[0.75, 0.25]]))
    # softmax [0.75, 0.25] vs target [1, 0]: (0.25^2 + 0.25^2) / 2 classes = 0.0625
    assert probability_l2(logits, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0625, abs=1e-6)


class _Task:
    name = "cls"


def _inputs(forward, step=0):
    torch.manual_seed(1)
    m, k, size = 4, 2, 8
    images = {"labeled": torch.rand(m, 1, size, size), **{f"weak{i}": torch.rand(m, 1, size, size) for i in range(k)}}
    views = {f"weak{i}": torch.randn(m, 2) for i in range(k)}
    return StrategyInputs(_Task(), views, None, None, step, view_images=images,
                          view_targets={"labeled": torch.tensor([0, 1, 1, 0]), "weak0": None, "weak1": None},
                          forward=forward)


def test_strategy_plans_labeled_and_k_weak_views():
    plan = MixMatch("mixmatch", K=3).plan()
    assert [(r.key, r.stream, r.aug, r.grad) for r in plan] == [
        ("labeled", "labeled", "weak", False), ("weak0", "unlabeled", "weak", False),
        ("weak1", "unlabeled", "weak", False), ("weak2", "unlabeled", "weak", False)]


def test_strategy_loss_trains_through_the_extra_forward_only():
    head = torch.nn.Linear(64, 2)
    seen = []

    def forward(x):
        seen.append(x.shape)
        return head(x.flatten(1))

    strategy = MixMatch("mixmatch", weight=10.0, rampup=4)
    result = strategy.loss(_inputs(forward, step=2))
    assert seen == [torch.Size([12, 1, 8, 8])]  # labeled m + K * m unlabeled, one pass
    assert result.logs["weight"] == pytest.approx(5.0)  # halfway through the ramp
    assert result.logs["lambda"] >= 0.5
    expected = float(result.logs["mixed_ce"]) + 5.0 * float(result.logs["l2"])
    assert result.loss.item() == pytest.approx(expected, rel=1e-5)
    result.loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_strategy_rejects_bad_options_and_missing_forward():
    with pytest.raises(ValueError, match="unknown option"):
        MixMatch("mixmatch", temperature=0.5)
    with pytest.raises(ValueError, match="K"):
        MixMatch("mixmatch", K=0)
    with pytest.raises(ValueError, match="run the model"):
        MixMatch("mixmatch").loss(_inputs(None))


def test_mixmatch_trains_a_few_steps(tmp_path):
    config = RunConfig(tasks=["cls:mixmatch:K=2,rampup=0,weight=5"], size=32, steps=2, eval_every=2,
                       save_every=2, out=str(tmp_path), name="run",
                       data={"cls": TaskData(train="synthetic:n=30", labels=6)})
    trainer = Trainer(config, PluginHost(), RunDir.create(config))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    summary = trainer.fit()
    assert summary["steps"] == 2
    logs = trainer.run.metrics()
    assert all(math.isfinite(r["cls/mixmatch"]) and r["cls/mixmatch/weight"] == 5.0 for r in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
