"""``mtssl train``: resolve the run's settings, check them and the data, train, and report how it ended."""
from __future__ import annotations

import shutil
import sys
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.text import Text

from mtssl.cli.common import err_console, friendly_errors, load_host, max_pixels_option, parse_task_data_args
from mtssl.cli.output import plain, say
from mtssl.cli.progress import DEFAULT_EVERY_S
from mtssl.cli.params import (DEVICE, LEARNING_RATE, NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT,
                              POSITIVE_INT, RUN_NAME)

if TYPE_CHECKING:
    from mtssl.run.config import RunConfig

DEFAULT_STEPS = 300


def resolve_config(config_file, tasks, bridges, data_args, overrides: dict, skip_bad: bool) -> "RunConfig":
    """The run's settings: the config file (if any), then the flags, checked as a whole."""
    from mtssl.run.config import RunConfig, TaskData, load_config_file

    raw = load_config_file(config_file) if config_file else {}
    config = RunConfig.from_dict(raw, origin=str(config_file or "defaults"))
    if tasks:
        config.tasks = list(tasks)
    if bridges:
        config.bridges = list(bridges)
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    if skip_bad:
        config.skip_bad = True
    for task, fields_ in parse_task_data_args(data_args).items():
        current = config.data.get(task, TaskData())
        for key, value in fields_.items():
            setattr(current, key, value)
        config.data[task] = current
    known = {t.split(":", 1)[0] for t in config.tasks}
    stray = sorted(set(config.data) - known)
    if stray:
        raise click.UsageError(f"data given for task(s) {', '.join(stray)} that are not in this run "
                               f"(tasks: {', '.join(sorted(known)) or 'none'})")
    if config.steps is None and config.epochs is None:
        config.steps = DEFAULT_STEPS
    config.check(f"{config_file} with command-line options" if config_file else "command-line options")
    return config


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--task", "tasks", multiple=True, metavar="NAME[:STRATEGY[+STRATEGY]][:k=v]",
              help="A task and its SSL strategies, e.g. cls:fixmatch or seg:kl. Repeat for several tasks.")
@click.option("--bridge", "bridges", multiple=True, metavar="NAME[:SRC->DST][:k=v]",
              help="A bridge between two tasks, e.g. saliency or saliency:cls->seg.")
@click.option("--backbone", default=None, help="Shared encoder, e.g. unet (default) or timm:model=resnet18.")
@click.option("--weighting", default=None, metavar="NAME[:k=v]",
              help="How task losses combine: equal (default), uncertainty, pcgrad.")
@click.option("--log-grad-shares", type=int, metavar="N",
              help="Every N steps, log each loss term's share of the shared encoder's gradient norm.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML/YAML config; flags override it.")
@click.option("--size", type=POSITIVE_INT, help="Training image side in pixels (default 64).")
@click.option("--batch-size", type=POSITIVE_INT, help="Images per stream per step, m (default 10).")
@click.option("--steps", type=POSITIVE_INT, help=f"Optimizer steps (default {DEFAULT_STEPS} unless --epochs).")
@click.option("--epochs", type=POSITIVE_FLOAT, help="Epochs over the longest stream, instead of --steps.")
@click.option("--lr", type=LEARNING_RATE, help="Adam learning rate, 0 < LR <= 1e30 (default 1e-4).")
@click.option("--lr-step-epochs", type=POSITIVE_FLOAT, help="Multiply lr by 0.1 every this many epochs (default 8).")
@click.option("--seed", type=NON_NEGATIVE_INT, help="Seed for splits, initialisation and augmentation (default 0).")
@click.option("--device", type=DEVICE, help="auto (default), cpu, cuda or cuda:N.")
@click.option("--threads", type=POSITIVE_INT,
              help="CPU threads for torch's operators (default: torch's choice); fewer are often faster "
                   "on a busy machine.")
@click.option("--strong-ops", type=click.IntRange(1, 15),
              help="Operations per image in the strong augmentation, 1..15 (default 2).")
@click.option("--eval-every", type=POSITIVE_INT, help="Validate and keep the best checkpoint every N steps (default 100).")
@click.option("--save-every", type=POSITIVE_INT, help="Write the resumable 'last' checkpoint every N steps (default 100).")
@click.option("--select-by", help="Model selection metric: mean (of task scores) or TASK/METRIC, e.g. seg/dice.")
@click.option("--out", help="Folder for run directories (default runs).")
@click.option("--name", type=RUN_NAME, help="Run directory name inside --out (default: a timestamp).")
@click.option("--cache-dir", help="Where decoded images are cached (default: .mtssl-cache).")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable or inconsistent files (and count them) instead of stopping.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue an interrupted run directory.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="Autocast precision (default auto: bf16 where the device runs it natively, else fp32).")
@click.option("--amp", is_flag=True, default=None, help="Same as --precision bf16.")
@click.option("--deterministic", is_flag=True, default=None,
              help="Deterministic torch kernels (config key deterministic): repeatable GPU runs, often slower.")
