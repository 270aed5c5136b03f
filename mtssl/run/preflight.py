"""Check a whole run before any work starts: settings, every spec and its options, every data source.

Training decodes data and writes a run directory; a typo in the last
``--seg-test`` spec or ``fixmatch:weight=nan`` should fail in a second, not
after an hour. :func:`check_run` builds the components (which validates
task, strategy, bridge and backbone options and the image size) and opens
every source (which validates source options and lists the files) without
decoding anything. It also calls every strategy's ``plan()`` once and
refuses a plan the trainer could not run (:func:`plan_problem`), naming the
plugin, and builds the task weighting and the loggers.
"""
from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping

import click

from mtssl.interfaces import SSLStrategy, ViewRequest
from mtssl.model.assemble import Components, build_components, build_weighting
from mtssl.plugin_faults import PluginFault, entry_of
from mtssl.run.config import RunConfig, TaskData
from mtssl.evaluation.evaluate import VAL
from mtssl.data.prepare import check_split, open_source, task_seed, training_spec
from mtssl.plugins import PluginHost
from mtssl.run.seeding import pick_device
from mtssl.run.settings_table import BY_KEY, RESUME_KEEPS, flags
from mtssl.training.distributed import check_processes
from mtssl.training.loggers import create_loggers

def check_resume_options(config_file, data_args, overrides: dict) -> None:
    """``--resume`` continues a run with its own config: other settings would be silently ignored.

    ``overrides`` maps a setting's key to its value from the command line (None: not given)."""
    given = [BY_KEY[key].option for key, value in overrides.items() if value is not None and key not in RESUME_KEEPS]
    given += ["--config"] * bool(config_file) + [a for a in data_args if a.startswith("--")]
    if given:
        raise click.UsageError(f"--resume continues a run with the settings in its config.json; it cannot be "
                               f"combined with {', '.join(dict.fromkeys(given))} (only {flags(RESUME_KEEPS)}, "
                               "--quiet, --verbose, --progress-every, --max-pixels)")


def check_run(config: RunConfig, host: PluginHost, world: int = 1) -> Components:
    """Raise a one-line error for anything in ``config`` that cannot run on ``world`` processes; return the
    built components."""
    config.check("settings")
    device = pick_device(config.device)  # --device cuda on a machine without one fails now, not after decoding
    parts = build_components(config, host)
    check_plans(parts)
    weighting = build_weighting(config, host)
    weighting.setup(list(parts.tasks), device)
    check_processes([s for group in parts.strategies.values() for s in group], weighting, world)
    create_loggers(host, config.log)  # options and packages; nothing is started
    if config.select_by != "mean":
        task = config.select_by.split("/", 1)[0]
        if task not in parts.tasks:
            raise ValueError(f"--select-by {config.select_by}: '{task}' is not a task of this run "
                             f"(tasks: {', '.join(parts.tasks)})")
    for name, task in parts.tasks.items():
        settings = config.data.get(name, TaskData())
        seed = task_seed(config.seed, name)
        train = training_spec(host, name, task, settings)
        tests = [spec for spec in settings.test if spec != VAL]  # val: the run's own held-out split
        specs = [train, *([settings.val] if settings.val else []), *tests]
        for spec in dict.fromkeys(specs):
            source = open_source(host, spec, task.target, seed, skip_bad=True)
            if spec == train:
                check_split(name, task, settings, spec, source, seed)
    return parts


def check_plans(parts: Components) -> None:
    """Every strategy's ``plan()``, called once and checked, so a junk plan fails here and not at step 1."""
    for group in parts.strategies.values():
        for strategy in group:
            problem = plan_problem(strategy, strategy.plan())
            if problem is None:
                continue
            entry = entry_of(strategy)
            if entry is None:
                raise ValueError(f"strategy '{strategy.name}': plan() {problem}")
            raise PluginFault(entry, "plan", problem)


VIEW_FIELDS = typing.get_type_hints(ViewRequest)


def plan_problem(strategy: SSLStrategy, plan: object) -> str | None:
    """What makes ``plan`` unusable (not ViewRequests, a value outside a field's choices, an ``of=`` naming no
    earlier view, a network the strategy did not ask for), or None."""
    if isinstance(plan, (str, bytes, Mapping)) or not isinstance(plan, Iterable):
        return f"returned {type(plan).__name__} {plan!r:.40}, not a sequence of ViewRequest"
    planned: list[str] = []
    for i, request in enumerate(plan):
        if not isinstance(request, ViewRequest):
            return f"returned {type(request).__name__} {request!r:.40} as view {i}, not a ViewRequest"
        problem = view_problem(strategy, request, planned)
        if problem:
            return f"view '{request.key}': {problem}"
        planned.append(request.key)
    return None


def view_problem(strategy: SSLStrategy, request: ViewRequest, planned: list[str]) -> str | None:
    """What the trainer could not do with ``request`` after the views ``planned`` before it, or None."""
    if not isinstance(request.key, str) or not request.key:
        return f"key must be a non-empty string, got {request.key!r}"
    if request.key in planned:
        return "planned twice"
    for name, hint in VIEW_FIELDS.items():
        value = getattr(request, name)
        if typing.get_origin(hint) is typing.Literal and value not in typing.get_args(hint):
            return f"{name} {value!r} is not one of {', '.join(map(str, typing.get_args(hint)))}"
        if hint is bool and not isinstance(value, bool):
            return f"{name} must be True or False, got {value!r}"
    if request.of is not None and request.of not in planned:
        return f"of='{request.of}' names no view planned before it (planned: {', '.join(planned) or 'none'})"
    if request.model == "teacher" and strategy.teacher_decay() is None:
        return "runs through the teacher, but teacher_decay() returns None"
    if request.model == "peer" and not strategy.needs_peer():
        return "runs through the peer, but needs_peer() returns False"
    return None
