"""Config files (TOML, YAML) with command-line overrides, and errors that name the file."""
from __future__ import annotations

import json

import pytest

from conftest import invoke, spaced
from mtssl.cli.train import resolve_config
from mtssl.run.config import ConfigError, RunConfig, TaskData, load_config_file

TOML = """
tasks = ["cls:fixmatch", "seg:kl"]
bridges = "saliency"
size = 32
batch_size = 2
steps = 1
eval_every = 1
seed = 5

[data.cls]
train = "synthetic:n=24"
labels = 8

[data.seg]
train = "synthetic:n=16"
labels = "all"
test = "synthetic:n=4,domain=1"
"""

YAML = """
tasks: [seg]
size: 32
lr: 0.001
data:
  seg: synthetic:n=16
"""


def test_toml_file_with_cli_overrides(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text(TOML)
    config = resolve_config(file, ["--seg-labels", "4", "--cls-val-fraction", "0.25"],
                            {"seed": 9, "batch_size": None, "out": str(tmp_path)})
    assert config.tasks == ["cls:fixmatch", "seg:kl"] and config.bridges == ["saliency"]
    assert (config.size, config.batch_size, config.steps, config.seed) == (32, 2, 1, 9)  # None keeps the file's
    assert config.data["cls"] == TaskData(train="synthetic:n=24", labels=8, val_fraction=0.25)
    assert config.data["seg"] == TaskData(train="synthetic:n=16", labels=4, test=["synthetic:n=4,domain=1"])


def test_yaml_file_and_task_flags_replace_the_files_tasks(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text(YAML)
    config = resolve_config(file, [], {"skip_bad": True})
    assert config.tasks == ["seg"] and config.lr == 0.001 and config.skip_bad
    assert config.data == {"seg": TaskData(train="synthetic:n=16")}
    assert config.steps == 300  # the default when neither steps nor epochs is given
    replaced = resolve_config(file, [], {"tasks": ["seg:kl"], "size": 64})
    assert replaced.tasks == ["seg:kl"] and replaced.size == 64


def test_config_file_trains_through_the_cli_and_is_recorded(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text(TOML)
    result = invoke(["train", "--quiet", "--config", str(file), "--seed", "7", "--out", str(tmp_path / "runs"),
                     "--name", "from-file"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "runs" / "from-file" / "config.json").read_text())
    assert saved["seed"] == 7 and saved["size"] == 32 and saved["tasks"] == ["cls:fixmatch", "seg:kl"]
    assert saved["data"]["seg"]["labels"] == "all"
    assert RunConfig.from_dict(saved).data["cls"].labels == 8  # a run directory reads back as a config


@pytest.mark.parametrize("name, text, message", [
    ("bad.toml", "tasks = ['cls']\nstep = 3\n", "unknown key(s) step"),
    ("bad.yaml", "data:\n  cls:\n    train: synthetic\n    label: 3\n", "data.cls: unknown key(s) label"),
    ("bad.toml", "tasks = [\n", "not valid TOML"),
    ("bad.yml", "tasks: [cls\n", "not valid YML"),
    ("bad.yaml", "- a\n- b\n", "expected a mapping"),
    ("bad.ini", "tasks=cls\n", "unknown config format '.ini'"),
])
def test_bad_config_files_name_the_file(tmp_path, name, text, message):
    file = tmp_path / name
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(load_config_file(file), origin=str(file))
    assert str(file) in str(info.value) and message in str(info.value)
    result = invoke(["train", "--config", str(file), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in spaced(result.stderr) and name in result.stderr


def test_unknown_key_error_lists_the_known_keys():
    with pytest.raises(ConfigError, match="known: .*batch_size.*tasks"):
        RunConfig.from_dict({"batchsize": 3}, origin="x.toml")


def test_missing_config_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml: cannot read config file"):
        load_config_file(missing)


def test_data_for_a_task_not_in_the_run_is_refused(tmp_path):
    result = invoke(["train", "--task", "cls", "--seg-data", "synthetic", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "data given for task(s) seg that are not in this run" in result.output


def test_the_shipped_example_config_passes_the_checks(tmp_path):
    """examples/multimix.toml, which the training guide points to, stays a valid run."""
    from pathlib import Path

    from conftest import invoke

    example = Path(__file__).resolve().parents[1] / "examples" / "multimix.toml"
    result = invoke(["train", "--config", str(example), "--check", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
