"""Progress displays: data decoding, and training progress for a terminal or for a log file.

In a terminal, training shows a live display whose first line always fits the
window (step/total, elapsed time, ETA, total loss, pseudo-label mask rates);
the per-term losses follow on a second line. Written to a file or a pipe (a
batch job's log), a live display would show nothing until the end, so
training prints one plain line every ``every`` seconds instead, and at the
end. Both print a line whenever the run validates, and any warning about it.
"""
from __future__ import annotations

import importlib.util
import math
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from mtssl.console.output import say

DEFAULT_EVERY_S = 30.0
"""Seconds between two plain progress lines when the output is not a terminal."""
SEPARATOR = " · "
BOOKKEEPING = {"step", "epoch", "lr", "step_time", "loss"}
NOT_TASKS = ("val/", "weight/", "weighting/", "grad_norm/", "grad_share/")
"""Prefixes of logged values that are not a task's loss terms."""
BAR_WIDTH = (8, 30)  # the terminal bar's narrowest and widest size; narrower than 8 and it is left out


@contextmanager
def decode_progress(console: Console) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yields ``factory(label, total) -> tick(n)`` that shows one bar per decoded source."""
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(),
                  console=console, transient=True) as progress:

        def factory(label: str, total: int) -> Callable[[int], None]:
            task_id = progress.add_task(label, total=total)
            return lambda n=1: progress.advance(task_id, n)

        yield factory


def significant(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits: 0.758, 4.32, 0.0381, 1234; below 0.01 or from 1e6 on,
    scientific (2.00e-04), so a small loss term never shows as 0.000."""
    value = float(value)
    if not math.isfinite(value) or value == 0:
        return "0" if value == 0 else str(value)
    value = float(f"{value:.{digits - 1}e}")  # round first: 9.9996 becomes 10.0, not 10.00
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude < -2 or magnitude >= 6:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{max(0, digits - 1 - magnitude)}f}"


def clock(seconds: float | None) -> str:
    """``h:mm:ss`` or ``m:ss``; ``-:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def bar(fraction: float, width: int) -> Text:
    """A ``width``-character bar filled to ``fraction``."""
    done = min(width, max(0, round(fraction * width)))
    return Text.assemble(("━" * done, "bar.complete"), ("━" * (width - done), "bar.back"))


def _is_loss_term(key: str) -> bool:
    """``TASK/TERM`` (``cls/sup``, ``seg/kl``): one of a task's loss terms."""
    return key.count("/") == 1 and not key.startswith(NOT_TASKS)


def loss_terms(logs: Mapping[str, float]) -> list[str]:
    """Every loss term of the step, ``cls/sup 0.758``."""
    return [f"{key} {significant(value)}" for key, value in logs.items() if _is_loss_term(key)]


def mask_rates(logs: Mapping[str, float]) -> list[str]:
    """The pseudo-label mask rate of each strategy that reports one, ``cls mask 30%``."""
    return [f"{key.split('/')[0]} mask {value:.0%}" for key, value in logs.items()
            if key.endswith("/mask_rate") and not key.startswith("val/")]


def format_logs(logs: Mapping[str, float]) -> str:
    """Compact one-line summary: total loss, each term, pseudo-label mask rates."""
    return SEPARATOR.join([f"loss {significant(logs['loss'])}", *loss_terms(logs), *mask_rates(logs)])


def validation_line(step: int, total: int, logs: Mapping[str, float]) -> str | None:
    """``val 100/300 · cls/acc 0.740 · seg/dice 0.593 · score 0.667``; None when the step did not validate."""
    scores = [f"{key[4:]} {significant(value)}" for key, value in logs.items()
              if key.startswith("val/") and isinstance(value, (int, float))]
    return SEPARATOR.join([f"val {step}/{total}", *scores]) if scores else None


class ChangingFields:
    """Logged values other than losses and mask rates (task weights, strategy statistics), each shown only
    once it has changed: a fixed task weight of 1.0 never needs a place on the line."""

    def __init__(self):
        self.first: dict[str, float] = {}
        self.changed: set[str] = set()

    def update(self, logs: Mapping[str, float]) -> list[str]:
        shown = []
        for key, value in logs.items():
            if (key in BOOKKEEPING or _is_loss_term(key) or key.endswith("/mask_rate") or key.startswith("val/")
                    or not isinstance(value, (int, float))):
                continue
            first = self.first.setdefault(key, value)
            if value != first and not (math.isnan(value) and math.isnan(first)):
                self.changed.add(key)
            if key in self.changed:
                shown.append(f"{key} {significant(value)}")
        return shown


