"""What mtssl.api publishes for plugin authors: strategy building blocks, and options declared and range-checked."""
from __future__ import annotations

import warnings

import pytest
import torch

import mtssl.api as api
import mtssl.functional
import mtssl_plugins.functional
from mtssl.api import (Field, Options, ema_update, freematch_mask, freematch_thresholds, freematch_update,
                       linear_rampup, read_options)
from mtssl.spec import parse_value
from conftest import invoke, tiny_train_args


# -- building blocks ---------------------------------------------------------------------------------------
def test_every_building_block_is_published_once_through_the_api():
    for name in mtssl.functional.__all__:
        assert getattr(api, name) is getattr(mtssl.functional, name) and name in api.__all__
        assert not hasattr(mtssl_plugins.functional, name), f"first-party plugins keep a copy of {name}"


def test_linear_rampup_by_hand():
    assert [linear_rampup(s, 4) for s in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert linear_rampup(3, 0) == 1.0


def test_ema_update_is_a_new_tensor_by_hand():
    average, value = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    updated = ema_update(average, value, 0.75)
    assert updated.tolist() == [0.75, 0.5]  # 0.75 * 1 + 0.25 * 0, 0.75 * 0 + 0.25 * 2
    assert average.tolist() == [1.0, 0.0]


def test_freematch_update_by_hand():
    # probs (.75, .25) and (.2, .8): max probs .75, .8; class means (.475, .525); argmax 0 and 1
    probs = torch.tensor([[0.75, 0.25], [0.2, 0.8]])
    tau, p_model, hist = freematch_update(torch.tensor(0.5), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]),
                                          probs, momentum=0.5)
    assert tau.item() == pytest.approx(0.5 * 0.5 + 0.5 * 0.775)
    assert p_model.tolist() == pytest.approx([0.5 * 0.5 + 0.5 * 0.475, 0.5 * 0.5 + 0.5 * 0.525])
    assert hist.tolist() == pytest.approx([0.5, 0.5])
    # thresholds tau * p~ / max p~ = .6375 * (.4875 / .5125, 1) = (.6064, .6375): .75 (class 0) and .8 pass
    assert freematch_thresholds(tau, p_model).tolist() == pytest.approx([0.6375 * 0.4875 / 0.5125, 0.6375])
    assert freematch_mask(probs, tau, p_model).tolist() == [True, True]
    assert freematch_mask(torch.tensor([[0.62, 0.38]]), tau, p_model).tolist() == [True]
    assert freematch_mask(torch.tensor([[0.38, 0.62]]), tau, p_model).tolist() == [False]


def test_freematch_update_reduced_over_processes_equals_one_update_on_every_batch():
    state = (torch.tensor(0.5), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]))
    mine = torch.tensor([[0.9, 0.1]])
    theirs = torch.tensor([[0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])  # another rank's batch, of another size
    their_sums: list[torch.Tensor] = []

    def capture(sums):  # what that rank contributes to the sum: count, sum of max p, class sums, histogram
        their_sums.append(sums)
        return sums

    freematch_update(*state, theirs, 0.9, reduce=capture)
    reduced = freematch_update(*state, mine, 0.9, reduce=lambda sums: sums + their_sums[0])
    together = freematch_update(*state, torch.cat([mine, theirs]), 0.9)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(reduced, together))
    assert not torch.allclose(freematch_update(*state, mine, 0.9)[1], together[1])


# -- options -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, spec, message", [
    ("strategy", "freematch:weight=nan", "strategy 'freematch': option weight: input should be a finite number, got nan"),
    ("strategy", "freematch:momentum=1", "strategy 'freematch': option momentum: must satisfy 0.0 <= x < 1.0, got 1"),
    ("strategy", "cps:weight=-3", "strategy 'cps': option weight: must satisfy x >= 0.0, got -3"),
    ("strategy", "cps:rampup=-1", "strategy 'cps': option rampup: must satisfy x >= 0, got -1"),
    ("strategy", "fixmatch-seg:threshold=1.3", "option threshold: must satisfy 0.0 <= x <= 1.0, got 1.3"),
    ("strategy", "meanteacher:ema=1.5", "strategy 'meanteacher': option ema: must satisfy 0.0 <= x < 1.0, got 1.5"),
    ("strategy", "meanteacher:views=mixed", "option views: input should be 'aligned' or 'independent', got 'mixed'"),
    ("weighting", "uncertainty:init=inf", "weighting 'uncertainty': option init: input should be a finite number"),
    ("weighting", "uncertainty:lr=0", "weighting 'uncertainty': option lr: must satisfy x > 0.0, got 0"),
    ("weighting", "pcgrad:alpha=1", "weighting 'pcgrad': unknown option(s) alpha; known: none"),
    ("weighting", "equal:x=1", "weighting 'equal': unknown option(s) x; known: none"),
])
def test_first_party_options_are_typed_and_range_checked_in_one_line(host, kind, spec, message):
    name, _, option = spec.partition(":")
    key, _, value = option.partition("=")
    with pytest.raises(ValueError) as info:
        host.create(kind, name, **{key: parse_value(value)})  # as the command line's spec parser reads it
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_refused_option_stops_the_cli_before_training_with_one_line(tmp_path):
    result = invoke(tiny_train_args("cls:freematch:weight=nan", out=tmp_path, name="r",
                                    extra=("--weighting", "uncertainty:init=inf")))
    assert result.exit_code != 0 and not (tmp_path / "r").exists()
    assert result.stderr.strip().splitlines() == [
        "Error: strategy 'freematch': option weight: input should be a finite number, got nan"]


def test_defaults_and_given_values_reach_the_components(host):
    freematch = host.create("strategy", "freematch", momentum="0.9")
    assert (freematch.weight, freematch.momentum, freematch.fairness) == (1.0, 0.9, 0.01)
    teacher = host.create("strategy", "meanteacher", rampup="10", views="independent")
    assert (teacher.rampup, teacher.views, teacher.teacher_decay()) == (10, "independent", 0.99)
    assert host.create("weighting", "uncertainty", init="-1.5", lr="0.01").init == -1.5


def test_field_is_published_and_check_options_is_deprecated():
    class Example(Options):
        weight: float = Field(1.0, ge=0)

    assert read_options("strategy 'x'", {"weight": "2"}, Example).weight == 2.0
    with pytest.warns(DeprecationWarning, match="strategy 'x': check_options is deprecated"):
        api.check_options("strategy 'x'", {"weight": 1}, {"weight"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="unknown option"):  # it still checks names while it lasts
            api.check_options("strategy 'x'", {"wieght": 1}, {"weight"})
