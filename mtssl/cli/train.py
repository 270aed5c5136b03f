"""``mtssl train``: read the settings from the command line and a config file, run them through
:func:`mtssl.run.launch.train_run`, and turn how it ended into a line and an exit status."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

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
    from mtssl.run.launch import settle

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
    return settle(config, f"{config_file} with command-line options" if config_file else "command-line options")


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
    from mtssl.run.launch import Display, resumed_config, train_run
    from mtssl.run.preflight import check_resume_options, check_run
    from mtssl.run.rundir import RunDir
    from mtssl.training.distributed import from_environment

    cluster = from_environment()  # torchrun: one process per device; only rank 0 prints and writes
    host = load_host(err_console() if cluster.is_main else None)
    if resume_dir:
        check_resume_options(tasks, bridges, config_file, skip_bad, ctx.args, overrides)
        run = RunDir(resume_dir)
        config = resumed_config(run, overrides.get("device"), overrides.get("threads"))
    else:
        config = resolve_config(config_file, tasks, bridges, ctx.args, overrides, skip_bad)
        run = None
    if check_only:
        check_run(config, host, cluster.world)  # every spec, option and data source
        click.echo(config.to_json())
        return
    display = Display.on_stderr(quiet, progress_every, verbose)
    with ended_run(cluster.is_main):
        done = train_run(config, host, run, display, max_pixels=max_pixels)
    if done.summary is None:
        return
    vals = {k: v for k, v in done.summary.items() if k.startswith("val/")}
    display.console.print(plain(f"Done: {done.summary['steps']} steps in {done.summary['wall_time_s']:.1f}s · "
                                + " · ".join(f"{k[4:]} {v:.3f}" for k, v in vals.items())), soft_wrap=True)
    if done.is_main:
        click.echo(str(done.path))


@contextmanager
def ended_run(is_main: bool):
    """A stop, an interrupt, a divergence or a plugin's ``sys.exit``: one line on standard error (from the main
    process only) and the exit status the shell expects (128 + signal, 130 for Ctrl-C)."""
    from mtssl.run.launch import PluginExit
    from mtssl.training.guard import DivergenceError
    from mtssl.training.stopping import StartupStopped, TrainingStopped

    try:
        yield
    except (TrainingStopped, StartupStopped) as exc:
        exit_with(is_main, "Stopped:", "yellow", exc, exc.exit_code)
    except KeyboardInterrupt as exc:
        exit_with(is_main, "Interrupted:", "yellow", exc, 130)
    except DivergenceError as exc:
        exit_with(is_main, "Error:", "bold red", exc, exc.exit_code)
    except PluginExit as exc:
        exit_with(is_main, "Error:", "bold red", "; ".join([str(exc), *getattr(exc, "__notes__", ())]), exc.code)


def exit_with(is_main: bool, label: str, style: str, message: object, code: int) -> None:
    if is_main:
        say(err_console(), label, style, message)
    sys.exit(code)
