"""Faults around a run's start and its saves: signals during start-up, a plugin calling sys.exit, a full disk."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections import namedtuple

import pytest

from conftest import flat, invoke, tiny_train_args

# Sends itself the signal while the training data is being prepared (start-up, before the first step).
SIGNAL_IN_STARTUP = """
import os, signal, sys
import mtssl.training.trainer as trainer
real = trainer.prepare_task_data
def prepare(*args, **kwargs):
    os.kill(os.getpid(), signal.{name})
    return real(*args, **kwargs)
trainer.prepare_task_data = prepare
from mtssl.cli.app import main
main()
"""


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_during_start_up_stops_cleanly_and_frees_the_name(tmp_path, name, code):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = tiny_train_args("cls", out=tmp_path, name="real1")
    child = subprocess.run([sys.executable, "-c", SIGNAL_IN_STARTUP.format(name=name), *args], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == code, child.stderr
    assert "Stopped:" in child.stderr and "start-up" in flat(child.stderr)
    assert "Aborted!" not in child.stderr and "Traceback" not in child.stderr
    assert list(tmp_path.iterdir()) == []  # no folder, no lock
    again = invoke(args)
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().splitlines()[-1] == str(tmp_path / "real1")


def test_a_plugin_calling_sys_exit_0_in_its_loss_is_an_error(tmp_path, monkeypatch):
    from mtssl_plugins.strategies.fixmatch import FixMatch

    real, calls = FixMatch.loss, []

    def loss(self, inputs):
        calls.append(1)
        if len(calls) == 2:
            sys.exit(0)
        return real(self, inputs)

    monkeypatch.setattr(FixMatch, "loss", loss)
    result = invoke(tiny_train_args("cls:fixmatch", out=tmp_path, name="run", steps=3))
    assert result.exit_code == 1
    message = flat(result.stderr)
    assert "calledsys.exit(0)duringtrainingatstep2" in message and "test_startup_faults.py" in message
    assert not (tmp_path / "run" / "summary.json").exists()


def test_disk_full_during_a_save_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    import mtssl.run.checkpoint as checkpoint

    real, calls = checkpoint.save_file, []

    def save_file(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:  # step 1 writes best, its state and last; step 2 finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    run = tmp_path / "run"
    result = invoke(tiny_train_args("cls", out=tmp_path, name="run", steps=3))
    assert result.exit_code == 2
    (error,) = [line for line in result.stderr.splitlines() if not line.startswith("Warning:")]
    assert error.startswith("Error:") and "Traceback" not in result.output
    message = flat(error)
    assert message.startswith(flat(f"Error: {run / 'checkpoints'}")) and "(Nospaceleftondevice)" in message
    assert "(step1)" in message and flat(f"mtssl train --resume {run}") in message
    assert not [p for p in (run / "checkpoints").rglob("*.tmp")]
    monkeypatch.setattr(checkpoint, "save_file", real)
    assert invoke(["train", "--resume", str(run)]).exit_code == 0


def test_too_little_free_space_is_warned_before_training_with_an_estimate(tmp_path, monkeypatch, host):
    import shutil

    from conftest import tiny_trainer
    from mtssl.training.checkpointing import checkpoint_bytes

    trainer = tiny_trainer(host, tmp_path / "measure", ["cls:fixmatch", "seg:kl"], ["saliency"])
    trainer.fit()
    written = sum(p.stat().st_size for p in trainer.run.checkpoints.rglob("*.safetensors"))
    assert written <= checkpoint_bytes(trainer) <= 3 * written  # covers what a run writes, without crying wolf

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**20, 10 * 2**20 - 2**19, 2**19))
    result = invoke(tiny_train_args("cls", out=tmp_path / "runs", name="run", steps=1))
    assert "Warning:" in result.stderr and "0MBfree,butthecheckpointsneedabout" in flat(result.stderr)


def test_sigterm_while_a_resume_starts_leaves_the_run_resumable(tmp_path, host):
    from conftest import tiny_trainer
    from mtssl.training.stopping import TrainingStopped

    trainer = tiny_trainer(host, tmp_path, ["cls"], steps=3)
    with pytest.raises(TrainingStopped):
        trainer.fit(on_step=lambda step, logs: trainer.stop.request() if step == 1 else None)
    run = trainer.run.path
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    child = subprocess.run([sys.executable, "-c", SIGNAL_IN_STARTUP.format(name="SIGTERM"), "train", "--resume",
                            str(run)], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == 143, child.stderr
    assert flat(f"SIGTERM during start-up, before the first step; {run} is as it was") in flat(child.stderr)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # no lock left, nothing removed
    resumed = invoke(["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert "atstep1/3" in flat(resumed.output)
