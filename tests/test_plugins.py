"""Plugin discovery through entry points, failure reporting, strict mode, clashes and the allow-list."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import invoke, read_metrics, train_run
from mtssl.api import hookimpl
from mtssl.plugins import PluginError, PluginHost

ENTROPY_PLUGIN = '''
"""Entropy minimisation on unlabeled images: a third-party strategy."""
import torch

from mtssl.api import SSLStrategy, StrategyLoss, ViewRequest, check_options, hookimpl


class EntropyMin(SSLStrategy):
    def serves(self, target):
        return target.categorical

    def __init__(self, name, **options):
        check_options(f"strategy '{name}'", options, {"weight"})
        super().__init__(name, **options)
        self.weight = float(options.get("weight", 0.1))

    def plan(self):
        return [ViewRequest("plain", "unlabeled", "none")]

    def loss(self, inputs):
        p = torch.softmax(inputs.views["plain"].float(), dim=1)
        entropy = -(p * p.clamp_min(1e-8).log()).sum(1).mean()
        return StrategyLoss(self.weight * entropy, {"entropy": entropy.item()})


@hookimpl
def register_strategies(register):
    register("entmin", EntropyMin, description="entropy minimisation")
'''


def install_entropy(plugin_factory, module="mtssl_demo_entropy"):
    plugin_factory.install("mtssl-demo-entropy", {module: ENTROPY_PLUGIN}, {"entmin": module})


def test_entry_point_plugin_is_discovered_with_its_distribution(plugin_factory):
    install_entropy(plugin_factory)
    host = PluginHost()
    assert not host.failures
    entry = host.registry("strategy").get("entmin")
    assert (entry.plugin, entry.distribution) == ("entmin", "mtssl-demo-entropy")
    assert host.plugins["entmin"].version == "0.1"
    assert host.plugins["entmin"].hooks == ["register_strategies"]
    assert "fixmatch" in host.registry("strategy")  # first-party plugins load alongside it


def test_plugins_json_lists_the_third_party_component(plugin_factory):
    install_entropy(plugin_factory)
    result = invoke(["plugins", "--json"])
    assert result.exit_code == 0
    listing = json.loads(result.stdout)
    rows = [r for r in listing["components"] if r["name"] == "entmin"]
    assert rows == [{"kind": "strategy", "name": "entmin", "aliases": [], "plugin": "entmin",
                     "distribution": "mtssl-demo-entropy", "version": "0.1",
                     "description": "entropy minimisation", "options": None}]  # it reads no options model
    assert listing["failures"] == []


def test_third_party_strategy_trains_from_the_cli(plugin_factory, tmp_path):
    install_entropy(plugin_factory)
    run = train_run("cls:entmin:weight=0.5", out=tmp_path / "runs")
    lines = read_metrics(run)
    assert [line["step"] for line in lines] == [1, 2]
    for line in lines:
        assert 0 < line["cls/entmin/entropy"] <= 0.6932  # at most log 2 for two classes
        assert line["cls/entmin"] == pytest.approx(0.5 * line["cls/entmin/entropy"], rel=1e-5)
    assert (run / "checkpoints" / "last.safetensors").is_file()


def test_plugin_that_fails_to_import_is_reported_and_the_rest_load(plugin_factory):
    plugin_factory.install("mtssl-broken", {"mtssl_demo_broken": "raise ImportError('needs libfoo 9')\n"},
                           {"broken": "mtssl_demo_broken"})
    install_entropy(plugin_factory)
    host = PluginHost()
    assert [(f.plugin, f.distribution) for f in host.failures] == [("broken", "mtssl-broken")]
    error = host.failures[0].error
    assert "mtssl_demo_broken" in error and "ImportError: needs libfoo 9" in error
    assert "entmin" in host.registry("strategy") and "seg" in host.registry("task")
    result = invoke(["plugins", "--json"])
    assert json.loads(result.stdout)["failures"][0]["plugin"] == "broken"


def test_strict_mode_makes_a_broken_plugin_fatal(plugin_factory, monkeypatch):
    plugin_factory.install("mtssl-broken", {"mtssl_demo_broken2": "import mtssl_no_such_module\n"},
                           {"broken": "mtssl_demo_broken2"})
    monkeypatch.setenv("MTSSL_PLUGINS_STRICT", "1")
    with pytest.raises(PluginError, match=r"plugin 'broken' \(mtssl-broken\).*mtssl_no_such_module"):
        PluginHost()
    result = invoke(["plugins"])
    assert result.exit_code == 2 and "plugin 'broken'" in result.stderr and "Traceback" not in result.output


def test_misspelt_hook_name_is_a_reported_failure(plugin_factory):
    source = '''
    from mtssl.api import hookimpl

    @hookimpl
    def register_task(register):
        raise AssertionError("never called")
    '''
    plugin_factory.install("mtssl-typo", {"mtssl_demo_typo": source}, {"typo": "mtssl_demo_typo"})
    host = PluginHost()
    assert [f.plugin for f in host.failures] == ["typo"]
    assert "register_task" in host.failures[0].error
    assert "typo" not in host.plugins


def test_plugin_raising_while_registering_is_reported():
    class Raising:
        @hookimpl
        def register_tasks(self, register):
            raise RuntimeError("bad config")

    host = PluginHost(extra_plugins=[("raising", Raising())], load_entry_points=False)
    assert [f.plugin for f in host.failures] == ["raising"]
    assert "register_tasks raised RuntimeError: bad config" in host.failures[0].error


def test_two_plugins_registering_one_name_disable_the_later_component_naming_both():
    def plugin(description):
        class Plugin:
            @hookimpl
            def register_tasks(self, register):
                register("depth", object, description=description)

        return Plugin()

    host = PluginHost(extra_plugins=[("first", plugin("a")), ("second", plugin("b"))], load_entry_points=False)
    assert host.registry("task").get("depth").description == "a"
    assert [(f.plugin, f.component) for f in host.failures] == [("second", "task 'depth'")]
    error = host.failures[0].error
    assert "task 'depth' is already registered by plugin 'first'" in error and "'second'" in error


def test_third_party_plugin_claiming_a_first_party_name_is_disabled(plugin_factory):
    source = '''
    from mtssl.api import hookimpl

    @hookimpl
    def register_strategies(register):
        register("fixmatch", object)
    '''
    # "aaa" sorts before every first-party entry point: first-party plugins still load first and win
    plugin_factory.install("mtssl-squatter", {"mtssl_demo_squat": source}, {"aaa": "mtssl_demo_squat"})
    host = PluginHost()
    assert host.registry("strategy").get("fixmatch").distribution == "mtssl"
    assert [(f.plugin, f.distribution) for f in host.failures] == [("aaa", "mtssl-squatter")]
    assert re.search(r"'fixmatch' is already registered by plugin 'fixmatch' \(mtssl\).*'aaa' \(mtssl-squatter\) "
                     r"is disabled", host.failures[0].error)


def test_allow_list_loads_only_the_named_plugins(monkeypatch, plugin_factory):
    install_entropy(plugin_factory)
    monkeypatch.setenv("MTSSL_PLUGINS", "unet, cls")
    host = PluginHost()
    assert set(host.plugins) == {"unet", "cls"}
    assert [e.name for e in host.registry("task")] == ["cls"]
    assert "entmin" not in host.registry("strategy") and len(host.registry("strategy")) == 0


def test_plugins_command_lists_the_first_party_components():
    result = invoke(["plugins", "--json"])
    names = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)["components"]}
    for kind, name in [("backbone", "unet"), ("backbone", "timm"), ("task", "cls"), ("task", "seg"),
                       ("strategy", "fixmatch"), ("strategy", "kl"), ("bridge", "saliency"),
                       ("source", "synthetic")]:
        assert names[(kind, name)]["distribution"] == "mtssl"
    table = invoke(["plugins"], env={"COLUMNS": "200"}).stdout  # Rich reads COLUMNS
    for name in ("unet", "cls", "seg", "fixmatch", "kl", "saliency", "synthetic"):
        assert name in table


def test_every_hook_is_documented_for_plugin_authors():
    import inspect

    from mtssl import hookspecs
    from mtssl.plugins import HOOKS

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins" / "index.md").read_text()
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
    assert sorted(hooks) == sorted(HOOKS.values())  # one per component kind
    for name in hooks:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"hook {name} has no docstring"
        assert name in guide, f"hook {name} is not in the plugin author's guide"


def test_the_example_plugin_package_trains(tmp_path, monkeypatch):
    """examples/entropy-plugin, loaded as an in-process plugin, runs a real training step."""
    from conftest import tiny_trainer

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples" / "entropy-plugin"))
    import mtssl_entropy

    host = PluginHost(extra_plugins=[("entropy", mtssl_entropy)])
    trainer = tiny_trainer(host, tmp_path, ["cls:entropy:weight=0.5"])
    logs = trainer.train_step()
    assert logs["cls/entropy"] == pytest.approx(0.5 * logs["cls/entropy/entropy"])
    assert 0 < logs["cls/entropy/entropy"] <= 0.6932  # entropy of two classes is at most ln 2


def test_every_first_party_component_is_registered_by_a_reference_that_builds():
    host = PluginHost()
    first_party = [e for registry in host.registries.values() for e in registry if e.distribution == "mtssl"]
    assert len(first_party) >= 25
    for entry in first_party:
        assert isinstance(entry.factory, str), entry.name  # listing them imports none of their modules
        factory = entry.resolve()
        module, attribute = entry.factory.split(":")
        assert factory.__module__ == module and factory.__name__ == attribute


def test_a_lazy_third_party_component_builds_and_a_broken_reference_names_its_plugin():
    class Lazy:
        @hookimpl
        def register_weightings(self, register):
            register("sum-again", "mtssl_plugins.weightings.equal:Equal", description="by reference")
            register("gone", "mtssl_no_such_package.weighting:Gone")

    host = PluginHost([("lazy", Lazy())])
    assert not host.failures
    assert type(host.create("weighting", "sum-again")).__name__ == "Equal"
    with pytest.raises(ValueError, match=r"weighting 'gone' of plugin 'lazy' \(\(in-process\)\) could not be "
                                         r"loaded from 'mtssl_no_such_package.weighting:Gone': ModuleNotFoundError"):
        host.create("weighting", "gone")


def test_a_factory_that_is_neither_callable_nor_a_reference_disables_the_plugin():
    class Wrong:
        @hookimpl
        def register_tasks(self, register):
            register("oops", "not a reference")

    host = PluginHost([("wrong", Wrong())])
    assert [f.plugin for f in host.failures] == ["wrong"]
    assert "neither callable nor a 'package.module:attribute' reference" in host.failures[0].error
