"""An exception from plugin code is one line naming the component, its plugin and distribution, where it
happened and the exception; a run that fails mid-way leaves no half-made folder; ``--check`` runs every
strategy's planning; a name clash disables only the clashing component."""
from __future__ import annotations

import re

import pytest
import torch

from conftest import flat, invoke, tiny_train_args
from mtssl.api import HeadInputs, hookimpl
from mtssl.plugin_faults import PluginFault, attribute
from mtssl.plugins import PluginHost

FAULTY = '''
"""A third-party strategy that fails where its options say: in its factory, plan() or loss()."""
import torch

from mtssl.api import SSLStrategy, StrategyLoss, ViewRequest, hookimpl

PLANS = {
    "ok": lambda: [ViewRequest("plain")],
    "number": lambda: 3,
    "strings": lambda: ["plain"],
    "of": lambda: [ViewRequest("strong", aug="strong", of="weak")],
    "stream": lambda: [ViewRequest("plain", stream="both")],
    "aug": lambda: [ViewRequest("plain", aug="medium")],
    "teacher": lambda: [ViewRequest("plain", model="teacher")],
    "twice": lambda: [ViewRequest("plain"), ViewRequest("plain")],
}


class Faulty(SSLStrategy):
    def __init__(self, name, fail="never", error="RuntimeError", at=1, plan="ok"):
        super().__init__(name, fail=fail, error=error, at=at, plan=plan)
        self.fail, self.error, self.at, self.kind = fail, error, at, plan
        self.plans = 0
        if fail == "factory":
            self.raise_error()
        if fail == "typo":
            self.size = len(at)  # a TypeError of the plugin's own code, not of the user's options

    def raise_error(self):
        raise {"RuntimeError": RuntimeError("kaput"), "ValueError": ValueError("shapes differ"),
               "named": ValueError("strategy 'faulty' needs a second view"), "exit": SystemExit(0)}[self.error]

    def plan(self):
        self.plans += 1
        if self.fail == "plan" and self.plans >= self.at:
            self.raise_error()
        return PLANS[self.kind]()

    def loss(self, inputs):
        if self.fail == "loss" and inputs.step + 1 >= self.at:
            self.raise_error()
        return StrategyLoss(0.0 * inputs.views["plain"].float().sum())


@hookimpl
def register_strategies(register):
    register("faulty", Faulty)
'''


@pytest.fixture
def faulty(plugin_factory):
    plugin_factory.install("mtssl-faulty", {"mtssl_demo_faulty": FAULTY}, {"faulty": "mtssl_demo_faulty"})


def error_line(result, status: int) -> str:
    """The one 'Error:' line of a failed command, with no traceback."""
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return " ".join(result.stderr[result.stderr.index("Error:"):].split())  # Rich may wrap the line


def check(tmp_path, task: str):
    return invoke(["train", "--check", "--out", str(tmp_path), "--task", task])


FAULT = "strategy 'faulty' of plugin 'faulty' (mtssl-faulty) failed in "


def test_a_factory_raising_is_one_line_naming_the_plugin_and_where(faulty, tmp_path, monkeypatch):
    line = error_line(check(tmp_path, "cls:faulty:fail=factory"), 1)
    assert re.fullmatch(r"Error: " + re.escape(FAULT) + r"factory \(mtssl_demo_faulty\.py:\d+\): RuntimeError: kaput",
                        line), line
    monkeypatch.setenv("MTSSL_DEBUG", "1")  # the traceback stays available
    result = check(tmp_path, "cls:faulty:fail=factory")
    assert result.exit_code == 1 and "Traceback" in result.stderr and "raise_error" in result.stderr


def test_a_type_error_in_plugin_code_is_the_plugins_not_the_users_options(faulty, tmp_path):
    line = error_line(check(tmp_path, "cls:faulty:fail=typo"), 1)
    assert FAULT + "factory (mtssl_demo_faulty.py:" in line and "TypeError: object of type 'int' has no len()" in line
    assert "rejected its options" not in line
    user = error_line(check(tmp_path, "cls:faulty:thresold=0.5"), 2)  # an option its signature lacks
    assert "strategy 'faulty' rejected its options ['thresold']" in user and "plugin" not in user


def test_a_value_error_naming_nothing_gets_the_plugins_name(faulty, tmp_path):
    line = error_line(check(tmp_path, "cls:faulty:fail=factory,error=ValueError"), 1)
    assert line.startswith("Error: " + FAULT + "factory") and line.endswith("ValueError: shapes differ")
    # a message that names its component is meant for the user and shown as it is
    named = error_line(check(tmp_path, "cls:faulty:fail=factory,error=named"), 2)
    assert named == "Error: strategy 'faulty' needs a second view"