@click.option("--compile/--no-compile", "compile", default=None, help="torch.compile backbone and heads (default off).")
@click.option("--device-memory-budget", type=NON_NEGATIVE_FLOAT, metavar="MB",
              help="Training arrays above this size stream from the host cache (default: automatic).")
@click.option("--max-loss", type=POSITIVE_FLOAT, help="Treat a loss term above this as divergence (default: only nan/inf).")
@click.option("--skip-nonfinite", type=NON_NEGATIVE_INT, help="Skip up to N diverged steps (no update) instead of stopping (default 0).")
@click.option("--log", callback=lambda ctx, param, value: value.split(",") if value else None,
              metavar="NAMES", help="Also log to these tracking tools, e.g. tensorboard,mlflow (see mtssl plugins).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--verbose", is_flag=True, help="Progress also shows task weights and strategy statistics that change.")
@click.option("--progress-every", type=NON_NEGATIVE_FLOAT, default=DEFAULT_EVERY_S, show_default=True,
              envvar="MTSSL_PROGRESS_EVERY", metavar="SECONDS",
              help="When the output is a file or pipe (a batch job), print a progress line this often "
                   "(env MTSSL_PROGRESS_EVERY).")
@max_pixels_option
@click.option("--check", "check_only", is_flag=True,
              help="Validate every option, spec and data source, print the resolved config and exit.")
@click.pass_context
@friendly_errors
def train(ctx, tasks, bridges, config_file, skip_bad, resume_dir, quiet, verbose, progress_every, max_pixels,
          check_only, **overrides):
    """Train a model. Per-task data: --TASK-data SPEC, --TASK-labels N|all, --TASK-val SPEC.

    \b
    Examples:
      mtssl train --task cls:fixmatch --task seg:kl --bridge saliency
      mtssl train --task seg --seg-data pairs:imgs,masks --seg-labels 10
    """
    from mtssl.cli.progress import TrainingProgress, decode_progress
    from mtssl.data.pixel_limit import pixel_limit
    from mtssl.data.prepare import data_summary
    from mtssl.run.preflight import check_resume_options, check_run
    from mtssl.run.rundir import RunDir
    from mtssl.run.threads import busy_machine_warning
    from mtssl.training.checkpointing import Checkpointer, disk_space_warning
    from mtssl.training.distributed import from_environment
    from mtssl.training.loggers import LoggerHub, create_loggers
    from mtssl.training.trainer import Trainer

    cluster = from_environment()  # torchrun: one process per device; only rank 0 prints and writes
    console = Console(stderr=True, quiet=quiet or not cluster.is_main)
    host = load_host(err_console() if cluster.is_main else None)
    if resume_dir:
        check_resume_options(tasks, bridges, config_file, skip_bad, ctx.args, overrides)
        run = RunDir(resume_dir)
        config = run.config()
        config.device = overrides.get("device") or config.device  # resume on another device if asked
        config.threads = overrides.get("threads") or config.threads  # or with other threads
    else:
        config = resolve_config(config_file, tasks, bridges, ctx.args, overrides, skip_bad)
        run = None
    check_run(config, host, cluster.world)  # every spec, option and data source, before any work starts
    if check_only:
        click.echo(config.to_json())
        return
    if cluster.is_main and (busy := busy_machine_warning(config.threads)):
        say(err_console(), "Warning:", "yellow", busy)
    device = cluster.device_name(config.device)  # config.json keeps what was asked, not rank 0's device
    loggers = create_loggers(host, config.log) if cluster.is_main else []  # a missing package fails before data
    with ExitStack() as stack:
        stack.enter_context(pixel_limit(max_pixels))
        failure = stack.enter_context(FailedRun(fresh=run is None and cluster.is_main))  # exits after lock, loggers
        with starting_up(run, cluster.is_main) as started:
            with decode_progress(console) as progress:
                trainer_run = run or RunDir(cluster.share(str(RunDir.create(config).path) if cluster.is_main else None))
                started.path = trainer_run.path
                note = stack.enter_context(trainer_run.lock()) if cluster.is_main else None  # one writer per run
                if note:
                    say(err_console(), "Note:", "yellow", note)
                if run is not None and (finished := run.finished_steps()) is not None:
                    if cluster.is_main:  # a log cut or deleted since is restored all the same
                        Checkpointer(run).truncate_log(finished)
                    console.print(plain(f"Already finished: {run.path} ran all {finished} steps; nothing to resume"),
                                  soft_wrap=True)
                    return
                trainer = Trainer(config, host, trainer_run, progress, cluster.rank, cluster.world, device)
            started.hub = LoggerHub(loggers, trainer)
            if cluster.is_main and (short := disk_space_warning(trainer)):
                say(err_console(), "Warning:", "yellow", short)
            for line in data_summary(trainer.data) if cluster.is_main else ():
                say(err_console(), "Data:", "yellow", line)  # even when --quiet
            if resume_dir:
                trainer.resume("last")
                console.print(Text.assemble("Resuming ", (str(run.path), "bold"),
                                            f" at step {trainer.step}/{trainer.total_steps}"), soft_wrap=True)
            console.print(Text.assemble("Run directory: ", (str(trainer.run.path), "bold"),
                                        f" · device {trainer.device} · precision {trainer.precision.name}"
                                        f" · {trainer.total_steps} steps · tasks ",
                                        ", ".join(config.tasks),
                                        f" · bridges {', '.join(config.bridges)}" if config.bridges else ""),
                          soft_wrap=True)
        stack.callback(started.hub.close)
        failure.trainer = trainer
        with stopped_training(trainer, cluster.is_main):
            with TrainingProgress(console, trainer.total_steps, trainer.step, progress_every, verbose,
                                  alerts=err_console() if cluster.is_main else None) as bar:
                summary = trainer.fit(on_step=lambda step, logs: (bar.update(step, logs, trainer.validation_warnings),
                                                                  started.hub(step, logs)))
    vals = {k: v for k, v in summary.items() if k.startswith("val/")}
    console.print(plain(f"Done: {summary['steps']} steps in {summary['wall_time_s']:.1f}s · "
                        + " · ".join(f"{k[4:]} {v:.3f}" for k, v in vals.items())), soft_wrap=True)
    if cluster.is_main:
        click.echo(str(trainer.run.path))


