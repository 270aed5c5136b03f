"""Every option, spec option and config value is checked before any work starts: one line naming the
option (and the file), the allowed range and the value; no traceback, no hang, no silent acceptance."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from conftest import invoke, tiny_train_args
from mtssl.run.config import ConfigError, RunConfig, load_config_file
from mtssl.data.splits import split_indices


def one_line_error(result) -> str:
    """The error text of a failed command: exit 2, no traceback, one 'Error:' line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def check(*args: str, out: Path) -> object:
    return invoke(["train", "--check", "--out", str(out), *args])


@pytest.mark.parametrize("args, message", [
    (("--size", "0"), "Invalid value for '--size': 0 is not in the range x>=1"),
    (("--size", "-5"), "Invalid value for '--size': -5 is not in the range x>=1"),
    (("--batch-size", "0"), "Invalid value for '--batch-size': 0 is not in the range x>=1"),
    (("--batch-size", "-1"), "Invalid value for '--batch-size': -1 is not in the range x>=1"),
    (("--eval-every", "0"), "Invalid value for '--eval-every': 0 is not in the range x>=1"),
    (("--save-every", "0"), "Invalid value for '--save-every': 0 is not in the range x>=1"),
    (("--steps", "0"), "Invalid value for '--steps': 0 is not in the range x>=1"),
    (("--steps", "-3"), "Invalid value for '--steps': -3 is not in the range x>=1"),
    (("--epochs", "inf"), "Invalid value for '--epochs': 'inf' is not a finite number"),
    (("--epochs", "0"), "Invalid value for '--epochs': 0 is not in the range x>0"),
    (("--epochs", "-2"), "Invalid value for '--epochs': -2 is not in the range x>0"),
    (("--lr", "inf"), "Invalid value for '--lr': 'inf' is not a finite number"),
    (("--lr", "nan"), "Invalid value for '--lr': 'nan' is not a finite number"),
    (("--lr", "1e39"), "Invalid value for '--lr': 1e39 is not in the range x>0 and x<=1e+30"),
    (("--seed", "-1"), "Invalid value for '--seed': -1 is not in the range 0<=x<=9223372036854775807"),
    (("--strong-ops", "16"), "Invalid value for '--strong-ops': 16 is not in the range 1<=x<=15"),
    (("--device", "tpu"), "Invalid value for '--device': 'tpu' is not a device; use auto, cpu, cuda, cuda:N or mps"),
    (("--name", "../x"), "Invalid value for '--name': must be a plain folder name inside --out"),
    (("--name", "/tmp/abs"), "Invalid value for '--name': must be a plain folder name inside --out"),
    (("--name", "a/b"), "Invalid value for '--name': must be a plain folder name inside --out"),
    (("--cls-val-fraction", "1.5"), "--cls-val-fraction: expected a number with 0 <= F < 1, got '1.5'"),
    (("--cls-val-fraction", "-0.1"), "--cls-val-fraction: expected a number with 0 <= F < 1, got '-0.1'"),
    (("--cls-val-fraction", "abc"), "--cls-val-fraction: expected a number with 0 <= F < 1, got 'abc'"),
    (("--cls-labels", "0"), "--cls-labels: expected a positive whole number or 'all', got 0"),
    (("--cls-labels", "ten"), "--cls-labels: expected a positive whole number or 'all', got 'ten'"),
    (("--select-by", "seg/dice"), "--select-by seg/dice: 'seg' is not a task of this run (tasks: cls)"),
    (("--select-by", "dice"), "Invalid value for '--select-by': expected 'mean' or TASK/METRIC (e.g. seg/dice), got 'dice'"),
])
def test_bad_command_line_values_name_the_option_and_range(tmp_path, args, message):
    text = one_line_error(check("--task", "cls", *args, out=tmp_path))
    assert message in text


