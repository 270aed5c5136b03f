"""Starting, stopping and resuming a training run: the one place both ``mtssl train`` and :func:`mtssl.train` use.

:func:`train_run` checks the run, creates (or locks) its directory, builds the
trainer, trains, and makes every way a run can end leave something
``--resume`` can use or nothing at all: a failure or a stop during start-up
removes a new run's folder; a stop during training (SIGINT/SIGTERM, Ctrl-C in
a notebook) ends at a step boundary with ``last`` saved. It raises instead of
exiting; the command line turns the exceptions into lines and exit codes.
Under ``torchrun`` every process runs it; only rank 0 writes and talks.
"""
from __future__ import annotations

import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console
from rich.text import Text

from mtssl.console.output import plain, say
from mtssl.console.progress import DEFAULT_EVERY_S
from mtssl.data.pixel_limit import DEFAULT_MAX_PIXELS
from mtssl.errors import ConfigError
from mtssl.run.config import RunConfig
from mtssl.run.rundir import RunDir
from mtssl.run.settings_table import DEFAULT_STEPS, RESUME_KEEPS

if TYPE_CHECKING:
    from mtssl.plugins import PluginHost
    from mtssl.training.trainer import Trainer

StepCallback = Callable[[int, dict], None]


@dataclass
class Display:
    """Where a run talks: ``console`` for status and progress (quiet: nothing), ``alerts`` for warnings that are
    shown even when quiet (None: nowhere); ``every`` and ``verbose`` as in
    :class:`~mtssl.console.progress.TrainingProgress`."""

    console: Console
    alerts: Console | None
    every: float = DEFAULT_EVERY_S
    verbose: bool = False

    @classmethod
    def on_stderr(cls, quiet: bool = False, every: float = DEFAULT_EVERY_S, verbose: bool = False) -> "Display":
        """Status and progress on standard error (a live display in a terminal or a notebook)."""
        return cls(Console(stderr=True, quiet=quiet), Console(stderr=True), every, verbose)

    def alert(self, label: str, message: object) -> None:
        if self.alerts is not None:
            say(self.alerts, label, "yellow", message)

    def silenced(self) -> "Display":
        """The same display with nothing shown (the other processes of a distributed run)."""
        return Display(Console(quiet=True), None, self.every, self.verbose)


@dataclass
class Trained:
    """How :func:`train_run` ended: the run directory, and the summary (None: it had finished before)."""

    path: Path
    summary: dict[str, Any] | None
    is_main: bool = True


class PluginExit(RuntimeError):
    """Plugin code called ``sys.exit`` during a run: an error, never a silent success. ``code`` is the exit
    status the command line keeps (1 for ``sys.exit(0)``)."""

    def __init__(self, exc: SystemExit, when: str):
        super().__init__(f"{where_raised(exc)} called sys.exit({exc.code!r}) {when}; "
                         "plugins must raise an exception instead")
        self.code = exc.code if isinstance(exc.code, int) and exc.code else 1


class Interrupted(KeyboardInterrupt):
    """A KeyboardInterrupt that reached the training loop; says whether and how the run can be resumed.

    A subclass of KeyboardInterrupt, so code that stops on Ctrl-C still stops on it.
    """

    def __init__(self, path: Path, saved_step: int | None):
        self.path, self.saved_step = path, saved_step
        super().__init__(f"the last checkpoint is step {saved_step}; resume with: mtssl train --resume {path}"
                         if saved_step is not None else "no checkpoint was written yet")


def settle(config: RunConfig, origin: str) -> RunConfig:
    """What every way of giving a run's settings ends with: data only for the run's tasks, the default step
    count unless steps or epochs are given, and the whole checked (errors name ``origin``)."""
    known = {t.split(":", 1)[0] for t in config.tasks}
    stray = sorted(set(config.data) - known)
    if stray:
        raise ConfigError(f"{origin}: data given for task(s) {', '.join(stray)} that are not in this run "
                          f"(tasks: {', '.join(sorted(known)) or 'none'})")
    if config.steps is None and config.epochs is None:
        config.steps = DEFAULT_STEPS
    config.check(origin)
    return config


def resumed_config(run: RunDir, **given: Any) -> RunConfig:
    """A run's own settings for ``--resume``; only the settings declared resumable (``RESUME_KEEPS``: the
    machine's device and threads) may be given anew, None keeping the run's own."""
    config = run.config()
    for key, value in given.items():
        if key not in RESUME_KEEPS:
            raise ValueError(f"a resumed run keeps its own '{key}'; only {', '.join(RESUME_KEEPS)} may change")
        if value is not None:
            setattr(config, key, value)
    return config