def test_loss_raising_before_the_first_checkpoint_leaves_no_run_folder(faulty, tmp_path):
    args = tiny_train_args("cls:faulty:fail=loss", out=tmp_path / "runs", name="r", steps=2)
    line = error_line(invoke(args), 1)
    assert re.search(re.escape(FAULT) + r"loss \(mtssl_demo_faulty\.py:\d+\): RuntimeError: kaput; no checkpoint was "
                     r"written, so .*r was removed$", line), line
    assert not (tmp_path / "runs" / "r").exists()  # the name is free: the same command makes the same folder
    result = invoke(tiny_train_args("cls", out=tmp_path / "runs", name="r", steps=1))
    assert result.exit_code == 0 and (tmp_path / "runs" / "r" / "checkpoints" / "last.safetensors").is_file()


def test_plan_raising_after_a_checkpoint_keeps_the_run_and_says_how_to_resume(faulty, tmp_path):
    # --check plans once with its own instance; the run's instance fails on its second plan, at step 2
    args = tiny_train_args("cls:faulty:fail=plan,at=2", out=tmp_path / "runs", name="r", steps=3)
    line = error_line(invoke(args), 1)
    run = tmp_path / "runs" / "r"
    assert FAULT + "plan (mtssl_demo_faulty.py:" in line and "RuntimeError: kaput" in line
    assert line.endswith(f"the last checkpoint is step 1; resume with: mtssl train --resume {run}")
    assert (run / "checkpoints" / "last.safetensors").is_file() and not (run / ".lock").exists()


def test_sys_exit_in_plugin_code_mid_run_names_the_plugin(faulty, tmp_path):
    args = tiny_train_args("cls:faulty:fail=loss,error=exit,at=2", out=tmp_path / "runs", name="r", steps=3)
    line = error_line(invoke(args), 1)
    assert line.startswith("Error: strategy 'faulty' of plugin 'faulty' (mtssl-faulty) at ")
    assert "mtssl_demo_faulty.py:" in line
    assert "called sys.exit(0) during training at step 2" in line


@pytest.mark.parametrize("plan, problem", [
    ("number", "returned int 3, not a sequence of ViewRequest"),
    ("strings", "returned str 'plain' as view 0, not a ViewRequest"),
    ("of", "view 'strong': of='weak' names no view planned before it (planned: none)"),
    ("stream", "view 'plain': stream 'both' is not one of labeled, unlabeled"),
    ("aug", "view 'plain': aug 'medium' is not one of none, weak, strong, strong_photometric"),
    ("teacher", "view 'plain': runs through the teacher, but teacher_decay() returns None"),
    ("twice", "view 'plain': planned twice"),
])
def test_check_refuses_a_junk_plan_naming_the_plugin(faulty, tmp_path, plan, problem):
    line = error_line(check(tmp_path, f"cls:faulty:plan={plan}"), 1)
    assert line == f"Error: {FAULT}plan: {problem}"


def test_check_passes_a_good_plan(faulty, tmp_path):
    result = check(tmp_path, "cls:faulty")
    assert result.exit_code == 0, result.output


def test_a_head_fault_is_attributed_to_its_task_and_a_core_error_to_nobody(host):
    """Code in the module a built component comes from is that component's: here the task's head."""
    head = host.create("task", "cls").build_head(HeadInputs((4,), (1,)))
    with pytest.raises(RuntimeError) as raised:
        head([torch.zeros(1, 3, 2, 2)], {})  # 3 feature channels where the head was built for 4
    fault = attribute(raised.value)
    assert isinstance(fault, PluginFault) and fault.__cause__ is raised.value
    assert str(fault).startswith("task 'cls' of plugin 'cls' (mtssl) failed in forward (classification.py:")
    with pytest.raises(RuntimeError) as raised:
        torch.zeros(2) @ torch.zeros(3)  # no plugin frame: not a plugin's fault
    assert attribute(raised.value) is None


PICKY = '''
from mtssl.api import hookimpl
from mtssl_plugins.tasks.classification import ClassificationTask


class Picky(ClassificationTask):
    """Trains like cls; its full evaluation fails."""

    def evaluate(self, probabilities, targets, class_names=()):
        return {}["auc"]


@hookimpl
def register_tasks(register):
    register("picky", Picky)
'''


def test_evaluate_raising_in_mtssl_eval_names_the_task(plugin_factory, tmp_path):
    plugin_factory.install("mtssl-picky", {"mtssl_demo_picky": PICKY}, {"picky": "mtssl_demo_picky"})
    args = tiny_train_args("picky", out=tmp_path, name="r", steps=1,
                           extra=("--picky-data", "synthetic:n=24", "--picky-labels", "8"))
    assert invoke(args).exit_code == 0
    line = error_line(invoke(["eval", str(tmp_path / "r")]), 1)
    assert re.fullmatch(r"Error: task 'picky' of plugin 'picky' \(mtssl-picky\) failed in evaluate "
                        r"\(mtssl_demo_picky\.py:\d+\): KeyError: 'auc'", line), line