class StepTimer:
    """Elapsed time, smoothed seconds per step and the ETA they give."""

    def __init__(self, total: int, now: Callable[[], float]):
        self.total, self.now = total, now
        self.started = now()
        self.per_step: float | None = None

    def update(self, step_time: float | None) -> None:
        if step_time:
            self.per_step = step_time if self.per_step is None else 0.9 * self.per_step + 0.1 * step_time

    def elapsed(self) -> float:
        return self.now() - self.started

    def eta(self, step: int) -> float | None:
        return None if self.per_step is None else max(0, self.total - step) * self.per_step

    def rate(self) -> str:
        return f"{significant(self.per_step)} s/step" if self.per_step else "- s/step"


class LiveLines:
    """The terminal display: line 1 fits the window and holds what matters, line 2 the other terms."""

    def __init__(self, owner: "TrainingProgress"):
        self.owner = owner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        owner = self.owner
        width = options.max_width
        logs = owner.logs
        first = [f"{owner.step}/{owner.total}", clock(owner.timer.elapsed()),
                 f"ETA {clock(owner.timer.eta(owner.step))}"]
        optional = ([f"loss {significant(logs['loss'])}"] if "loss" in logs else []) + mask_rates(logs)
        optional.append(owner.timer.rate())
        rest: list[str] = []
        for item in optional:  # in order of importance, while they fit beside the shortest bar
            if not rest and len("train ") + len(SEPARATOR.join(first + [item])) + 1 + BAR_WIDTH[0] <= width:
                first.append(item)
            else:
                rest.append(item)
        text = SEPARATOR.join(first)
        line = Text("train ", style="bold")
        room = width - len(line) - len(text) - 1
        if room >= BAR_WIDTH[0]:
            yield Text.assemble(line, bar(owner.step / max(owner.total, 1), min(room, BAR_WIDTH[1])), " ", text)
        else:
            yield Text.assemble(line, text)
        second = rest + loss_terms(logs) + (owner.details if owner.verbose else [])
        if second:
            yield Text(SEPARATOR.join(second), style="dim")


def shows_live(console: Console) -> bool:
    """Whether ``console`` can show a live display: a terminal, or a notebook with ipywidgets (which Rich
    draws it with there); otherwise plain lines."""
    if console.quiet:
        return False
    return console.is_terminal or (console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None)


class TrainingProgress:
    """Training progress on ``console``: a live display in a terminal, plain lines in a file or pipe.

    ``every`` is the seconds between plain lines (0: every step); ``verbose`` adds task weights and
    strategy statistics that change. ``alerts`` prints warnings when ``console`` is quiet (None: not at all).
    """

    def __init__(self, console: Console, total: int, completed: int = 0, every: float = DEFAULT_EVERY_S,
                 verbose: bool = False, alerts: Console | None = None, now: Callable[[], float] = time.monotonic):
        self.console, self.total, self.step = console, total, completed
        self.every, self.verbose = every, verbose
        self.alerts = alerts
        self.timer = StepTimer(total, now)
        self.logs: Mapping[str, float] = {}
        self.details: list[str] = []
        self.fields = ChangingFields()
        self.live = shows_live(console)
        self._display: Live | None = None
        self._printed_at: float | None = None
        self._printed_step: int | None = None

    def __enter__(self) -> "TrainingProgress":
        if self.live:
            self._display = Live(LiveLines(self), console=self.console, refresh_per_second=4,
                                 redirect_stdout=False, redirect_stderr=False)
            self._display.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._display is not None:
            self._display.__exit__(*exc)
        elif self.logs and self._printed_step != self.step:
            self._print_plain()  # a run that stops between two plain lines still says where it stopped

    def update(self, step: int, logs: Mapping[str, float], notes: Sequence[str] = ()) -> None:
        """Record step ``step``; print its validation line and ``notes`` (warnings) when it validated."""
        self.step, self.logs = step, logs
        self.timer.update(logs.get("step_time"))
        self.details = self.fields.update(logs)
        validated = validation_line(step, self.total, logs)
        if not self.live and self._plain_due():
            self._print_plain()
        if validated:
            self.console.print(Text(validated), soft_wrap=True, highlight=False)
            self.warn(notes)

    def warn(self, notes: Iterable[str]) -> None:
        target = self.alerts if self.console.quiet else self.console
        for note in notes if target is not None else ():
            say(target, "Warning:", "yellow", note)

    def _plain_due(self) -> bool:
        return (self._printed_at is None or self.step >= self.total
                or self.timer.now() - self._printed_at >= self.every)

    def plain_line(self) -> str:
        """``step 120/300 · 1.43 s/step · elapsed 2:51 · ETA 4:17 · loss 4.32 · cls/sup 0.758 · …``."""
        parts = [f"step {self.step}/{self.total}", self.timer.rate(), f"elapsed {clock(self.timer.elapsed())}",
                 f"ETA {clock(self.timer.eta(self.step))}"]
        if "loss" in self.logs:
            parts.append(format_logs(self.logs))
        return SEPARATOR.join(parts + (self.details if self.verbose else []))

    def _print_plain(self) -> None:
        self.console.print(Text(self.plain_line()), soft_wrap=True, highlight=False)
        self._printed_at, self._printed_step = self.timer.now(), self.step
