"""``mtssl train``: read the settings from the command line and a config file, run them through
:func:`mtssl.run.launch.train_run`, and turn how it ended into a line and an exit status."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from mtssl.cli.common import (describe_error, err_console, friendly_errors, max_pixels_option,
                              parse_task_data_args)
from mtssl.console.output import load_host, plain, say
from mtssl.console.progress import DEFAULT_EVERY_S
from mtssl.cli.params import NON_NEGATIVE_FLOAT, setting_options

if TYPE_CHECKING:
    from mtssl.run.config import RunConfig


def resolve_config(config_file, data_args, overrides: dict) -> "RunConfig":
    """The run's settings: the config file (if any), then the flags (``overrides``: a setting's key -> its value,
    None where not given), checked as a whole."""
    from mtssl.run.config import RunConfig, TaskData, load_config_file
    from mtssl.run.launch import settle

    raw = load_config_file(config_file) if config_file else {}
    config = RunConfig.from_dict(raw, origin=str(config_file or "defaults"))
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    for task, fields_ in parse_task_data_args(data_args).items():
        current = config.data.get(task, TaskData())
        for key, value in fields_.items():
            setattr(current, key, value)
        config.data[task] = current
    return settle(config, f"{config_file} with command-line options" if config_file else "command-line options")


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@setting_options()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML/YAML config; flags override it.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue an interrupted run directory.")
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
def train(ctx, config_file, resume_dir, quiet, verbose, progress_every, max_pixels, check_only, **settings):
    """Train a model. Per-task data: --TASK-data SPEC, --TASK-labels N|all, --TASK-val SPEC.

    \b
    Examples:
      mtssl train --task cls:fixmatch --task seg:kl --bridge saliency
      mtssl train --task seg --seg-data pairs:imgs,masks --seg-labels 10
    """
    from mtssl.run.launch import Display, resumed_config, train_run
    from mtssl.run.preflight import check_resume_options, check_run
    from mtssl.run.rundir import RunDir
    from mtssl.run.settings_table import RESUME_KEEPS
    from mtssl.training.distributed import from_environment

    cluster = from_environment()  # torchrun: one process per device; only rank 0 prints and writes
    host = load_host(err_console() if cluster.is_main else None)
    if resume_dir:
        check_resume_options(config_file, ctx.args, settings)
        run = RunDir(resume_dir)
        config = resumed_config(run, **{key: settings[key] for key in RESUME_KEEPS})
    else:
        config = resolve_config(config_file, ctx.args, settings)
        run = None
    if check_only:
        check_run(config, host, cluster.world)  # every spec, option and data source
        click.echo(config.to_json())
        return
    display = Display.on_stderr(quiet, progress_every, verbose)
    with ended_run(cluster.is_main) as end:
        done = train_run(config, host, run, display, max_pixels=max_pixels)
        end.finished = True  # the run is complete: its last lines print whatever signal comes
        if done.summary is None or not done.is_main:
            return
        vals = {k: v for k, v in done.summary.items() if k.startswith("val/")}
        display.console.print(plain(f"Done: {done.summary['steps']} steps in {done.summary['wall_time_s']:.1f}s · "
                                    + " · ".join(f"{k[4:]} {v:.3f}" for k, v in vals.items())), soft_wrap=True)
        click.echo(str(done.path))


@contextmanager
def ended_run(is_main: bool):
    """A stop, an interrupt, a divergence or a plugin's ``sys.exit``: one line on standard error (from the main
    process only) and the exit status the shell expects (128 + signal, 130 for Ctrl-C)."""
    from mtssl.run.launch import PluginExit
    from mtssl.training.guard import DivergenceError
    from mtssl.training.stopping import StartupStopped, TrainingStopped, terminate_cleanly

    try:
        with terminate_cleanly() as end:
            yield end
    except (TrainingStopped, StartupStopped) as exc:
        exit_with(is_main, "Stopped:", "yellow", exc, exc.exit_code)
    except KeyboardInterrupt as exc:
        exit_with(is_main, "Interrupted:", "yellow", exc, 130)
    except DivergenceError as exc:
        exit_with(is_main, "Error:", "bold red", exc, exc.exit_code)
    except PluginExit as exc:
        exit_with(is_main, "Error:", "bold red", describe_error(exc, getattr(exc, "__notes__", ())), exc.code)


def exit_with(is_main: bool, label: str, style: str, message: object, code: int) -> None:
    """Say how the run ended (the main process only) and exit with ``code``."""
    if is_main:
        say(err_console(), label, style, message)
    sys.exit(code)
