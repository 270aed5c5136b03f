"""``mtssl eval``, ``mtssl predict`` and ``mtssl report``: use a trained run's checkpoint."""
from __future__ import annotations

import json

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mtssl.cli.common import (checkpoint_option, err_console, friendly_errors, max_pixels_option,
                              parse_task_data_args)
from mtssl.cli.params import DEVICE, POSITIVE_INT
from mtssl.data.pixel_limit import pixel_limit
from mtssl.console.output import load_host, plain, say
from mtssl.console.progress import decode_progress

def parse_test_args(args: list[str]) -> dict[str, list[str]]:
    """Only ``--TASK-test SPEC`` (repeatable) is meaningful here."""
    parsed = parse_task_data_args(args)
    wrong = sorted(f"--{task}-{key}" for task, fields in parsed.items() for key in fields if key != "test")
    if wrong:
        raise click.UsageError(f"{', '.join(wrong)}: eval takes only --TASK-test SPEC options")
    return {task: fields["test"] for task, fields in parsed.items()}


def _cell(value: dict) -> str:
    mean, std = value.get("mean"), value.get("std")
    return "n/a" if mean is None else f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def results_tables(results: dict) -> list[Table]:
    """One table per task: a row per metric, a column per evaluated set (with its size)."""
    tables = []
    for task, sets in results.items():
        metrics = list(dict.fromkeys(m for s in sets.values() for m in s["aggregate"]))
        units = {s["extra"]["hd_unit"] for s in sets.values() if "hd_unit" in s.get("extra", {})}
        caption = "; ".join(f"hd_avg in {u}" for u in sorted(units))
        table = Table(title=plain(task), caption=plain(caption) if caption else None)
        table.add_column("metric")
        for label, entry in sets.items():
            table.add_column(plain(f"{label} (n={entry['n']})"), justify="right", overflow="fold")
        for metric in metrics:
            table.add_row(plain(metric), *(_cell(entry["aggregate"].get(metric, {})) for entry in sets.values()))
        tables.append(table)
    return tables


device_option = click.option("--device", type=DEVICE, default="auto", show_default=True,
                             help="Where to run: auto (CUDA when available, else CPU), cpu, cuda or cuda:N; "
                                  "independent of the device the run trained on.")


@click.command("eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("run_dir", type=click.Path(file_okay=False))
@checkpoint_option
@click.option("--batch-size", default=32, show_default=True, type=POSITIVE_INT,
              help="Images per forward pass: larger is faster and needs more memory.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result (with per-image records) as JSON.")
@device_option
@max_pixels_option
@click.pass_context
@friendly_errors
def eval_command(ctx, run_dir, checkpoint, batch_size, as_json, device, max_pixels):
    """Score a run on its validation split or on test sources.

    Test sources: --TASK-test SPEC (repeatable).

    \b
    Examples:
      mtssl eval runs/r1
      mtssl eval runs/r1 --seg-test pairs:imgs,masks --seg-test synthetic:n=50,domain=2
    Segmentation distances are in pixels at the run's training size. The
    result (with per-image records) is saved as RUN/eval.json, or for test
    sources as RUN/eval-TASK-SPEC....json (named by them).
    """
    from mtssl.evaluation.evaluate import evaluate_run, save_evaluation

    tests = parse_test_args(ctx.args) or None
    console = Console(stderr=True)
    with pixel_limit(max_pixels), decode_progress(console) as progress:
        results = evaluate_run(run_dir, tests, checkpoint, load_host(err_console()), batch_size, progress=progress,
                               device=device)
    target = save_evaluation(run_dir, tests, checkpoint, results)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    out = Console()
    for table in results_tables(results):
        out.print(table)
    for task, sets in results.items():
        for label, entry in sets.items():
            for note in entry.get("notes", []):
                say(out, "note", "yellow", f"{task} · {label}: {note}")
    out.print(plain(f"Saved {target}"), soft_wrap=True)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the outputs.")
@checkpoint_option
@click.option("--batch-size", default=16, show_default=True, type=POSITIVE_INT,
              help="Images per forward pass: larger is faster and needs more memory.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (and list them) instead of stopping.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@device_option
@max_pixels_option
@friendly_errors
def predict(run_dir, inputs, out_dir, checkpoint, batch_size, skip_bad, quiet, device, max_pixels):
    """Predict image files or folders.

    Writes class probabilities (CSV), masks and maps (PNG, original size), and index.csv: each input's path, the
    output name it got (stems made unique: x, x-2) and what became of it. Files in the folders that are not
    images are named, not predicted. Nothing is written unless the run finishes (an unreadable image stops it
    unless --skip-bad).

    RUN_DIR may also be a folder written by ``mtssl export`` (it holds metadata.json).
    """
    from mtssl.export.exported import is_export_dir, load_exported
    from mtssl.evaluation.inference import load_model
    from mtssl.evaluation.prediction import ignored_line, predict_files, scan_inputs

    console = Console(stderr=True, quiet=quiet)
    if is_export_dir(run_dir):
        loaded = load_exported(run_dir, load_host(err_console()))
    else:
        loaded = load_model(run_dir, checkpoint, load_host(err_console()), device)
    found = scan_inputs(inputs)
    if found.ignored:
        say(err_console(), "note", "yellow", ignored_line(found.ignored) + " (listed in index.csv)")
    with pixel_limit(max_pixels), Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(),
                                           TimeRemainingColumn(), console=console, transient=True) as bar:
        task_id = bar.add_task("predict", total=len(found.images))
        summary = predict_files(loaded, found, out_dir, batch_size, skip_bad,
                                lambda n: bar.advance(task_id, n))
    for item in summary.skipped:  # warnings, printed under --quiet too (it hides the progress bar)
        say(err_console(), "skipped", "yellow", f"{item.path}: {item.reason}")
    console.print(plain(f"Predicted {summary.images} image(s) with {loaded.path} (step {loaded.step}) into {out_dir}"
                        + (f"; {len(summary.skipped)} skipped" if summary.skipped else "")), soft_wrap=True)
    click.echo(str(out_dir))


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("run_dir", type=click.Path(file_okay=False))
@checkpoint_option
@click.option("--batch-size", default=32, show_default=True, type=POSITIVE_INT,
              help="Images per forward pass: larger is faster and needs more memory.")
@device_option
@max_pixels_option
@click.pass_context
@friendly_errors
def report(ctx, run_dir, checkpoint, batch_size, device, max_pixels):
    """Figures and a self-contained HTML page in RUN/report/.

    Test sets as in eval: --TASK-test SPEC.
    """
    from mtssl.evaluation.report import build_report

    tests = parse_test_args(ctx.args) or None
    console = Console(stderr=True)
    with pixel_limit(max_pixels), decode_progress(console) as progress:
        index = build_report(run_dir, checkpoint, tests, load_host(err_console()), batch_size, progress, device)
    console.print(plain(f"Report: {index}"), soft_wrap=True)
    click.echo(str(index))