class Startup:
    """What start-up has made so far: the run folder and the started loggers."""

    def __init__(self) -> None:
        self.path = None
        self.hub = None


@contextmanager
def starting_up(resumed, is_main: bool):
    """Until the first step, a failure or a stop undoes start-up: the loggers are closed and a new run's folder
    is removed, so its name stays free and no folder is left that ``--resume`` cannot use. SIGTERM and Ctrl-C
    end with one line and the shell's 143/130."""
    from mtssl.training.stopping import StartupStopped, signal_name, stop_startup_on_signals

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
            if is_main:
                name = signal_name(exc.signum) if isinstance(exc, StartupStopped) else "Ctrl-C"
                kept = f"{resumed.path} is as it was" if resumed is not None else "no run directory was kept"
                say(err_console(), "Stopped:", "yellow", f"{name} during start-up, before the first step; {kept}")
            sys.exit(exc.exit_code if isinstance(exc, StartupStopped) else 130)
        if isinstance(exc, SystemExit):
            exit_from_plugin(exc, "during start-up")
        raise


def exit_from_plugin(exc: SystemExit, when: str) -> None:
    """Plugin code that calls ``sys.exit`` (even ``sys.exit(0)``) mid-run is an error, never a silent success."""
    say(err_console(), "Error:", "bold red", f"{where_raised(exc)} called sys.exit({exc.code!r}) {when}; "
                                             "plugins must raise an exception instead")
    sys.exit(exc.code if isinstance(exc.code, int) and exc.code else 1)


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
def stopped_training(trainer, is_main: bool):
    """A stop (signal), an interrupt or a divergence: say where the run stands, exit non-zero."""
    from mtssl.training.guard import DivergenceError
    from mtssl.training.stopping import TrainingStopped

    try:
        yield
    except TrainingStopped as exc:
        if is_main:
            say(err_console(), "Stopped:", "yellow", exc)
        sys.exit(exc.exit_code)
    except DivergenceError as exc:
        if is_main:
            say(err_console(), "Error:", "bold red", exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if is_main:
            at = trainer.saved_step
            where = (f"the last checkpoint is step {at}; resume with: mtssl train --resume {trainer.run.path}"
                     if at is not None else "no checkpoint was written yet")
            say(err_console(), "Interrupted:", "yellow", where)
        sys.exit(130)
    except SystemExit as exc:  # nothing in the loop exits on purpose: this came from plugin code
        exit_from_plugin(exc, f"during training at step {trainer.step + 1}")


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
        if not isinstance(exc, Exception) or self.trainer is None:
            return
        path, saved = self.trainer.run.path, self.trainer.saved_step
        if saved is not None:
            exc.add_note(f"the last checkpoint is step {saved}; resume with: mtssl train --resume {path}")
        elif self.fresh:
            shutil.rmtree(path, ignore_errors=True)
            exc.add_note(f"no checkpoint was written, so {path} was removed")
