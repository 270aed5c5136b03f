"""Stopping on SIGINT/SIGTERM at a step boundary, so the saved checkpoint is a consistent one.

Ctrl-C used to raise KeyboardInterrupt in the middle of a step and save
the weights of step k with the generators already advanced into step
k + 1; SIGTERM (what SLURM and torchrun send) saved nothing. Now the first
signal only sets a flag: the trainer finishes the step it is in, saves
``last``, and raises :class:`TrainingStopped`, whose exit code is the
shell's 128 + signal number (130 for SIGINT, 143 for SIGTERM). A second
signal gets the previous handler and acts at once; the last committed
checkpoint stays intact either way.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class StopRequest:
    """Set by a signal handler (or by code: :meth:`request`); read by the training loop between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def request(self, signum: int = signal.SIGTERM) -> None:
        if self.signum is None:
            self.signum = int(signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None


class TrainingStopped(BaseException):
    """Training stopped on request after saving ``last`` at ``step``.

    A BaseException, like KeyboardInterrupt: a stop is meant for the whole
    program, so code that carries on past failing work (``except Exception``,
    as the benchmark grid does per cell) must not swallow it.
    """

    def __init__(self, signum: int, step: int, run: str):
        self.signum, self.step, self.run = signum, step, run
        super().__init__(f"stopped by {signal_name(signum)} after step {step}; resume with: mtssl train --resume {run}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals(stop: StopRequest, signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequest]:
    """Route the first SIGINT/SIGTERM into ``stop`` (main thread only: Python delivers signals there)."""
    previous = {s: signal.getsignal(s) for s in signums}

    def handler(signum, frame):
        stop.request(signum)
        signal.signal(signum, previous[signum] if previous[signum] is not None else signal.SIG_DFL)

    with handling(signums, handler):
        yield stop


@contextmanager
def handling(signums: tuple[int, ...], handler) -> Iterator[None]:
    """``handler`` for ``signums`` inside the block, the previous handlers after it (main thread only:
    Python delivers signals there; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signums}
    for s in signums:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)


class StartupStopped(BaseException):
    """A SIGTERM before training started. Raised from the signal handler, so start-up unwinds (the lock is
    released, a new run's folder removed) instead of the process dying where it stands."""

    def __init__(self, signum: int, detail: str = ""):
        self.signum = signum
        super().__init__(f"{signal_name(signum)} {detail}".strip())

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextmanager
def stop_startup_on_signals(signums: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Turn SIGTERM into :class:`StartupStopped` while the run is being set up (Ctrl-C already raises)."""
    def handler(signum, frame):
        raise StartupStopped(signum)

    with handling(signums, handler):
        yield


class Terminated(StartupStopped):
    """A SIGTERM outside training's step boundaries and start-up (while the command checks its settings, after
    the last step, or a second signal that stops at once): the command ends with one line and 143 instead of
    dying where it stands."""


class CommandEnd:
    """Set ``finished`` once a command's work is done: a SIGTERM then has nothing left to stop."""

    finished = False


@contextmanager
def terminate_cleanly(signums: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[CommandEnd]:
    """For a whole command: SIGTERM raises :class:`Terminated` (training and start-up install their own
    handlers inside, and fall back to this one) until the command says it has finished."""
    end = CommandEnd()

    def handler(signum, frame):
        if not end.finished:
            raise Terminated(signum)

    with handling(signums, handler):
        yield end
