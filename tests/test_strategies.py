"""The FixMatch and KL consistency strategies: their plans, weights, references and option checks."""
from __future__ import annotations

import math

import pytest
import torch

from mtssl.api import StrategyInputs, ViewRequest
from mtssl.model.assemble import build_components
from mtssl.run.config import RunConfig
from mtssl.registry import RegistryError
from mtssl.api import fixmatch_loss
from mtssl_plugins.functional import bernoulli_kl
from mtssl_plugins.strategies.kl_consistency import consistency_reference


def test_fixmatch_plans_a_no_grad_weak_view_and_a_trained_strong_view(host):
    strategy = host.create("strategy", "fixmatch")
    assert list(strategy.plan()) == [ViewRequest("weak", "unlabeled", "weak", grad=False),
                                     ViewRequest("strong", "unlabeled", "strong", grad=True)]
    assert (strategy.threshold, strategy.weight) == (0.7, 0.25)  # paper: t = 0.7, lambda = 0.25


def test_fixmatch_applies_its_weight_and_logs_the_mask_rate(host):
    task = host.create("task", "cls")
    strategy = host.create("strategy", "fixmatch", threshold=0.6, weight=0.5)
    weak = torch.tensor([[2.0, 0.0], [0.0, 0.1], [0.0, 3.0], [1.0, 0.0]])
    strong = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.0, 2.0]], requires_grad=True)
    out = strategy.loss(StrategyInputs(task, {"weak": weak, "strong": strong}, None, None, step=0))
    expected, mask = fixmatch_loss(weak, strong, 0.6)
    assert out.loss.item() == pytest.approx(0.5 * expected.item(), rel=1e-6)
    assert float(out.logs["mask_rate"]) == pytest.approx(mask.float().mean().item())
    assert float(out.logs["mask_rate"]) == pytest.approx(0.75)  # 0.88, 0.52 (dropped), 0.95, 0.73
    out.loss.backward()
    assert strong.grad is not None


@pytest.mark.parametrize("options, message", [
    ({"treshold": 0.9}, "known: threshold, weight"),
    ({"threshold": 1.5}, "option threshold: must satisfy 0.0 <= x <= 1.0"),
    ({"threshold": -0.1}, "option threshold: must satisfy 0.0 <= x <= 1.0"),
])
def test_fixmatch_rejects_bad_options(host, options, message):
    with pytest.raises(ValueError) as info:
        host.create("strategy", "fixmatch", **options)
    assert message in str(info.value)
    assert "fixmatch" in str(info.value)


def test_kl_rejects_bad_options(host):
    with pytest.raises(ValueError, match="known: pairing, preset, reduction, weight"):
        host.create("strategy", "kl", beta=0.1)
    with pytest.raises(ValueError, match="option pairing: input should be 'mean' or 'index', got 'random'"):
        host.create("strategy", "kl", pairing="random")


def test_strategy_on_the_wrong_target_kind_is_refused(host):
    with pytest.raises(ValueError, match=r"strategy 'kl' cannot train task 'cls': it does not serve class targets "
                                         r"\(int64 per image\)"):
        build_components(RunConfig(tasks=["cls:kl"], size=32), host)
    with pytest.raises(ValueError, match=r"strategy 'fixmatch' cannot train task 'seg': .*mask targets"):
        build_components(RunConfig(tasks=["seg:fixmatch"], size=32), host)


def test_kl_mean_reference_is_the_mean_labeled_probability_map():
    labeled = torch.tensor([[[[0.0, 2.0]]], [[[2.0, -2.0]]]])
    ref = consistency_reference(torch.sigmoid(labeled), "mean", 3)
    s = torch.sigmoid(labeled)
    expected = ((s[0] + s[1]) / 2)
    assert ref.shape == (3, 1, 1, 2)
    for row in ref:
        assert torch.allclose(row, expected)


def test_kl_index_reference_pairs_image_i_with_image_i_and_cycles():
    labeled = torch.tensor([[[[0.0]]], [[[1.0]]]])
    s = torch.sigmoid(labeled).flatten().tolist()
    assert consistency_reference(torch.sigmoid(labeled), "index", 2).flatten().tolist() == pytest.approx(s)
    assert consistency_reference(torch.sigmoid(labeled), "index", 3).flatten().tolist() == pytest.approx([s[0], s[1], s[0]])
    assert consistency_reference(torch.sigmoid(labeled), "index", 1).flatten().tolist() == pytest.approx([s[0]])


