"""One writer per run directory: a live owner refuses a second writer, a dead one's lock is taken over."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import invoke, spaced, train_run
from mtssl.run.runlock import LOCK_FILE, RunLock, RunLockedError, pid_alive


def write_lock(run: Path, pid: int, host: str | None = None) -> Path:
    file = run / LOCK_FILE
    file.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01 00:00:00"}))
    return file


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    return child.pid


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_run("cls", out=tmp_path_factory.mktemp("runs"), steps=1)


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A fresh copy of one finished 1-step run."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def test_training_leaves_no_lock_behind(run):
    assert not (run / LOCK_FILE).exists()


def test_resume_while_a_live_process_owns_the_run_is_refused_naming_it(run):
    lock = write_lock(run, os.getpid())  # this very process: certainly alive
    result = invoke(["train", "--resume", str(run), "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    text = spaced(result.stderr)
    assert f"in use by pid {os.getpid()} on host {socket.gethostname()}" in text
    assert lock.exists()  # the owner's lock is left alone


HOLDER = """
import sys, time
from mtssl.run.runlock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_real_second_process_owns_the_run_until_it_dies(run):
    """Another process holds the run: resume is refused naming it; once it is killed, its lock is stale."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = invoke(["train", "--resume", str(run), "--quiet"])
        assert refused.exit_code == 2 and "Traceback" not in refused.output
        assert f"in use by pid {holder.pid} on host {socket.gethostname()}" in spaced(refused.stderr)
    finally:
        holder.kill()
        holder.wait()
    resumed = invoke(["train", "--resume", str(run), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert f"took over a stale lock of {run} left by pid {holder.pid}" in spaced(resumed.stderr)
    assert not (run / LOCK_FILE).exists()


def test_a_stale_lock_from_a_dead_process_is_taken_over_with_a_note(run):
    pid = dead_pid()
    write_lock(run, pid)
    result = invoke(["train", "--resume", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    text = spaced(result.stderr)
    assert "took over a stale lock" in text and f"pid {pid}" in text
    assert not (run / LOCK_FILE).exists()


def test_a_lock_from_another_host_is_never_taken_over(run):
    write_lock(run, dead_pid(), host="some-other-host")
    with pytest.raises(RunLockedError, match="on host some-other-host.*cannot be checked"):
        RunLock(run).acquire()


def test_an_unreadable_lock_is_not_taken_over(run):
    (run / LOCK_FILE).write_text("")
    with pytest.raises(RunLockedError, match="cannot be read"):
        RunLock(run).acquire()


def test_lock_is_exclusive_within_one_process_and_released_on_exit(tmp_path):
    with RunLock(tmp_path) as note:
        assert note is None
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(RunLockedError, match="in use by pid"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path):  # free again
        pass
