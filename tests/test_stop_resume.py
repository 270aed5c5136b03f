"""Every stop resumes bit-exactly: SIGINT, SIGTERM and SIGKILL at any moment (inside a save too), stop requests
on every kind of step boundary; the resumed run ends with the weights, optimizer state and log of a run that
was never stopped."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import invoke, spaced, read_metrics, tiny_train_args, tiny_trainer
from run_files import state_tensors
from mtssl.run import checkpoint
from mtssl.run import state as run_state
from mtssl.training.stopping import TrainingStopped

TASKS = ("cls:fixmatch",)
EXTRA = ("--save-every", "2", "--eval-every", "3")  # later flags override the defaults



def log_lines(run: Path) -> list[dict]:
    return [{k: v for k, v in line.items() if k != "step_time"} for line in read_metrics(run)]


def assert_same_run(run: Path, reference: Path) -> None:
    mine, theirs = state_tensors(run), state_tensors(reference)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine), [k for k in mine if not torch.equal(mine[k], theirs[k])]
    best, ref_best = (checkpoint.load(r / "checkpoints" / "best.safetensors")[0] for r in (run, reference))
    assert all(torch.equal(best[k], ref_best[k]) for k in ref_best)
    assert log_lines(run) == log_lines(reference)


_REFERENCES: dict[int, Path] = {}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``reference(steps)``: the run directory of an uninterrupted run (trained once per module)."""
    def get(steps: int = 6) -> Path:
        if steps not in _REFERENCES:
            out = tmp_path_factory.mktemp("reference")
            result = invoke(tiny_train_args(*TASKS, out=out, name="ref", steps=steps, extra=EXTRA))
            assert result.exit_code == 0, result.output
            _REFERENCES[steps] = out / "ref"
        return _REFERENCES[steps]

    return get


def start(out: Path, env_extra: dict[str, str] | None = None, resume: Path | None = None,
          steps: int = 6) -> subprocess.Popen:
    """``mtssl train`` in a child process (single-threaded, like the tests, so the numbers match)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop(run_state.PAUSE_ENV, None)
    env.update(env_extra or {})
    args = (["train", "--resume", str(resume)] if resume
            else tiny_train_args(*TASKS, out=out, name="run", steps=steps, extra=EXTRA))
    return subprocess.Popen([sys.executable, "-c", "from mtssl.cli.app import main; main()", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, what: str, limit: float = 300.0) -> bool:
    """True once ``condition()`` holds; False if the child finished its run first."""
    deadline = time.monotonic() + limit  # only a guard against a hung child; nothing depends on speed
    while not condition():
        if process.poll() is not None:
            if process.returncode == 0:
                return False
            raise AssertionError(f"child exited ({process.returncode}) before {what}: {process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)
    return True


def committed_step(run: Path) -> int:
    """The step of the committed checkpoint (0 when none), from the weights file's metadata alone."""
    path = run / "checkpoints" / "last.safetensors"
    if not path.exists():
        return 0
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["resume"])["step"]


def finish(run: Path) -> None:
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output


PAUSE = {run_state.PAUSE_ENV: "4:3"}  # the save of step 4 sleeps between writing its state and committing it


def test_sigkill_inside_a_save_leaves_the_previous_pair_and_resumes_bit_exactly(tmp_path, reference):
    child = start(tmp_path, PAUSE)
    run = tmp_path / "run"
    pending = run / "checkpoints" / "state" / "last-00000004-rank0.safetensors"
    wait_for(pending.exists, child, "the state file of step 4")
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert committed_step(run) == 2 and pending.exists()  # new state written, weights + manifest still step 2
    assert [line["step"] for line in read_metrics(run)] == [1, 2, 3, 4]
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "at step 2/6" in spaced(result.stderr)
    assert_same_run(run, reference())
    assert sorted(p.name for p in (run / "checkpoints" / "state").iterdir()) == ["last-00000006-rank0.safetensors"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_inside_a_save_finishes_it_prints_the_resume_command_and_exits_128_plus_n(tmp_path, reference, signum):
    child = start(tmp_path, PAUSE)
    run = tmp_path / "run"
    wait_for((run / "checkpoints" / "state" / "last-00000004-rank0.safetensors").exists, child, "the save of step 4")
    child.send_signal(signum)
    _, err = child.communicate()
    assert child.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name} after step 4" in spaced(err)
    assert f"resume with: mtssl train --resume {run}" in spaced(err)
    assert committed_step(run) == 4
    finish(run)
    assert_same_run(run, reference())