@pytest.mark.parametrize("pairing", ["mean", "index"])
def test_kl_term_is_weighted_non_zero_and_pulls_unlabeled_toward_labeled(host, pairing):
    task = host.create("task", "seg")
    strategy = host.create("strategy", "kl", pairing=pairing, weight=0.5)
    assert list(strategy.plan()) == [ViewRequest("plain", "unlabeled", "none", grad=True)]
    torch.manual_seed(0)
    labeled = (torch.randn(2, 1, 4, 4) * 2).requires_grad_(True)
    unlabeled = (torch.randn(2, 1, 4, 4) * 2).requires_grad_(True)
    out = strategy.loss(StrategyInputs(task, {"plain": unlabeled}, labeled, None, step=0))
    reference = consistency_reference(torch.sigmoid(labeled), pairing, 2)
    kl = bernoulli_kl(reference, unlabeled)
    assert out.loss.item() == pytest.approx(0.5 * kl.item(), rel=1e-6)
    assert float(out.logs["kl"]) == pytest.approx(kl.item(), rel=1e-6)
    assert out.loss.item() > 1e-3
    out.loss.backward()
    assert labeled.grad is None  # the labeled side is a reference; Dice trains it
    with torch.no_grad():
        stepped = unlabeled - 5.0 * unlabeled.grad
        gap_before = (torch.sigmoid(unlabeled) - reference).abs().mean()
        gap_after = (torch.sigmoid(stepped) - reference).abs().mean()
    assert gap_after < gap_before


def test_kl_without_labeled_predictions_is_a_clear_error(host):
    strategy = host.create("strategy", "kl")
    task = host.create("task", "seg")
    with pytest.raises(ValueError, match="needs labeled predictions of task 'seg'"):
        strategy.loss(StrategyInputs(task, {"plain": torch.zeros(1, 1, 2, 2)}, None, None, step=0))


def test_misspelt_strategy_name_suggests_the_registered_one(host):
    with pytest.raises(RegistryError, match="unknown strategy 'fixmach'. Did you mean 'fixmatch'"):
        host.create("strategy", "fixmach")


def test_kl_on_several_structures_is_the_mean_of_per_channel_terms():
    from mtssl_plugins.functional import bernoulli_kl

    torch.manual_seed(0)
    labeled, unlabeled = torch.randn(3, 2, 4, 4), torch.randn(5, 2, 4, 4)
    reference = consistency_reference(torch.sigmoid(labeled), "mean", 5)
    both = bernoulli_kl(reference, unlabeled)
    per_channel = [bernoulli_kl(reference[:, c:c + 1], unlabeled[:, c:c + 1]) for c in range(2)]
    assert both.item() == pytest.approx(sum(per_channel).item() / 2, rel=1e-6)


def test_kl_sum_reduction_sums_pixels_and_averages_images_by_hand():
    p = torch.full((2, 1, 2, 2), 0.75)
    per_pixel = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(Bern(.75) || Bern(.5))
    assert bernoulli_kl(p, torch.zeros(2, 1, 2, 2)).item() == pytest.approx(per_pixel, rel=1e-6)
    assert bernoulli_kl(p, torch.zeros(2, 1, 2, 2), "sum").item() == pytest.approx(4 * per_pixel, rel=1e-6)


def test_kl_paper_preset_is_beta_001_with_the_sum_and_options_override_it(host):
    paper = host.create("strategy", "kl", preset="paper")
    assert (paper.weight, paper.reduction, paper.pairing) == (0.01, "sum", "mean")
    tuned = host.create("strategy", "kl", preset="paper", weight=0.1)
    assert (tuned.weight, tuned.reduction) == (0.1, "sum")
    default = host.create("strategy", "kl")
    assert default.reduction == "mean"
    with pytest.raises(ValueError, match="preset"):
        host.create("strategy", "kl", preset="papr")
    with pytest.raises(ValueError, match="reduction"):
        host.create("strategy", "kl", reduction="max")
