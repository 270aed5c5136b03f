"""``mtssl bench grid``: run an ablation grid (models x label budgets x seeds) and tabulate it."""
from __future__ import annotations

import shlex
import sys
from dataclasses import replace

import click
from click.core import ParameterSource

from mtssl.bench.grid import (GridSpec, GridStopped, ModelSpec, is_synthetic, load_grid, load_records, paper_grid,
                              parse_budgets, parse_seeds, run_grid)
from mtssl.cli.common import err_console, friendly_errors, max_pixels_option, parse_task_data_args
from mtssl.cli.params import setting_options
from mtssl.data.pixel_limit import pixel_limit
from mtssl.console.output import load_host, plain, say
from mtssl.run.config import TaskData


@click.group()
def bench() -> None:
    """Benchmarks: ablation grids with statistics."""


def apply_options(grid: GridSpec, model_specs, reference, seeds, checkpoint, data_args, run_options) -> GridSpec:
    """Command-line options on top of the grid file (or an empty grid)."""
    for text in model_specs:
        name, sep, spec = text.partition("=")
        if not sep or not name.strip():
            raise click.UsageError(f"--model expects NAME='--task SPEC [--bridge SPEC]', got '{text}'")
        model = ModelSpec.parse(name.strip(), spec, origin="--model")
        grid.models = [m for m in grid.models if m.name != model.name] + [model]
    if reference:
        grid.reference = reference
    if seeds:
        grid.seeds = parse_seeds(seeds)
    if checkpoint:
        grid.checkpoint = checkpoint
    for task, fields_ in parse_task_data_args(list(data_args)).items():
        if "labels" in fields_:
            grid.budgets[task] = parse_budgets(fields_.pop("labels"))
        current = grid.data.get(task, TaskData())
        if "train" in fields_ and "test" not in fields_ and not is_synthetic(fields_["train"]):
            # synthetic test sets say nothing about a model of the user's data: without --TASK-test and
            # without other test sets in the grid, the task is scored on its held-out validation split
            fields_["test"] = [t for t in current.test if not is_synthetic(t)]
        grid.data[task] = replace(current, **fields_)
    grid.run.update({k: v for k, v in run_options.items() if v is not None})
    return grid


@bench.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--grid", "grid_file", type=click.Path(dir_okay=False),
              help="Grid file (TOML/YAML/JSON): models, budgets, seeds, data, reference, main_metrics. "
                   "Default: the MultiMix paper's grid, unless --model is given.")
@click.option("--model", "model_specs", multiple=True, metavar="NAME=SPEC",
              help="Add or replace a model, e.g. Enc='--task cls'. Repeatable.")
@click.option("--models", "only", help="Comma-separated model names to run (default: all).")
@click.option("--reference", help="Model the paired t-tests compare every other model against.")
@click.option("--seeds", help="Number of seeds (0..N-1) or a comma-separated list.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), help="Checkpoint to evaluate (default best).")
@setting_options(grid=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Grid folder (results, runs, cells).")
@click.option("--report-only", is_flag=True, help="Only rebuild the tables from the stored cell results.")
@max_pixels_option
@click.pass_context
@friendly_errors
def grid(ctx, grid_file, model_specs, only, reference, seeds, checkpoint, out, report_only, max_pixels,
         **run_options):
    """Train and evaluate every cell of a grid; skip finished cells; write results.md/.csv and pvalues.csv.

    \b
    Per-task options: --TASK-data SPEC, --TASK-labels 10,50,all (the budget axis),
    --TASK-test SPEC (repeatable: in-domain first, then cross-domain), --TASK-val SPEC,
    --TASK-val-fraction F. A task whose --TASK-data is not synthetic and that has no --TASK-test
    is scored on each run's held-out validation split.

    \b
    SIGTERM or Ctrl-C stops the grid after the current step; the same command
    continues it, resuming the stopped cell from its checkpoint.
    """
    # no grid file and no --model: the paper's grid, shipped with mtssl
    spec = load_grid(grid_file) if grid_file else GridSpec(models=[]) if model_specs else paper_grid()
    spec = apply_options(spec, model_specs, reference, seeds, checkpoint, ctx.args, run_options)
    spec.check()
    console = err_console()
    if report_only:
        order = {m.name: i for i, m in enumerate(spec.models)}
        records = sorted(load_records(out), key=lambda r: (order.get(r.get("model"), len(order)), r.get("seed", 0)))
    else:
        models = [m.strip() for m in only.split(",") if m.strip()] if only else None
        from mtssl.run.threads import busy_machine_warning

        if busy := busy_machine_warning(spec.run.get("threads")):
            say(console, "Warning:", "yellow", busy)
        with pixel_limit(max_pixels):
            try:
                records = run_grid(spec, out, models, host=load_host(console),
                                   log=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
            except GridStopped as exc:
                say(console, "Stopped:", "yellow", f"{exc}; continue with: {repeat_command(ctx)}")
                sys.exit(exc.exit_code)
    from mtssl.bench.summary import write_outputs  # scipy: only when a grid is summarised
    paths = write_outputs(out, records, spec.reference, spec.main_metrics)
    failed = [r for r in records if r.get("status") != "ok"]
    console.print(plain(f"{len(records) - len(failed)} cells ok, {len(failed)} failed · "
                        + " · ".join(paths.values())), soft_wrap=True)
    click.echo(paths["markdown"])


def repeat_command(ctx: click.Context) -> str:
    """``mtssl bench grid`` with the options given on this command line (as parsed), to continue the grid."""
    words = ["mtssl", "bench", ctx.info_name]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            words += [param.opts[0]] if value else param.secondary_opts[:1]
        else:
            for item in value if param.multiple else [value]:
                words += [param.opts[0], str(item)]
    return shlex.join(words + list(ctx.args))
