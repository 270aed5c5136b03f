"""The NAME[:STRATEGY][:key=value] spec grammar and did-you-mean errors."""
from __future__ import annotations

import pytest

from conftest import invoke, spaced, tiny_train_args
from mtssl.registry import RegistryError
from mtssl.spec import SpecError, parse_bridge, parse_source, parse_task, parse_value


def test_strategy_options_follow_the_strategy():
    spec = parse_task("cls:fixmatch:threshold=0.95")
    assert spec.name == "cls" and spec.task.options == {}
    assert [(s.name, s.options) for s in spec.strategies] == [("fixmatch", {"threshold": 0.95})]


def test_task_options_come_before_the_strategy():
    spec = parse_task("seg:alpha=2:kl")
    assert spec.task.options == {"alpha": 2}
    assert [(s.name, s.options) for s in spec.strategies] == [("kl", {})]


def test_several_strategies_take_qualified_options():
    spec = parse_task("cls:classes=3:fixmatch+kl:fixmatch.threshold=0.9,kl.weight=0.5")
    assert spec.task.options == {"classes": 3}
    assert [(s.name, s.options) for s in spec.strategies] == [("fixmatch", {"threshold": 0.9}),
                                                              ("kl", {"weight": 0.5})]
    assert [s.name for s in parse_task("cls:fixmatch+kl").strategies] == ["fixmatch", "kl"]


@pytest.mark.parametrize("text, message", [
    ("", "must start with a task name"),
    ("threshold=0.9", "must start with a task name"),
    ("cls::fixmatch", "empty segment"),
    ("cls:fixmatch+", "empty strategy name"),
    ("cls:fixmatch:threshold=0.9,weight", "expected key=value, got 'weight'"),
    ("cls:fixmatch+kl:threshold=0.9", "write it as fixmatch.threshold=..."),
    ("cls:fixmatch:mixmatch.t=1", "'mixmatch.t' names no component"),
    ("cls:fixmatch:=3", "has no component to belong to"),
])
def test_malformed_task_specs_are_spec_errors(text, message):
    with pytest.raises(SpecError) as info:
        parse_task(text)
    assert message in str(info.value)


def test_bridge_spec_with_route_and_options():
    spec = parse_bridge("saliency:cls->seg:stride=8")
    assert (spec.name, spec.source, spec.target, spec.bridge.options) == ("saliency", "cls", "seg", {"stride": 8})
    bare = parse_bridge("saliency")
    assert (bare.source, bare.target, bare.bridge.options) == (None, None, {})
    assert parse_bridge("saliency:normalize=false").bridge.options == {"normalize": False}


def test_source_spec_with_path_and_options():
    spec = parse_source("kermany:/a/b:split=test")
    assert (spec.name, spec.path, spec.options) == ("kermany", "/a/b", {"split": "test"})
    assert parse_source("synthetic:n=24,domain=2").options == {"n": 24, "domain": 2}
    assert parse_source("synthetic").path is None
    # a path may itself contain ':' and '=' inside a folder name
    odd = parse_source("folder:C:/x/a=b/data:skip_bad=true")
    assert odd.path == "C:/x/a=b/data" and odd.options == {"skip_bad": True}
    with pytest.raises(SpecError, match="must start with a source name"):
        parse_source(":/a/b")


@pytest.mark.parametrize("text, value", [("3", 3), ("0.5", 0.5), ("true", True), ("off", False),
                                         ("none", None), ("1e-4", 1e-4), ("resnet18", "resnet18")])
def test_values_are_typed(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


@pytest.mark.parametrize("kind, name, suggestion, listed", [
    ("strategy", "fixmach", "fixmatch", "fixmatch, fixmatch-dense"),
    ("task", "sgm", "seg", "cls"),
    ("bridge", "salience", "saliency", "saliency"),
    ("source", "synthetc", "synthetic", "synthetic"),
    ("backbone", "unnet", "unet", "timm"),
])
def test_unknown_names_suggest_the_closest_and_list_the_rest(host, kind, name, suggestion, listed):
    with pytest.raises(RegistryError) as info:
        host.create(kind, name)
    message = str(info.value)
    assert f"unknown {kind} '{name}'" in message and f"Did you mean '{suggestion}'?" in message
    assert listed in message


def test_unknown_name_without_a_close_match_still_lists_what_exists(host):
    message = str(pytest.raises(RegistryError, host.create, "strategy", "zzzzzz").value)
    assert "Did you mean" not in message and "Available:" in message and "fixmatch" in message


@pytest.mark.parametrize("extra, message", [
    (("--task", "cls:fixmach"), "unknown strategy 'fixmach'. Did you mean 'fixmatch'?"),
    (("--task", "cls", "--bridge", "saliency:cls->"), "route must look like SRC->DST"),
    (("--task", "cls:fixmatch:threshold=7"), "option threshold: must satisfy 0.0 <= x <= 1.0, got 7"),
])
def test_cli_reports_spec_mistakes_in_one_line_with_exit_code_2(tmp_path, extra, message):
    args = tiny_train_args(out=tmp_path) + list(extra)
    result = invoke(args)
    assert result.exit_code == 2
    assert message in spaced(result.stderr)
    assert "Traceback" not in result.output
