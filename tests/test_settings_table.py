"""Every run setting is declared once (mtssl/run/settings_table.py); the config model, the rules config files
are checked by, the options of ``mtssl train`` and ``mtssl bench grid``, the keys of a grid file's ``run``
table, what ``--resume`` accepts and the documentation's table all follow from that declaration."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import click
import pytest

from conftest import invoke, spaced
from mtssl.bench.grid import GridError, grid_from_dict
from mtssl.cli.bench import grid as grid_command
from mtssl.cli.train import train as train_command
from mtssl.run.config import ConfigError, RunConfig, TaskData
from mtssl.run.settings import RunSettings, TaskDataSettings
from mtssl.run.settings_table import DATA_SETTINGS, RESUME_KEEPS, SETTINGS, Setting, markdown_table

ROOT = Path(__file__).resolve().parents[1]
NUMBERS = [s for s in SETTINGS if s.kind in ("int", "float") and (s.low is not None or s.high is not None)]
# the options of `mtssl train` that are not run settings but say how this command runs
COMMAND_OPTIONS = {"config_file", "resume_dir", "quiet", "verbose", "progress_every", "max_pixels", "check_only"}


def options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name != "help"}


def test_the_config_model_has_a_field_per_setting_with_its_default():
    # the paper's training setup (Adam 1e-4, x0.1 every 8 epochs, m = 10) and FixMatch's two RandAugment
    # operations, written out here rather than read from the declaration
    paper = {"size": 64, "batch_size": 10, "lr": 1e-4, "lr_step_epochs": 8.0, "lr_gamma": 0.1, "strong_ops": 2,
             "backbone": "unet", "weighting": "equal", "seed": 0}
    assert {key: getattr(RunConfig(), key) for key in paper} == paper
    fields = dataclasses.fields(RunConfig)
    assert [f.name for f in fields] == [s.key for s in SETTINGS] == list(RunSettings.model_fields)
    defaults = RunConfig()
    for setting in SETTINGS:
        assert getattr(defaults, setting.key) == setting.default, setting.key
        assert RunSettings.model_fields[setting.key].get_default(call_default_factory=True) == setting.default


def test_a_tasks_data_is_declared_once_for_config_files_and_flags():
    assert [f.name for f in dataclasses.fields(TaskData)] == [s.key for s in DATA_SETTINGS]
    assert list(TaskDataSettings.model_fields) == [s.key for s in DATA_SETTINGS]
    assert TaskData() == TaskData(**{s.key: s.default for s in DATA_SETTINGS})
    from mtssl.cli.common import parse_task_data_args

    args = [word for s in DATA_SETTINGS for word in (s.option.replace("TASK", "seg"), {
        "budget": "all", "float": "0.25", "str": "synthetic:n=8", "list": "synthetic:n=4"}[s.kind])]
    parsed = parse_task_data_args(args)["seg"]
    assert set(parsed) == {s.key for s in DATA_SETTINGS}
    assert TaskData(**parsed) == RunConfig.from_dict({"data": {"seg": parsed}}).data["seg"]


def outside(setting: Setting) -> float:
    """A value just outside the setting's range, of its own type."""
    if setting.low is not None:
        return setting.low if setting.low_open else setting.low - 1
    return setting.high if setting.high_open else setting.high * 2


@pytest.mark.parametrize("setting", NUMBERS, ids=lambda s: s.key)
def test_a_value_outside_a_declared_range_is_refused_by_a_config_file_and_the_flag(setting, tmp_path):
    value = int(outside(setting)) if setting.kind == "int" else float(outside(setting))
    with pytest.raises(ConfigError, match=rf"^run.toml: {setting.key}: must satisfy"):
        RunConfig.from_dict({setting.key: value}, origin="run.toml")
    if setting.option:
        result = invoke(["train", "--check", "--task", "cls", "--out", str(tmp_path), setting.option, str(value)])
        assert result.exit_code == 2 and f"Invalid value for '{setting.option}'" in result.stderr


