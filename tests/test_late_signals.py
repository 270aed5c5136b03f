"""A SIGTERM outside training's step boundaries (after the last step, while the loggers flush) ends the
command with one line and 143, saying what the run holds, instead of killing it where it stands."""
from __future__ import annotations

import signal

from conftest import flat, invoke, tiny_train_args

LATE_LOGGER = '''
import os
import signal
import time

from mtssl.api import Logger, hookimpl


class SignalOnClose(Logger):
    """Receives SIGTERM while it flushes at the end of the run, as a batch system's time limit may send it."""

    def start(self, run_dir, config):
        pass

    def log_step(self, step, scalars):
        pass

    def close(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the handler runs here


@hookimpl
def register_loggers(register):
    register("late", SignalOnClose)
'''


def test_sigterm_while_the_loggers_close_after_the_last_step_is_one_line_and_143(plugin_factory, tmp_path):
    plugin_factory.install("mtssl-late", {"mtssl_demo_late": LATE_LOGGER}, {"late": "mtssl_demo_late"})
    before = signal.getsignal(signal.SIGTERM)
    result = invoke(tiny_train_args("cls", out=tmp_path, name="run", steps=2, extra=("--log", "late")))
    assert signal.getsignal(signal.SIGTERM) == before  # the command leaves the process's handler as it was
    assert result.exit_code == 143, result.output
    assert "Traceback" not in result.output
    assert "Stopped:SIGTERMaftertherunfinishedall2steps" in flat(result.stderr)
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").exists()  # the finished run is kept