@pytest.mark.parametrize("args, message", [
    (("--task", "cls:fixmatch:weight=nan"), "strategy 'fixmatch': option weight: input should be a finite number, got nan"),
    (("--task", "cls:fixmatch:threshold=1.5"), "strategy 'fixmatch': option threshold: must satisfy 0.0 <= x <= 1.0, got 1.5"),
    (("--task", "cls:fixmatch+fixmatch"), "task spec 'cls:fixmatch+fixmatch' lists strategy 'fixmatch' twice"),
    (("--task", "cls:kl+kl-consistency"), "lists strategy 'kl' twice (under two names)"),
    (("--task", "cls:fixmatch:threshold=0.9,threshold=0.8"), "option 'threshold' of 'fixmatch' is given twice"),
    (("--task", "cls", "--cls-data", "synthetic:prevalence=2"), "source 'synthetic': option prevalence: must satisfy 0.0 <= x <= 1.0, got 2"),
    (("--task", "cls", "--cls-data", "synthetic:n=-3"), "source 'synthetic': option n: must satisfy 1 <= x <= 10000000, got -3"),
    (("--task", "cls", "--cls-test", "synthetic:domain=9"), "source 'synthetic': option domain: must satisfy 0 <= x <= 3, got 9"),
    (("--task", "cls", "--backbone", "timm:model=nosuch"), "backbone 'timm': unknown timm model 'nosuch'"),
    (("--task", "cls", "--backbone", "unet:dropout=1"), "backbone 'unet': option dropout: must satisfy 0.0 <= x < 1.0, got 1"),
    (("--task", "seg:alpha=-1"), "task 'seg': option alpha: must satisfy x >= 0.0, got -1"),
    (("--task", "cls:classes=1"), "task 'cls': option classes: must satisfy x >= 2, got 1"),
    (("--task", "cls:mixmatch:T=0"), "strategy 'mixmatch': option T: must satisfy x > 0.0, got 0"),
    (("--task", "seg:kl:pairing=random"), "option pairing: input should be 'mean' or 'index', got 'random'"),
    (("--task", "cls", "--task", "seg", "--bridge", "saliency:stride=0"), "bridge 'saliency': option stride: must satisfy x >= 1, got 0"),
    (("--task", "cls", "--backbone", "unet:widths=nan"), "backbone 'unet': option widths: expected positive channel counts such as 16-32-64-128-256, got nan"),
    (("--task", "cls", "--backbone", "unet:widths=16-0-64"), "backbone 'unet': option widths: expected positive channel counts such as 16-32-64-128-256, got '16-0-64'"),
    (("--task", "seg", "--seg-data", "synthetic:structures=lungs+lungs"), "source 'synthetic': option structures: must be distinct names from lungs, heart joined by '+', got 'lungs+lungs'"),
    (("--task", "cls", "--cls-data", "folders:imgs:channels=0"), "source 'folders': option channels: must satisfy x >= 1, got 0"),
    (("--task", "cls", "--cls-data", "folders:imgs:group=("), "source 'folders': option group: not a valid regular expression (missing ), unterminated subpattern at position 0), got '('"),
    (("--task", "seg", "--seg-data", "pairs:a,b:channels=-1"), "source 'pairs': option channels: must satisfy x >= 1, got -1"),
    (("--task", "cls", "--cls-data", "kermany:x:split="), "source 'kermany': option split: string should have at least 1 character, got ''"),
    (("--task", "seg", "--seg-data", "jsrt:x:structures=lungs+liver"), "source 'jsrt': option structures: must be names from lungs, heart, clavicles joined by '+', got 'lungs+liver'"),
    (("--task", "seg", "--seg-data", "jsrt:x:invert=maybe"), "source 'jsrt': option invert: input should be a valid boolean"),
    (("--task", "cls", "--cls-data", "nih:x:classes=Pneumonia"), "source 'nih': option classes: needs at least two findings separated by '|', got 'Pneumonia'"),
    (("--task", "cls", "--cls-data", "montgomery:x:split=train"), "source 'montgomery': unknown option(s) split; known: none"),
    (("--task", "cls", "--log", "tensorboard:dir="), "logger 'tensorboard': option dir: string should have at least 1 character, got ''"),
    (("--task", "cls", "--log", "tensorboard:logdir=x"), "logger 'tensorboard': unknown option(s) logdir; known: dir"),
])
def test_bad_spec_options_name_the_component_option_and_range(tmp_path, args, message):
    assert message in one_line_error(check(*args, out=tmp_path))


def test_a_bad_spec_stops_training_before_any_folder_is_made(tmp_path):
    args = tiny_train_args("cls", out=tmp_path / "runs", extra=("--cls-test", "synthetic:prevalence=7"))
    text = one_line_error(invoke(args))
    assert "option prevalence" in text
    assert not (tmp_path / "runs").exists()


