"""One plugin cannot take the others down: SystemExit at import or registration, half-done
registrations and name clashes disable that plugin alone, and ``mtssl plugins`` shows why."""
from __future__ import annotations

import json

import pytest

from conftest import invoke, spaced
from mtssl.api import hookimpl
from mtssl.plugins import PluginHost

TWO_TASKS_THEN_BOOM = '''
from mtssl.api import hookimpl


@hookimpl
def register_tasks(register):
    register("halfway_a", object, description="registered before the failure")
    register("halfway_b", object)
    raise {error}


@hookimpl
def register_strategies(register):
    register("halfway_strategy", object)
'''

THIRD_PARTY_TASK = '''
from mtssl.api import hookimpl


@hookimpl
def register_tasks(register):
    register("{task}", object, description="{description}")
'''


def failure_of(host: PluginHost, plugin: str):
    matches = [f for f in host.failures if f.plugin == plugin]
    assert len(matches) == 1, host.failures
    return matches[0]


@pytest.mark.parametrize("code", ["raise SystemExit(3)\n", "import sys\nsys.exit('no GPU here')\n",
                                  "class Odd(BaseException):\n    pass\nraise Odd('odd')\n"])
def test_base_exception_at_import_is_reported_and_the_rest_load(plugin_factory, code):
    plugin_factory.install("mtssl-exits", {"mtssl_demo_exits": code}, {"exits": "mtssl_demo_exits"})
    host = PluginHost()
    failure = failure_of(host, "exits")
    assert "failed to import 'mtssl_demo_exits'" in failure.error
    assert "cls" in host.registry("task") and "fixmatch" in host.registry("strategy")
    result = invoke(["plugins", "--json"])
    assert result.exit_code == 0
    assert [f["plugin"] for f in json.loads(result.stdout)["failures"]] == ["exits"]


def test_keyboard_interrupt_at_import_still_stops(plugin_factory):
    plugin_factory.install("mtssl-ctrlc", {"mtssl_demo_ctrlc": "raise KeyboardInterrupt\n"},
                           {"ctrlc": "mtssl_demo_ctrlc"})
    with pytest.raises(KeyboardInterrupt):
        PluginHost()


@pytest.mark.parametrize("error", ["SystemExit(1)", "RuntimeError('config missing')"])
def test_registration_is_all_or_nothing(plugin_factory, error):
    plugin_factory.install("mtssl-halfway", {"mtssl_demo_halfway": TWO_TASKS_THEN_BOOM.format(error=error)},
                           {"halfway": "mtssl_demo_halfway"})
    host = PluginHost()
    failure = failure_of(host, "halfway")
    assert f"register_tasks raised {error.split('(')[0]}" in failure.error
    for kind, name in [("task", "halfway_a"), ("task", "halfway_b"), ("strategy", "halfway_strategy")]:
        assert name not in host.registry(kind)
    assert "halfway" not in host.plugins
    assert "seg" in host.registry("task")


def test_in_process_plugin_raising_base_exception_leaves_nothing_registered():
    class Partial:
        @hookimpl
        def register_strategies(self, register):
            register("ok_before", object)
            raise SystemExit("bye")

    host = PluginHost(extra_plugins=[("partial", Partial())], load_entry_points=False)
    assert "ok_before" not in host.registry("strategy") and len(host.registry("strategy")) == 0
    assert "register_strategies raised SystemExit: bye" in failure_of(host, "partial").error


def test_clash_between_two_third_party_plugins_disables_the_later(plugin_factory):
    plugin_factory.install("mtssl-depth-a", {"mtssl_demo_depth_a": THIRD_PARTY_TASK.format(task="depth", description="A")},
                           {"depth_a": "mtssl_demo_depth_a"})
    plugin_factory.install("mtssl-depth-b", {"mtssl_demo_depth_b": THIRD_PARTY_TASK.format(task="depth", description="B")},
                           {"depth_b": "mtssl_demo_depth_b"})
    host = PluginHost()
    assert host.registry("task").get("depth").plugin == "depth_a"
    error = failure_of(host, "depth_b").error
    assert "task 'depth' is already registered by plugin 'depth_a' (mtssl-depth-a)" in error

    result = invoke(["plugins"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    text = spaced(result.stdout)
    assert "disabled: depth_b (mtssl-depth-b): task 'depth' is already registered by plugin 'depth_a'" in text
    listing = json.loads(invoke(["plugins", "--json"]).stdout)
    assert [r["plugin"] for r in listing["components"] if r["name"] == "depth"] == ["depth_a"]
    assert listing["failures"][0]["plugin"] == "depth_b"


def test_a_commands_still_run_when_a_plugin_clashes_with_first_party(plugin_factory, tmp_path):
    plugin_factory.install("mtssl-squat2", {"mtssl_demo_squat2": THIRD_PARTY_TASK.format(task="cls", description="x")},
                           {"squat2": "mtssl_demo_squat2"})
    result = invoke(["train", "--check", "--task", "cls", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert ("plugin 'squat2' (mtssl-squat2): task 'cls' is already registered by plugin 'cls' (mtssl); task 'cls' of "
            "plugin 'squat2' (mtssl-squat2) is disabled") in spaced(result.stderr)