def test_sigterm_sigint_and_sigkill_at_random_moments_still_end_bit_exact(tmp_path, reference):
    """Signal the same run again and again at random delays after each new checkpoint, resuming in between."""
    draw = random.Random(7)
    run = tmp_path / "run"
    child, signalled, finished = start(tmp_path, steps=8), [], False
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        done = committed_step(run)
        if not wait_for(lambda: committed_step(run) > done, child, "a new checkpoint"):
            break
        time.sleep(draw.uniform(0, 0.25))  # within the next steps: 8 tiny steps end in about a second
        child.send_signal(signum)
        _, err = child.communicate()
        ended = "Done:" in spaced(err) or "after the run finished all 8 steps" in spaced(err)
        if child.returncode == 0 or (committed_step(run) == 8 and ended):
            finished = True  # the run ended before the signal arrived (on a loaded machine it may land at exit)
            break
        expected = -signal.SIGKILL if signum == signal.SIGKILL else 128 + signum
        assert child.returncode == expected, err
        if signum != signal.SIGKILL:
            assert f"resume with: mtssl train --resume {run}" in spaced(err)
        lines = read_metrics(run)
        assert [line["step"] for line in lines][:committed_step(run)] == list(range(1, committed_step(run) + 1))
        signalled.append(signum)
        child = start(tmp_path, resume=run)
    if not finished:
        child.communicate()
        assert child.returncode in (0, -signal.SIGKILL)
        if child.returncode != 0:
            finish(run)
    assert signalled
    assert_same_run(run, reference(8))


@pytest.mark.parametrize("save_every,eval_every,stop_after", [(100, 2, 3), (2, 3, 3), (4, 1, 5), (1, 4, 2)])
def test_stop_request_on_any_step_boundary_resumes_bit_exactly(host, tmp_path, save_every, eval_every, stop_after):
    settings = dict(steps=5, save_every=save_every, eval_every=eval_every, seed=2)
    straight = tiny_trainer(host, tmp_path / "straight", list(TASKS), **settings)
    straight.fit()
    stopped = tiny_trainer(host, tmp_path / "stopped", list(TASKS), **settings)

    def stop(step, logs):
        if step == stop_after:
            stopped.stop.request(signal.SIGTERM)

    with pytest.raises(TrainingStopped) as info:
        stopped.fit(on_step=stop)
    assert info.value.step == stop_after and info.value.exit_code == 143
    run = stopped.run.path
    assert committed_step(run) == stop_after
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert f"at step {stop_after}/5" in spaced(result.stderr)
    assert_same_run(run, straight.run.path)


def test_keyboard_interrupt_inside_a_step_saves_nothing_half_done(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, list(TASKS), steps=4, save_every=100, eval_every=100)
    calls = []
    original = trainer.augmenter.forward

    def interrupt_in_step_three(*args, **kwargs):
        calls.append(1)
        if trainer.step == 2 and len(calls) > 4:  # a real Ctrl-C lands anywhere inside the step
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    trainer.augmenter.forward = interrupt_in_step_three
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    # the generators and streams are already in step 3: saving now would pair them with step 2's weights
    assert trainer.step == 2 and trainer.saved_step is None
    assert not (trainer.run.checkpoints / "last.safetensors").exists()


def test_resume_refuses_a_state_file_of_another_step(tmp_path):
    result = invoke(tiny_train_args("cls", out=tmp_path, name="r", steps=2))
    assert result.exit_code == 0
    state = tmp_path / "r" / "checkpoints" / "state"
    (state / "last-00000002-rank0.safetensors").unlink()
    (tmp_path / "r" / "summary.json").unlink()  # as if it crashed after its last save: not finished
    first = invoke(tiny_train_args("cls", out=tmp_path, name="s", steps=1))
    assert first.exit_code == 0
    (tmp_path / "s" / "checkpoints" / "state" / "last-00000001-rank0.safetensors").rename(
        state / "last-00000002-rank0.safetensors")
    result = invoke(["train", "--resume", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "holds step 1 of rank 0, but last.safetensors is step 2 of rank 0: mismatched checkpoint pair" in spaced(
        result.stderr)