def test_train_has_an_option_per_flagged_setting_and_nothing_else_but_its_own():
    declared = {s.key: s for s in SETTINGS if s.option}
    found = options(train_command)
    assert set(found) == set(declared) | COMMAND_OPTIONS
    for key, setting in declared.items():
        assert found[key].opts[0] == setting.option and found[key].help == setting.full_help()
    given_none = train_command.make_context("train", ["--check"]).params
    assert {key: given_none[key] for key in declared} == dict.fromkeys(declared)  # the config's value holds


def test_bench_grid_offers_the_grid_flags_with_the_same_types():
    found = options(grid_command)
    grid_flags = {s.key: s for s in SETTINGS if s.grid == "flag"}
    assert {"size", "steps", "lr", "device", "threads", "precision"} <= set(grid_flags)
    others = {s.key for s in SETTINGS if s.grid != "flag"} - {"out"}  # the grid's --out is its own folder
    assert set(grid_flags) <= set(found) and not others & set(found)
    train = options(train_command)
    for key in grid_flags:
        assert found[key].opts == train[key].opts and type(found[key].type) is type(train[key].type)
        assert vars(found[key].type) == vars(train[key].type)  # the same ranges and choices


def test_a_grid_file_takes_the_grid_keys_only():
    grid = grid_from_dict({"models": {"A": "--task cls"}, "run": {"strong_ops": 3, "select_by": "cls/acc"}})
    assert grid.run == {"strong_ops": 3, "select_by": "cls/acc"}
    with pytest.raises(GridError, match=r"run: unknown key\(s\) lr_gamma"):
        grid_from_dict({"models": {"A": "--task cls"}, "run": {"lr_gamma": 0.5}})


def test_resume_takes_the_settings_declared_for_it_and_refuses_the_others(tmp_path):
    from conftest import train_run

    run = train_run("cls", out=tmp_path, name="run", steps=1)
    refused = invoke(["train", "--resume", str(run), "--size", "48"])
    assert refused.exit_code == 2
    assert "cannot be combined with --size (only --device, --threads, --quiet" in spaced(refused.stderr)
    allowed = invoke(["train", "--resume", str(run), "--threads", "1", "--device", "cpu"])
    assert allowed.exit_code == 0, allowed.output
    assert "nothing to resume" in allowed.output


def test_a_resumed_config_takes_the_resumable_settings_from_python_too(tmp_path):
    from conftest import train_run
    from mtssl.run.launch import resumed_config
    from mtssl.run.rundir import RunDir

    run = RunDir(train_run("cls", out=tmp_path, name="run", steps=1))
    assert set(RESUME_KEEPS) == {"device", "threads"}
    config = resumed_config(run, device="cpu", threads=1)
    assert (config.device, config.threads, config.tasks) == ("cpu", 1, run.config().tasks)
    assert resumed_config(run, device=None, threads=None).device == run.config().device  # None keeps the run's
    with pytest.raises(ValueError, match="keeps its own 'size'"):
        resumed_config(run, size=48)


def test_the_documented_table_is_the_generated_one():
    page = (ROOT / "docs" / "guide" / "training.md").read_text()
    found = re.search(r"<!-- settings table: .*? -->\n(.*?)<!-- end of settings table -->", page, re.S)
    assert found, "docs/guide/training.md lost its settings table"
    assert found[1] == markdown_table()
    assert markdown_table().count("\n| `") == len(SETTINGS) + len(DATA_SETTINGS)


def test_help_states_range_and_default_from_the_declaration():
    result = invoke(["train", "--help"])
    text = spaced(result.output)
    assert "Training image side in pixels (default 64). [x>=1]" in text
    assert "Optimizer steps (default 300 unless --epochs). [x>=1]" in text
    grid_help = " ".join(invoke(["bench", "grid", "--help"]).output.split())
    assert "Optimizer steps per cell. [x>=1]" in grid_help


def test_the_settings_json_of_check_names_every_key():
    result = invoke(["train", "--check", "--task", "cls", "--out", "unused"])
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)) == sorted(s.key for s in SETTINGS)
