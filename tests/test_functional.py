"""The MultiMix loss functions against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mtssl.api import fixmatch_loss, pseudo_labels
from mtssl_plugins.functional import bernoulli_kl, input_saliency, soft_dice_loss


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# -- soft Dice -------------------------------------------------------------------------------------------
def test_soft_dice_on_hand_computed_masks():
    # image 0: p = 0.5 everywhere, one foreground pixel of four:
    #   (2*0.5 + 1) / (2.0 + 1 + 1) = 0.5  -> loss 0.5
    # image 1: p = (0.75, 0.25, 0.75, 0.25), mask (1, 0, 1, 0):
    #   inter = 1.5, sum p = 2, sum g = 2 -> (3 + 1) / (4 + 1) = 0.8 -> loss 0.2
    logits = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]],
                           [[[logit(0.75), logit(0.25)], [logit(0.75), logit(0.25)]]]])
    target = torch.tensor([[[[1, 0], [0, 0]]], [[[1, 0], [1, 0]]]], dtype=torch.uint8)
    per_image = [soft_dice_loss(logits[i:i + 1], target[i:i + 1]).item() for i in range(2)]
    assert per_image == pytest.approx([0.5, 0.2], abs=1e-6)
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.35, abs=1e-6)


def test_soft_dice_empty_mask_predicted_empty_is_zero_and_predicted_full_is_not():
    target = torch.zeros(1, 1, 4, 4)
    assert soft_dice_loss(torch.full((1, 1, 4, 4), -30.0), target).item() == pytest.approx(0.0, abs=1e-6)
    # all 16 pixels predicted foreground: 1 - 1 / (16 + 1)
    assert soft_dice_loss(torch.full((1, 1, 4, 4), 30.0), target).item() == pytest.approx(16 / 17, abs=1e-5)


def test_soft_dice_perfect_prediction_is_zero():
    target = torch.tensor([[[[1, 1, 0], [0, 1, 0], [0, 0, 0]]]])
    logits = (target.float() * 2 - 1) * 40
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)


# -- pseudo-labels -----------------------------------------------------------------------------------------
def test_pseudo_labels_keep_confidence_equal_to_threshold():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-3.0, 1.0, 0.5]])
    confidence = torch.softmax(logits, dim=1).max(dim=1).values
    labels, _ = pseudo_labels(logits, 0.0)
    assert labels.tolist() == [0, 0, 1]  # a tie goes to the first class, as argmax does
    t = float(confidence[2])  # exactly representable: the float32 value itself
    _, mask = pseudo_labels(logits, t)
    assert mask.tolist() == [True, False, True]  # 0.844 >= t kept, 1/3 dropped, t (0.616) itself kept
    above = float(np.nextafter(np.float32(t), np.float32(2)))
    assert pseudo_labels(logits, above)[1].tolist() == [True, False, False]
    below = float(np.nextafter(np.float32(t), np.float32(-1)))
    assert pseudo_labels(logits, below)[1].tolist() == [True, False, True]


def test_pseudo_labels_are_detached():
    weak = torch.randn(4, 2, requires_grad=True)
    labels, mask = pseudo_labels(weak, 0.5)
    assert not labels.requires_grad and not mask.requires_grad


# -- FixMatch ----------------------------------------------------------------------------------------------
def test_fixmatch_loss_is_masked_cross_entropy_over_the_whole_batch():
    weak = torch.tensor([[3.0, 0.0], [0.1, 0.0], [-2.0, 1.0], [0.0, 0.2]])
    strong = torch.tensor([[1.0, 0.5], [0.3, -0.2], [0.0, 0.0], [2.0, -1.0]])
    threshold = 0.7
    expected = 0.0
    for w, s in zip(weak.tolist(), strong.tolist()):
        pw = np.exp(w) / np.exp(w).sum()
        if pw.max() >= threshold:
            label = int(np.argmax(pw))
            expected += -(s[label] - math.log(sum(math.exp(v) for v in s)))
    expected /= 4  # whole batch, not just the confident rows
    loss, mask = fixmatch_loss(weak, strong, threshold)
    assert mask.tolist() == [True, False, True, False]
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.dtype == torch.float32


def test_fixmatch_gradient_flows_into_strong_view_only():
    weak = torch.tensor([[3.0, 0.0], [0.1, 0.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 1.0], [0.5, 0.0]], requires_grad=True)
    loss, mask = fixmatch_loss(weak, strong, 0.7)
    loss.backward()
    assert weak.grad is None
    assert strong.grad is not None
    assert strong.grad[0].abs().sum() > 0  # confident row is trained
    assert torch.equal(strong.grad[1], torch.zeros(2))  # masked-out row gets nothing
    # d CE / d logits = (softmax - onehot) / batch
    expected = (torch.softmax(strong.detach()[0], 0) - torch.tensor([1.0, 0.0])) / 2
    assert torch.allclose(strong.grad[0], expected, atol=1e-6)


def test_fixmatch_all_masked_out_gives_zero():
    weak = torch.zeros(3, 2)
    loss, mask = fixmatch_loss(weak, torch.randn(3, 2), 0.9)
    assert not mask.any() and loss.item() == 0.0


# -- Bernoulli KL --------------------------------------------------------------------------------------------
def manual_kl(p: np.ndarray, q: np.ndarray) -> float:
    def term(a, b):
        return np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / b), 0.0)

    return float(np.mean(term(p, q) + term(1 - p, 1 - q)))


def test_bernoulli_kl_matches_manual_formula():
    p = torch.tensor([[[[0.2, 0.9], [0.0, 1.0]]], [[[0.5, 0.5], [0.7, 0.1]]]])
    q_logits = torch.tensor([[[[0.3, -1.0], [2.0, -0.5]]], [[[0.0, 1.5], [-2.0, 0.4]]]])
    q = 1 / (1 + np.exp(-q_logits.double().numpy()))
    expected = manual_kl(p.double().numpy(), q)
    assert bernoulli_kl(p, q_logits).item() == pytest.approx(expected, rel=1e-5)
    assert bernoulli_kl(p, q_logits).item() > 0.1


def test_bernoulli_kl_is_zero_when_distributions_match():
    p = torch.tensor([0.1, 0.5, 0.8, 0.97]).view(1, 1, 2, 2)
    assert bernoulli_kl(p, torch.logit(p)).item() == pytest.approx(0.0, abs=1e-6)


def test_bernoulli_kl_gradient_is_sigmoid_minus_p_over_n():
    p = torch.tensor([0.2, 0.9, 0.0, 1.0, 0.5, 0.6]).view(1, 1, 2, 3)
    q_logits = torch.tensor([0.3, -1.0, 2.0, -0.5, 0.0, 4.0]).view(1, 1, 2, 3).requires_grad_(True)
    p_leaf = p.clone().requires_grad_(True)
    bernoulli_kl(p_leaf, q_logits).backward()
    expected = (torch.sigmoid(q_logits.detach()) - p) / p.numel()
    assert torch.allclose(q_logits.grad, expected, atol=1e-7)
    assert p_leaf.grad is None  # the reference is a target, not trained


def test_one_gradient_step_moves_q_toward_p():
    p = torch.tensor([0.1, 0.9, 0.5, 0.7]).view(1, 1, 2, 2)
    q_logits = torch.tensor([2.0, -2.0, 1.0, -1.0]).view(1, 1, 2, 2).requires_grad_(True)
    before = (torch.sigmoid(q_logits) - p).abs().detach()
    kl_before = bernoulli_kl(p, q_logits)
    kl_before.backward()
    with torch.no_grad():
        stepped = q_logits - 1.0 * q_logits.grad
    after = (torch.sigmoid(stepped) - p).abs()
    assert (after < before).all()
    assert bernoulli_kl(p, stepped).item() < kl_before.item()


def test_single_channel_softmax_consistency_is_identically_zero_unlike_ours():
    """The published code's softmax over one channel makes every probability 1, so its KL and gradient vanish.

    Sigmoid probabilities keep each pixel a real Bernoulli variable, so our term sees the disagreement.
    """
    labeled = torch.tensor([[[[3.0, -2.0], [0.5, 1.0]]]])
    unlabeled = torch.tensor([[[[-1.0, 2.0], [0.0, -3.0]]]], requires_grad=True)
    p_soft, q_soft = torch.softmax(labeled, dim=1), torch.softmax(unlabeled, dim=1)
    assert torch.equal(p_soft, torch.ones_like(p_soft)) and torch.equal(q_soft.detach(), torch.ones_like(p_soft))
    naive = nn.functional.kl_div(q_soft.log(), p_soft, reduction="batchmean")
    naive.backward()
    assert naive.item() == 0.0 and torch.equal(unlabeled.grad, torch.zeros_like(unlabeled))
    unlabeled.grad = None
    ours = bernoulli_kl(torch.sigmoid(labeled), unlabeled)
    ours.backward()
    assert ours.item() > 0.5 and unlabeled.grad.abs().sum() > 0


# -- input saliency ------------------------------------------------------------------------------------------
class TinyClassifier(nn.Module):
    def __init__(self, channels: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


@pytest.mark.parametrize("channels", [1, 2])
def test_input_saliency_equals_independent_per_image_gradient(channels):
    torch.manual_seed(0)
    model = TinyClassifier(channels)
    images = torch.rand(3, channels, 8, 8, requires_grad=True)
    score = model(images).max(dim=1).values
    saliency = input_saliency(score, images)
    assert saliency.shape == (3, 1, 8, 8)
    for i in range(3):
        x = images.detach()[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).max(), x)
        expected = g.abs().amax(dim=1, keepdim=True)
        expected = expected / expected.max()
        assert torch.allclose(saliency[i:i + 1], expected, atol=1e-6)
        assert saliency[i].max().item() == pytest.approx(1.0)
    assert all(p.grad is None for p in model.parameters())
    assert images.grad is None


def test_input_saliency_unnormalized_and_graph_kept_for_the_loss():
    torch.manual_seed(1)
    model = TinyClassifier()
    images = torch.rand(2, 1, 8, 8, requires_grad=True)
    logits = model(images)
    raw = input_saliency(logits.max(dim=1).values, images, normalize=False)
    (g,) = torch.autograd.grad(logits.max(dim=1).values.sum(), images, retain_graph=True)
    assert torch.allclose(raw, g.abs())
    logits.sum().backward()  # the graph survived, so the caller's loss still trains
    assert model.fc.weight.grad is not None
