"""Check a whole run before any work starts: settings, every spec and its options, every data source.

Training decodes data and writes a run directory; a typo in the last
``--seg-test`` spec or ``fixmatch:weight=nan`` should fail in a second, not
after an hour. :func:`check_run` builds the components (which validates
task, strategy, bridge and backbone options and the image size) and opens
every source (which validates source options and lists the files) without
decoding anything.
"""
from __future__ import annotations

import click

from mtssl.model.assemble import Components, build_components
from mtssl.run.config import RunConfig, TaskData
from mtssl.data.prepare import check_split, open_source, task_seed, training_spec
from mtssl.plugins import PluginHost
from mtssl.run.seeding import pick_device

RESUME_KEEPS = ("device",)
"""The only settings ``--resume`` takes from the command line; everything else comes from the run."""


def check_resume_options(tasks, bridges, config_file, skip_bad, data_args, overrides: dict) -> None:
    """``--resume`` continues a run with its own config: other settings would be silently ignored."""
    given = [f"--{key.replace('_', '-')}" for key, value in overrides.items()
             if value is not None and key not in RESUME_KEEPS]
    given += ["--task"] * bool(tasks) + ["--bridge"] * bool(bridges) + ["--config"] * bool(config_file)
    given += ["--skip-bad"] * bool(skip_bad) + [a for a in data_args if a.startswith("--")]
    if given:
        raise click.UsageError(f"--resume continues a run with the settings in its config.json; it cannot be "
                               f"combined with {', '.join(dict.fromkeys(given))} (only --device, --quiet, "
                               "--max-pixels)")


def check_run(config: RunConfig, host: PluginHost) -> Components:
    """Raise a one-line error for anything in ``config`` that cannot run; return the built components."""
    config.check("settings")
    pick_device(config.device)  # --device cuda on a machine without one fails now, not after decoding
    parts = build_components(config, host)
    if config.select_by != "mean":
        task = config.select_by.split("/", 1)[0]
        if task not in parts.tasks:
            raise ValueError(f"--select-by {config.select_by}: '{task}' is not a task of this run "
                             f"(tasks: {', '.join(parts.tasks)})")
    for name, task in parts.tasks.items():
        settings = config.data.get(name, TaskData())
        seed = task_seed(config.seed, name)
        train = training_spec(host, name, task, settings)
        specs = [train, *([settings.val] if settings.val else []), *settings.test]
        for spec in dict.fromkeys(specs):
            source = open_source(host, spec, task.target, seed, skip_bad=True)
            if spec == train:
                check_split(name, task, settings, spec, source, seed)
    return parts