def train_run(config: RunConfig, host: "PluginHost", resume: RunDir | None = None, display: Display | None = None,
              on_step: StepCallback | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Trained:
    """Train ``config`` into a new run directory, or continue ``resume`` (whose config ``config`` is).

    ``on_step(step, logs)`` is called after every step. Raises
    :class:`~mtssl.training.stopping.TrainingStopped` for a stop at a step boundary,
    :class:`~mtssl.training.stopping.StartupStopped` for one before the first step,
    :class:`Interrupted`, :class:`PluginExit`, or the error that ended the run (with a note on how to resume).
    """
    from mtssl.data.pixel_limit import pixel_limit
    from mtssl.run.preflight import check_run
    from mtssl.run.threads import busy_machine_warning
    from mtssl.training.distributed import from_environment
    from mtssl.training.loggers import LoggerHub, create_loggers

    cluster = from_environment()  # torchrun: one process per device; only rank 0 prints and writes
    display = display or Display.on_stderr(quiet=True)
    if not cluster.is_main:
        display = display.silenced()
    check_run(config, host, cluster.world)  # every spec, option and data source, before any work starts
    if busy := busy_machine_warning(config.threads):
        display.alert("Warning:", busy)
    loggers = create_loggers(host, config.log) if cluster.is_main else []  # a missing package fails before data
    with ExitStack() as stack:
        stack.enter_context(pixel_limit(max_pixels))
        failure = stack.enter_context(FailedRun(fresh=resume is None and cluster.is_main))  # exits after lock, loggers
        with starting_up(resume, cluster.is_main) as started:
            trainer = start_trainer(config, host, resume, display, cluster, started, stack)
            if trainer is None:
                return Trained(resume.path, None, cluster.is_main)
            started.hub = hub = LoggerHub(loggers, trainer)
        stack.callback(hub.close)
        failure.trainer = trainer
        summary = fit(trainer, display, cluster.is_main, hub, on_step)
    return Trained(trainer.run.path, summary, cluster.is_main)


def start_trainer(config: RunConfig, host, resume: RunDir | None, display: Display, cluster, started: "Startup",
                  stack: ExitStack) -> "Trainer | None":
    """The locked run directory's trainer, at its saved step when resuming; None when ``resume`` had finished."""
    from mtssl.console.progress import decode_progress
    from mtssl.data.prepare import data_summary
    from mtssl.training.checkpointing import Checkpointer, disk_space_warning
    from mtssl.training.trainer import Trainer

    console = display.console
    with decode_progress(console) as progress:
        run = resume or RunDir(cluster.share(str(RunDir.create(config).path) if cluster.is_main else None))
        started.path = run.path
        note = stack.enter_context(run.lock()) if cluster.is_main else None  # one writer per run
        if note:
            display.alert("Note:", note)
        if resume is not None and (finished := resume.finished_steps()) is not None:
            if cluster.is_main:  # a log cut or deleted since is restored all the same
                Checkpointer(resume).truncate_log(finished)
            console.print(plain(f"Already finished: {resume.path} ran all {finished} steps; nothing to resume"),
                          soft_wrap=True)
            return None
        trainer = Trainer(config, host, run, progress, cluster.rank, cluster.world, cluster.device_name(config.device))
    if short := disk_space_warning(trainer):
        display.alert("Warning:", short)
    for line in data_summary(trainer.data):
        display.alert("Data:", line)  # even when quiet
    if resume is not None:
        trainer.resume("last")
        console.print(Text.assemble("Resuming ", (str(run.path), "bold"),
                                    f" at step {trainer.step}/{trainer.total_steps}"), soft_wrap=True)
    console.print(Text.assemble("Run directory: ", (str(trainer.run.path), "bold"),
                                f" · device {trainer.device} · precision {trainer.precision.name}"
                                f" · {trainer.total_steps} steps · tasks ", ", ".join(config.tasks),
                                f" · bridges {', '.join(config.bridges)}" if config.bridges else ""),
                  soft_wrap=True)
    return trainer


def fit(trainer: "Trainer", display: Display, is_main: bool, hub, on_step: StepCallback | None) -> dict:
    """Train to the end with the progress display; every step also goes to the loggers and ``on_step``."""
    from mtssl.console.progress import TrainingProgress

    with stopped_training(trainer):
        with TrainingProgress(display.console, trainer.total_steps, trainer.step, display.every, display.verbose,
                              alerts=display.alerts if is_main else None) as bar:
            def each_step(step: int, logs: dict) -> None:
                bar.update(step, logs, trainer.validation_warnings)
                hub(step, logs)
                if on_step is not None:
                    on_step(step, logs)

            return trainer.fit(on_step=each_step)


class Startup:
    """What start-up has made so far: the run folder and the started loggers."""

    def __init__(self) -> None:
        self.path = None
        self.hub = None


@contextmanager
def starting_up(resumed: RunDir | None, is_main: bool):
    """Until the first step, a failure or a stop undoes start-up: the loggers are closed and a new run's folder
    is removed, so its name stays free and no folder is left that ``--resume`` cannot use. SIGTERM and Ctrl-C
    raise :class:`~mtssl.training.stopping.StartupStopped` saying what was kept."""
    import signal

    from mtssl.training.stopping import StartupStopped, stop_startup_on_signals

    started = Startup()
    try:
        with stop_startup_on_signals():
            yield started
    except BaseException as exc:
        if started.hub is not None:
            started.hub.close()
        if resumed is None and is_main and started.path is not None:
            shutil.rmtree(started.path, ignore_errors=True)
        if isinstance(exc, (KeyboardInterrupt, StartupStopped)):
            kept = f"{resumed.path} is as it was" if resumed is not None else "no run directory was kept"
            signum = exc.signum if isinstance(exc, StartupStopped) else signal.SIGINT
            raise StartupStopped(signum, f"during start-up, before the first step; {kept}") from None
        if isinstance(exc, SystemExit):
            raise PluginExit(exc, "during start-up") from exc
        raise


def where_raised(exc: BaseException) -> str:
    """``file.py:12 (loss)`` of the innermost frame, to point at the code that raised, after the component
    and plugin whose code it is (when a plugin's)."""
    from mtssl.plugin_faults import attribute, component_text

    tb = exc.__traceback__
    if tb is None:
        return "code"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    fault = attribute(exc)
    owner = f"{component_text(fault.entry)} at " if fault else ""
    return f"{owner}{code.co_filename}:{tb.tb_lineno} ({code.co_name})"


@contextmanager
def stopped_training(trainer: "Trainer"):
    """A KeyboardInterrupt says where the run stands (:class:`Interrupted`); a ``sys.exit`` in the loop came from
    plugin code (:class:`PluginExit`). Stops and divergence pass through as they are."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(trainer.run.path, trainer.saved_step) from None
    except SystemExit as exc:  # nothing in the loop exits on purpose: this came from plugin code
        raise PluginExit(exc, f"during training at step {trainer.step + 1}") from exc


class FailedRun:
    """A run whose training raises: without a resumable checkpoint a new run's folder is removed (its name stays
    free, nothing is left that ``--resume`` cannot use); otherwise the error says how to resume.

    Entered before the run's lock and loggers, so it acts after they are closed.
    """

    def __init__(self, fresh: bool):
        self.fresh = fresh
        self.trainer = None

    def __enter__(self) -> "FailedRun":
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        from mtssl.training.stopping import Terminated

        if isinstance(exc, Terminated) and self.trainer is not None:
            detail = self.terminated_detail()
            if self.fresh and self.trainer.saved_step is None:
                shutil.rmtree(self.trainer.run.path, ignore_errors=True)
                detail += "; no run directory was kept"
            raise Terminated(exc.signum, detail) from None
        if not isinstance(exc, Exception) or self.trainer is None:
            return
        path, saved = self.trainer.run.path, self.trainer.saved_step
        if saved is not None:
            exc.add_note(f"the last checkpoint is step {saved}; resume with: mtssl train --resume {path}")
        elif self.fresh:
            shutil.rmtree(path, ignore_errors=True)
            exc.add_note(f"no checkpoint was written, so {path} was removed")

    def terminated_detail(self) -> str:
        """What a run stopped by SIGTERM outside its step boundaries holds (training's own stop says it)."""
        trainer = self.trainer
        if trainer.step >= trainer.total_steps:
            return f"after the run finished all {trainer.total_steps} steps ({trainer.run.path})"
        if trainer.saved_step is None:
            return f"at once at step {trainer.step}, before any checkpoint"
        return (f"at once at step {trainer.step}; the last checkpoint is step {trainer.saved_step}; resume with: "
                f"mtssl train --resume {trainer.run.path}")