def test_check_prints_the_resolved_config_and_trains_nothing(tmp_path):
    result = check("--task", "cls:fixmatch", "--size", "32", "--cls-labels", "all", out=tmp_path / "runs")
    assert result.exit_code == 0, result.output
    config = RunConfig.from_dict(json.loads(result.stdout), origin="--check output")
    assert config.tasks == ["cls:fixmatch"] and config.size == 32 and config.data["cls"].labels == "all"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, message", [
    ('size = "64"\n', "size: input should be a valid integer, got '64'"),
    ("size = 64.0\n", "size: input should be a valid integer, got 64.0"),
    ("batch_size = [1]\n", "batch_size: input should be a valid integer, got [1]"),
    ("data = 3\n", "data: input should be a valid dictionary, got 3"),
    ("size = -5\n", "size: must satisfy x >= 1, got -5"),
    ("steps = 0\n", "steps: must satisfy x >= 1, got 0"),
    ("epochs = -1.0\n", "epochs: must satisfy x > 0, got -1.0"),
    ("lr = inf\n", "lr: input should be a finite number, got inf"),
    ("lr = nan\n", "lr: input should be a finite number, got nan"),
    ("skip_bad = 1\n", "skip_bad: input should be a valid boolean, got 1"),
    ('device = "tpu"\n', "device: string should match pattern"),
    ('name = "../escape"\n', "name: must be a plain folder name inside --out"),
    ('tasks = [1]\n', "tasks.0: input should be a valid string, got 1"),
    ("[data.cls]\nval_fraction = 1.5\n", "data.cls.val_fraction: must satisfy 0.0 <= x < 1.0, got 1.5"),
    ("[data.cls]\nlabels = 0\n", "data.cls.labels: expected a positive whole number or 'all', got 0"),
    ("[data.cls]\ntrain = 5\n", "data.cls.train: input should be a valid string, got 5"),
    ("[data]\ncls = 5\n", "data.cls: input should be a valid dictionary"),
    ("sise = 64\n", "unknown key(s) sise; known: amp, architecture, backbone"),
])
def test_config_file_type_and_range_errors_name_the_file_and_key(tmp_path, text, message):
    file = tmp_path / "run.toml"
    file.write_text('tasks = ["cls"]\n' + text if not text.startswith("tasks") else text)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(load_config_file(file), origin=str(file))
    assert str(info.value).startswith(f"{file}: ") and message in str(info.value)
    assert "\n" not in str(info.value)
    line = one_line_error(invoke(["train", "--config", str(file), "--out", str(tmp_path / "runs")]))
    assert message in line and str(file) in line
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_settings_it_would_ignore(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    text = one_line_error(invoke(["train", "--resume", str(run), "--task", "seg", "--size", "32",
                                  "--cls-labels", "5"]))
    assert "--resume continues a run with the settings in its config.json" in text
    assert "--size" in text and "--task" in text and "--cls-labels" in text


def test_run_names_cannot_leave_out(tmp_path):
    from mtssl.run.rundir import RunDir

    for name in ("../x", "/abs", "a/../../b", ".."):
        with pytest.raises(ValueError, match="plain folder name"):
            RunDir.create(RunConfig(out=str(tmp_path / "runs"), name=name))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("code, expected", [(errno.ENOSPC, "No space left on device"),
                                           (errno.EROFS, "Read-only file system")])
def test_a_full_or_read_only_disk_is_one_line_naming_the_path(tmp_path, monkeypatch, code, expected):
    import os

    from mtssl.run import checkpoint

    def refuse(tensors, path, metadata=None):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(checkpoint, "atomic_save", refuse)
    text = one_line_error(invoke(tiny_train_args("cls", out=tmp_path, steps=1)))
    assert expected in text and ".safetensors" in text

    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    text = one_line_error(invoke(tiny_train_args("cls", out=tmp_path / "ro", steps=1)))
    assert f"{tmp_path / 'ro'}" in text and "Read-only file system" in text


@pytest.mark.parametrize("fraction", [1.0, 1.5, -0.5, float("nan")])
def test_a_validation_fraction_out_of_range_is_an_error_not_a_hang(fraction):
    with pytest.raises(ValueError, match="validation fraction"):
        split_indices(20, None, 0, fraction, labels=[0, 1] * 10)


def test_a_validation_fraction_leaving_no_training_images_is_an_error():
    with pytest.raises(ValueError, match="leaves no training images"):
        split_indices(3, None, 0, 0.9, labels=[0, 1, 0])


def test_grid_file_run_settings_are_typed_and_ranged(tmp_path):
    file = tmp_path / "grid.toml"
    file.write_text('[models]\nEnc = "--task cls"\n[run]\nsize = "64"\nsteps = 0\n')
    text = one_line_error(invoke(["bench", "grid", "--grid", str(file), "--out", str(tmp_path / "g")]))
    assert f"{file}: run: " in text and "size: input should be a valid integer, got '64'" in text
    assert "steps: must satisfy x >= 1, got 0" in text
    assert not (tmp_path / "g").exists()


def test_the_validation_rules_cover_every_config_field():
    """A field added to RunConfig or TaskData needs its type and range in mtssl/run/settings.py."""
    from dataclasses import fields

    from mtssl.run.config import TaskData
    from mtssl.run.settings import RunSettings, TaskDataSettings

    assert set(RunSettings.model_fields) == {f.name for f in fields(RunConfig)}
    assert set(TaskDataSettings.model_fields) == {f.name for f in fields(TaskData)}
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()  # the defaults agree
