"""Imbalanced classes: balanced loss weights, a class-balanced labeled sampler, and warnings when a
classifier puts every image in one class (validation during training, and ``mtssl eval``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import invoke, tiny_trainer
from mtssl.data.placement import make_stream
from mtssl.training.validation import validate
from mtssl_plugins.metrics.imbalance import balanced_class_weights, collapse_note
from mtssl_plugins.tasks.classification import ClassificationTask
from test_trainer import losses, same_weights, straight_and_stopped_at_two, weights
from tiny_run import tiny_run

CPU = torch.device("cpu")
NAMES = ["NORMAL", "PNEUMONIA"]


def test_balanced_weights_are_inverse_class_frequencies():
    # 1 NORMAL, 3 PNEUMONIA, one class absent: n / (C * n_c) = 4 / (3 * 1), 4 / (3 * 3), and 0
    assert np.allclose(balanced_class_weights(np.array([0, 1, 1, 1]), 3), [4 / 3, 4 / 9, 0.0])


def test_balance_loss_weighs_the_cross_entropy_by_the_labeled_counts():
    task = ClassificationTask("cls", balance="loss")
    task.observe_labels(np.array([0, 1, 1, 1]))  # weights 2 and 2/3
    output, target = torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1])
    easy, hard = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))  # each row's cross-entropy
    expected = (2 * easy + 2 / 3 * hard) / (2 + 2 / 3)  # torch's weighted mean
    assert task.supervised_loss(output, target).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.626928, abs=1e-6)
    plain = ClassificationTask("cls")
    plain.observe_labels(np.array([0, 1, 1, 1]))
    assert plain.supervised_loss(output, target).item() == pytest.approx((easy + hard) / 2, rel=1e-6)


def imbalanced_stream(seed: int, weighted: bool = True, streamed: bool = False):
    labels = np.array([0] * 8 + [1] * 32)  # 20 % of one class
    task = ClassificationTask("cls", balance="sampler" if weighted else "none")
    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1).repeat(4, 1).repeat(4, 2)
    return make_stream(images, np.arange(40), lambda rows: torch.from_numpy(labels[rows]), batch_size=10,
                       seed=seed, device=CPU, streamed=streamed, weights=task.draw_weights(labels))


def drawn_classes(stream, batches: int = 400) -> np.ndarray:
    return np.concatenate([stream.next()[1].numpy() for _ in range(batches)])


def test_the_sampler_draws_every_class_about_equally_and_reproducibly():
    drawn = drawn_classes(imbalanced_stream(seed=0))
    assert abs((drawn == 0).mean() - 0.5) < 0.03  # 4000 draws; plain shuffled passes give 0.20
    assert abs((drawn_classes(imbalanced_stream(seed=0, weighted=False)) == 0).mean() - 0.2) < 1e-9
    assert np.array_equal(drawn, drawn_classes(imbalanced_stream(seed=0)))
    assert not np.array_equal(drawn, drawn_classes(imbalanced_stream(seed=1)))
    host = imbalanced_stream(seed=0, streamed=True)  # host-streamed tasks draw the same rows
    assert np.array_equal(drawn, drawn_classes(host))
    host.close()


def test_a_run_learns_the_labeled_counts_and_samples_its_labeled_stream(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls:balance=loss"])
    labeled = trainer.data["cls"].train.targets[trainer.data["cls"].split.labeled]
    counts = np.bincount(labeled, minlength=2)
    assert torch.allclose(trainer.parts.tasks["cls"].class_weights,
                          torch.tensor(len(labeled) / (2 * counts), dtype=torch.float32))
    assert trainer.labeled["cls"].weights is None
    sampled = tiny_trainer(host, tmp_path, ["cls:balance=sampler"])
    assert torch.allclose(sampled.labeled["cls"].weights, torch.tensor(1.0 / counts[labeled], dtype=torch.float64))


@pytest.mark.parametrize("balance", ["loss", "sampler"])
def test_balanced_runs_resume_bit_exactly(host, tmp_path, balance):
    settings = dict(tasks=[f"cls:balance={balance}:fixmatch"], steps=4, eval_every=2, save_every=100, seed=1)
    straight, interrupted = straight_and_stopped_at_two(host, tmp_path, **settings)
    run = interrupted.run.path
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert losses(run) == losses(straight.run.path)
    assert same_weights(weights(run), weights(straight.run.path))


def test_collapse_note_names_the_class_and_the_missed_rate():
    targets = np.array([0, 1, 1, 1])
    assert collapse_note(np.array([1, 1, 1, 1]), targets, NAMES).startswith(
        "every image predicted PNEUMONIA (specificity 0.000)")
    assert collapse_note(np.array([0, 0, 0, 0]), targets, NAMES).startswith(
        "every image predicted NORMAL (sensitivity 0.000)")
    assert collapse_note(np.array([2, 2, 2]), np.array([0, 1, 2]), ["a", "b", "c"]).startswith(
        "every image predicted c (accuracy 0.333)")
    assert collapse_note(np.array([0, 1, 1, 1]), targets, NAMES) is None  # two classes predicted
    assert collapse_note(np.array([1, 1]), np.array([1, 1]), NAMES) is None  # the set holds one class


class FixedLogits(nn.Module):
    """A stand-in model: class 1 for every image, or alternating classes row by row."""

    def __init__(self, alternate: bool):
        super().__init__()
        self.alternate = alternate

    def forward(self, x, rows):
        row = torch.arange(len(x)) % 2 if self.alternate else torch.ones(len(x), dtype=torch.long)
        return {name: nn.functional.one_hot(row, 2).float() for name in rows}


@pytest.mark.parametrize("alternate", [False, True])
def test_validation_warns_only_when_predictions_collapse(host, tmp_path, alternate):
    trainer = tiny_trainer(host, tmp_path, ["cls"])
    warnings: list[str] = []
    validate(FixedLogits(alternate), trainer.parts.tasks, trainer.data, CPU, warnings=warnings)
    names = trainer.data["cls"].train.class_names
    assert warnings == ([] if alternate else
                        [f"cls · validation: {collapse_note(np.ones(2, int), np.array([0, 1]), names)}"])


def test_eval_warns_when_every_image_gets_one_class(tmp_path_factory, monkeypatch):
    run = tiny_run(tmp_path_factory)
    monkeypatch.setattr(ClassificationTask, "probabilities",
                        lambda self, output: torch.tensor([0.3, 0.7]).expand(len(output), 2))
    result = invoke(["eval", str(run)], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    assert "note cls · val: every image predicted pneumonia (specificity 0.000)" in result.stdout
