"""``--threads`` (config key ``threads``) and the start-up warning on a machine that is already busy."""
from __future__ import annotations

import json
import os

import click
import pytest
import torch

from conftest import invoke, tiny_train_args
from mtssl.bench.grid import grid_from_dict
from mtssl.errors import ConfigError
from mtssl.run.config import RunConfig
from mtssl.run.preflight import check_resume_options
from mtssl.run.threads import busy_machine_warning


@pytest.fixture
def torch_threads():
    """Start from two torch threads; put back what the session had."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


def load(monkeypatch, one_minute: float) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (one_minute, one_minute, one_minute))


def test_threads_sets_torch_threads_for_the_run(tmp_path, monkeypatch, torch_threads):
    from mtssl.training.trainer import Trainer

    seen, fit = [], Trainer.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    result = invoke(tiny_train_args("cls", out=tmp_path, steps=1, name="r", extra=("--threads", "1")))
    assert result.exit_code == 0, result.output
    assert seen == [1]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["threads"] == 1


def test_threads_is_a_checked_config_key_and_a_grid_run_key():
    assert RunConfig.from_dict({"threads": 3}).threads == 3
    with pytest.raises(ConfigError, match="threads"):
        RunConfig.from_dict({"threads": 0})
    assert grid_from_dict({"run": {"threads": 1}}).run == {"threads": 1}


def test_resume_takes_threads_like_device_but_no_run_setting():
    check_resume_options(None, [], {"threads": 1, "device": "cpu", "steps": None})
    with pytest.raises(click.UsageError, match="--steps"):
        check_resume_options(None, [], {"threads": 1, "steps": 5})


def test_a_busy_machine_is_named_with_the_option(monkeypatch, torch_threads, two_cores):
    load(monkeypatch, 3.5)
    warning = busy_machine_warning(None)
    assert "load average 3.5 on 2 core(s)" in warning and "--threads" in warning
    assert busy_machine_warning(1) is None  # the user already chose


def test_an_idle_machine_or_a_single_thread_says_nothing(monkeypatch, torch_threads, two_cores):
    load(monkeypatch, 1.9)
    assert busy_machine_warning(None) is None
    load(monkeypatch, 3.5)
    torch.set_num_threads(1)
    assert busy_machine_warning(None) is None


@pytest.mark.parametrize("one_minute, warned", [(4.0, True), (0.5, False)])
def test_train_warns_at_start_up_only_when_busy(tmp_path, monkeypatch, torch_threads, two_cores, one_minute, warned):
    load(monkeypatch, one_minute)
    result = invoke(tiny_train_args("cls", out=tmp_path, steps=1))
    assert result.exit_code == 0, result.output
    assert ("Warning: the machine is busy" in result.stderr) is warned
    assert ("--threads 1" in result.stderr) is warned
