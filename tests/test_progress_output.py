"""Training progress where users read it: a batch job's log file, and an 80-column terminal."""
from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
from rich.console import Console

from conftest import tiny_train_args
from mtssl.console.progress import TrainingProgress, format_logs, significant

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.parametrize("value, text", [
    (2e-4, "2.00e-04"), (0.000143115, "1.43e-04"), (0.758124, "0.758"), (4.3203, "4.32"), (0.0381, "0.0381"),
    (12.345, "12.3"), (1234.5, "1230"), (9.9996, "10.0"), (-0.5, "-0.500"), (2.5e6, "2.50e+06"), (0.0, "0"),
    (float("nan"), "nan"),
])
def test_significant_digits(value, text):
    assert significant(value) == text


def test_a_small_loss_term_keeps_its_digits():
    assert format_logs({"loss": 4.32, "seg/kl": 1.43e-4}) == "loss 4.32 · seg/kl 1.43e-04"


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def plain_progress(total: int, every: float, verbose: bool = False):
    out, clock = io.StringIO(), FakeClock()
    console = Console(file=out, width=80)  # a file: not a terminal
    return out, clock, TrainingProgress(console, total, every=every, verbose=verbose, now=clock)


def test_plain_lines_come_every_n_seconds_and_at_the_end():
    out, clock, progress = plain_progress(6, every=30)
    with progress:
        for step, t in zip(range(1, 7), (10, 20, 30, 45, 50, 55)):
            clock.t = t
            progress.update(step, {"loss": 1.0, "cls/sup": 0.5, "step_time": 10.0})
    lines = out.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == ["step 1/6", "step 4/6", "step 6/6"]
    assert lines[1] == "step 4/6 · 10.0 s/step · elapsed 0:45 · ETA 0:20 · loss 1.00 · cls/sup 0.500"


def test_a_stop_between_two_lines_still_prints_where_it_stopped():
    out, clock, progress = plain_progress(6, every=30)
    with progress:
        progress.update(1, {"loss": 1.0, "step_time": 1.0})
        clock.t = 5
        progress.update(2, {"loss": 0.9, "step_time": 1.0})
    assert [line.split(" · ")[0] for line in out.getvalue().splitlines()] == ["step 1/6", "step 2/6"]


def test_validation_scores_and_warnings_print_when_computed():
    out, clock, progress = plain_progress(10, every=1000)
    with progress:
        progress.update(1, {"loss": 1.0, "step_time": 1.0})
        progress.update(2, {"loss": 1.0, "step_time": 1.0, "val/cls/acc": 0.74, "val/score": 0.74},
                        ["cls · validation: every image predicted PNEUMONIA"])
    lines = out.getvalue().splitlines()
    assert "val 2/10 · cls/acc 0.740 · score 0.740" in lines
    assert "Warning: cls · validation: every image predicted PNEUMONIA" in lines


def test_fields_that_never_change_are_left_out():
    out, clock, progress = plain_progress(3, every=0, verbose=True)
    with progress:
        for step, learned in zip((1, 2, 3), (1.0, 1.0, 0.8)):
            progress.update(step, {"loss": 1.0, "weight/cls": 1.0, "weight/seg": learned, "step_time": 1.0})
    lines = out.getvalue().splitlines()
    assert all("weight/cls" not in line for line in lines)
    assert "weight/seg" not in lines[1] and lines[2].endswith("weight/seg 0.800")


def run_file(tmp_path, *extra: str) -> list[str]:
    """Train as a batch job would: stdout and stderr redirected to one file."""
    log = tmp_path / "job.log"
    args = tiny_train_args("cls:fixmatch", "seg:kl", bridges=("saliency",), out=tmp_path, steps=2)
    args.remove("--quiet")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MTSSL_PROGRESS_EVERY": "0"}
    with open(log, "w") as handle:
        subprocess.run([sys.executable, "-m", "mtssl", *args, *extra], stdout=handle, stderr=subprocess.STDOUT,
                       env=env, timeout=300, check=True)
    return log.read_text().splitlines()


def test_a_run_written_to_a_file_prints_plain_progress_and_validation_lines(tmp_path):
    lines = run_file(tmp_path)
    progress = [line for line in lines if line.startswith("step ")]
    assert [line.split(" · ")[0] for line in progress] == ["step 1/2", "step 2/2"]
    assert re.search(r" · [\d.e+-]+ s/step · elapsed \d+:\d\d · ETA \d+:\d\d · loss \S+ · cls/sup ", progress[-1])
    assert "seg/kl " in progress[-1] and " 0.000 " not in progress[-1]
    assert any(re.fullmatch(r"val 2/2 · cls/acc \S+ · seg/dice \S+ · score \S+", line) for line in lines)


def run_in_terminal(args: list[str], columns: int = 80) -> str:
    """Run ``mtssl`` in a pseudo-terminal ``columns`` wide; return everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": str(columns), "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen([sys.executable, "-m", "mtssl", *args], stdin=slave, stdout=slave, stderr=slave,
                               env=env, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
        process.wait(timeout=60)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_an_80_column_terminal_shows_step_elapsed_and_eta_uncut(tmp_path):
    args = tiny_train_args("cls:fixmatch", "seg:kl", bridges=("saliency",), out=tmp_path, steps=2)
    args.remove("--quiet")
    screen = ANSI.sub("", run_in_terminal(args))
    lines = [line for line in re.split(r"[\r\n]+", screen) if line.strip()]
    uncut = r"\b2/2 · \d+:\d\d · ETA \d+:\d\d · loss \S+ · cls mask \d+%"
    assert any(re.search(uncut, line) for line in lines), lines
    progress = [line for line in lines if line.startswith("train ")]
    assert progress and max(len(line) for line in progress) <= 80
