"""A grid stopped by SIGTERM inside a cell: one line with the command to continue, exit 143, no traceback; that
command resumes the cell from its checkpoint and ends with the weights and log of a grid never stopped."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import torch

from conftest import flat, invoke, read_metrics
from mtssl.run import checkpoint
from mtssl.run import state as run_state
from test_stop_resume import committed_step, log_lines, wait_for

CELLS = ("Enc__cls-8__s0", "Enc__cls-8__s1")


def grid_args(out: Path) -> list[str]:
    """Two cells of four 32 px steps; ``last`` is saved at step 2 and 4, validation after every step."""
    return ["bench", "grid", "--out", str(out), "--model", "Enc=--task cls:fixmatch", "--seeds", "2", "--size", "32",
            "--steps", "4", "--batch-size", "2", "--eval-every", "1", "--save-every", "2", "--precision", "fp32",
            "--cls-data", "synthetic:n=24", "--cls-labels", "8"]


def weights(run: Path, tag: str) -> dict[str, torch.Tensor]:
    return checkpoint.load(run / "checkpoints" / f"{tag}.safetensors")[0]


def assert_same_cell(run: Path, reference: Path) -> None:
    for tag in ("last", "best"):
        mine, theirs = weights(run, tag), weights(reference, tag)
        assert mine.keys() == theirs.keys()
        assert [k for k in mine if not torch.equal(mine[k], theirs[k])] == [], tag
    assert log_lines(run) == log_lines(reference)


def test_sigterm_stops_a_grid_cleanly_and_the_printed_command_resumes_it_bit_exactly(tmp_path):
    reference = invoke(grid_args(tmp_path / "reference"))
    assert reference.exit_code == 0, reference.output

    out = tmp_path / "grid with space"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           run_state.PAUSE_ENV: "2:3"}  # the save of step 2 waits 3 s before committing: the signal lands there
    child = subprocess.Popen([sys.executable, "-c", "from mtssl.cli.app import main; main()", *grid_args(out)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = out / "runs" / CELLS[0]
    wait_for((run / "checkpoints" / "state" / "last-00000002-rank0.safetensors").exists, child, "the save of step 2")
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate()
    assert child.returncode == 143, err
    assert "Traceback" not in err
    assert f"Stopped: stopped by SIGTERM in cell {CELLS[0]} after step 2 (its checkpoint is kept)" in err
    assert committed_step(run) == 2
    assert not (out / "cells").exists()  # nothing recorded as finished or failed
    trained = read_metrics(run)
    assert [line["step"] for line in trained] == [1, 2]

    command = shlex.split(err.split("continue with: ", 1)[1].strip())
    assert command[:3] == ["mtssl", "bench", "grid"]
    resumed = invoke(command[1:])
    assert resumed.exit_code == 0, resumed.output
    assert flat(f"[1/2] {CELLS[0]}: resuming at step 2/4") in flat(resumed.stderr)
    assert flat(f"[2/2] {CELLS[1]}: training") in flat(resumed.stderr)
    assert read_metrics(run)[:2] == trained  # steps 1 and 2 were not trained again (their step times are kept)
    for cell in CELLS:
        assert_same_cell(out / "runs" / cell, tmp_path / "reference" / "runs" / cell)
        record, expected = (json.loads((root / "cells" / f"{cell}.json").read_text())
                            for root in (out, tmp_path / "reference"))
        assert record["status"] == "ok" and record["metrics"] == expected["metrics"]

    again = invoke(command[1:])
    assert again.exit_code == 0 and again.stderr.count("done earlier, skipped") == 2
