"""A task names the data it trains on when none is given, or the error lists the sources that could serve it."""
from __future__ import annotations

import json

import partial_labels_plugin
from conftest import invoke, spaced
from mtssl.data.prepare import sources_serving, training_spec
from mtssl.run.config import RunConfig, TaskData
from mtssl.targets import TargetSpec
from mtssl_plugins.targets import CLASS_LABEL, binary_masks


def test_first_party_tasks_default_to_the_synthetic_phantom(host):
    for name in ("cls", "seg"):
        task = host.create("task", name)
        assert task.default_source == "synthetic"
        assert training_spec(host, name, task, TaskData()) == "synthetic"
        assert training_spec(host, name, task, TaskData(train="synthetic:n=8")) == "synthetic:n=8"
    assert RunConfig.from_dict({"data": {"cls": {"labels": 8}}}).data["cls"].train is None


def test_check_without_data_uses_the_default_and_keeps_it_implicit(tmp_path):
    result = invoke(["train", "--check", "--out", str(tmp_path), "--task", "cls:fixmatch", "--task", "seg:kl"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data"] == {}


def test_a_task_without_default_source_names_the_sources_that_serve_it(plugin_factory, tmp_path):
    partial_labels_plugin.install(plugin_factory)
    result = invoke(["train", "--check", "--out", str(tmp_path), "--task", "grade"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert ("task 'grade' has no default source; give --grade-data SPEC (sources serving its grade targets: "
            "mixed)") in spaced(result.stderr)
    assert invoke(["train", "--check", "--out", str(tmp_path), "--task", "grade",
                   "--grade-data", "mixed:n=12"]).exit_code == 0


def test_sources_serving_a_target_are_found_without_data(host):
    classes = sources_serving(host, CLASS_LABEL)
    assert {"synthetic", "kermany", "folders", "nih", "jsrt"} <= set(classes) and "pairs" not in classes
    masks = sources_serving(host, binary_masks(1))
    assert {"synthetic", "pairs", "jsrt", "montgomery"} <= set(masks) and "kermany" not in masks
    assert sources_serving(host, TargetSpec("depth", "float32", (1,), spatial=True)) == []
