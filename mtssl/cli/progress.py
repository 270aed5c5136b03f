"""Rich progress displays: data decoding and the training bar."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


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


def format_logs(logs: dict[str, float]) -> str:
    """Compact one-line summary: total loss, each term, pseudo-label mask rates."""
    parts = [f"loss {logs['loss']:.3f}"]
    for key, value in logs.items():
        if key.count("/") == 1 and not key.startswith("val/") and key != "loss":
            parts.append(f"{key} {value:.3f}")
        elif key.endswith("/mask_rate"):
            parts.append(f"{key.split('/')[0]} mask {value:.0%}")
    return " · ".join(parts)


class TrainingProgress:
    """Step counter, per-term losses, mask rate, steps/s and ETA."""

    def __init__(self, console: Console, total: int, completed: int = 0):
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]}", markup=False), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), TextColumn("{task.fields[logs]}", markup=False), console=console)
        self.total, self.completed = total, completed
        self.task_id = None
        self._ema = None

    def __enter__(self) -> "TrainingProgress":
        self.progress.__enter__()
        self.task_id = self.progress.add_task("train", total=self.total, completed=self.completed,
                                              logs="", rate="")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, step: int, logs: dict[str, float]) -> None:
        dt = logs.get("step_time")
        if dt:
            self._ema = dt if self._ema is None else 0.9 * self._ema + 0.1 * dt
        rate = f"{1 / self._ema:.1f} steps/s" if self._ema else ""
        self.progress.update(self.task_id, completed=step, logs=format_logs(logs), rate=rate)