TWO_IN_ONE = '''
from mtssl.api import SSLStrategy, hookimpl


class Helper:
    def boom(self):
        raise KeyError("lost")


class First(SSLStrategy):
    def plan(self):
        return []

    def loss(self, inputs):
        return Helper().boom()


class Second(First):
    pass


@hookimpl
def register_strategies(register):
    register("first", First)
    register("second", Second)
'''


def test_code_shared_by_two_components_of_a_plugin_names_the_plugin(plugin_factory):
    plugin_factory.install("mtssl-two", {"mtssl_demo_two": TWO_IN_ONE}, {"two": "mtssl_demo_two"})
    host = PluginHost()
    first, _ = host.create("strategy", "first"), host.create("strategy", "second")
    with pytest.raises(KeyError) as raised:
        first.loss(None)
    assert str(attribute(raised.value)).startswith(
        "strategy 'first' of plugin 'two' (mtssl-two) failed in loss (mtssl_demo_two.py:")  # self: exact
    import mtssl_demo_two

    with pytest.raises(KeyError) as raised:
        mtssl_demo_two.Helper().boom()  # module code of no one component in particular
    assert str(attribute(raised.value)).startswith("plugin 'two' (mtssl-two) failed in boom (mtssl_demo_two.py:")


def test_a_name_clash_disables_only_the_clashing_component(plugin_factory):
    source = '''
    from mtssl.api import hookimpl

    @hookimpl
    def register_strategies(register):
        register("fixmatch", "mtssl_plugins.strategies.fixmatch:FixMatch")
        register("fixmatch-too", "mtssl_plugins.strategies.fixmatch:FixMatch", description="innocent")
    '''
    # "aaa" sorts before the first-party plugins, which still load first and win the clash
    plugin_factory.install("mtssl-half", {"mtssl_demo_half": source}, {"aaa": "mtssl_demo_half"})
    host = PluginHost()
    assert host.registry("strategy").get("fixmatch").distribution == "mtssl"
    assert host.registry("strategy").get("fixmatch-too").distribution == "mtssl-half"
    assert [(f.plugin, f.component) for f in host.failures] == [("aaa", "strategy 'fixmatch'")]
    assert host.failures[0].error == ("strategy 'fixmatch' is already registered by plugin 'fixmatch' (mtssl); "
                                      "strategy 'fixmatch' of plugin 'aaa' (mtssl-half) is disabled, its other "
                                      "components load")
    listing = flat(invoke(["plugins"], env={"COLUMNS": "200"}).stdout)
    assert flat("disabled: aaa (mtssl-half): strategy 'fixmatch' is already registered by plugin 'fixmatch'") in listing


def test_a_name_registered_twice_by_one_plugin_keeps_the_first():
    class Twice:
        @hookimpl
        def register_tasks(self, register):
            register("depth", object, description="first")
            register("depth", object, description="second")
            register("normals", object)

    host = PluginHost([("twice", Twice())], load_entry_points=False)
    assert host.registry("task").get("depth").description == "first" and "normals" in host.registry("task")
    assert "task 'depth' is registered twice by that plugin" in host.failures[0].error


TASK_AND_SOURCE = '''
"""A third-party task and its source in one module: the source's option error must stay the source's."""
from mtssl.api import hookimpl


def build_source(name, path=None, target=None, seed=0, n=8):
    if int(n) < 1:
        raise ValueError(f"source 'rows': option n must be at least 1, got {n}")
    raise RuntimeError("not reached in this test")


@hookimpl
def register_sources(register):
    register("rows", build_source)
'''


def test_an_option_error_of_one_component_is_not_charged_to_another_whose_code_is_on_the_traceback(
        plugin_factory, tmp_path):
    """The first component built from a package (the task) must not claim a later factory's message for the
    user: a strategy's option error names the strategy, a source's the source."""
    plugin_factory.install("mtssl-rows", {"mtssl_demo_rows": TASK_AND_SOURCE}, {"rows": "mtssl_demo_rows"})
    strategy = error_line(check(tmp_path, "cls:freematch:momentum=1.5"), 2)
    assert strategy.startswith("Error: strategy 'freematch': option momentum") and "failed in" not in strategy
    source = error_line(invoke(["train", "--check", "--out", str(tmp_path), "--task", "cls",
                                "--cls-data", "rows:n=0"]), 2)
    assert "source 'rows': option n must be at least 1" in source and "failed in" not in source
