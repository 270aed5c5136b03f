"""``mtssl data inspect``: what a data spec holds before training on it.

Lists every item (and every bad one), decodes it once, and reports counts per
class, items without a target (or with some of it missing), image sizes and
pixel formats, masks found or missing, and bad files with the reason. It
exits 0 whatever it finds; the report is the result.
"""
from __future__ import annotations

import json
from collections import Counter

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from mtssl.cli.common import err_console, friendly_errors, max_pixels_option
from mtssl.data.pixel_limit import pixel_limit
from mtssl.console.output import load_host, plain, say


def describe_array(image: np.ndarray) -> str:
    """``gray8``, ``gray16``, ``rgb8``, ``rgba8``... from a decoded array."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    name = {1: "gray", 2: "gray+alpha", 3: "rgb", 4: "rgba"}.get(channels, f"{channels}ch")
    bits = "f" if np.issubdtype(image.dtype, np.floating) else str(image.dtype.itemsize * 8)
    return f"{name}{bits}"


def task_targets(host, task: str | None) -> list:
    """The target declarations to try: the given task's, or every registered task's (default options)."""
    from mtssl.spec import parse_task

    if task:
        parsed = parse_task(task)
        return [host.create("task", parsed.name, **parsed.task.options).target]
    targets = []
    for entry in host.registries["task"]:
        try:
            declared = host.create("task", entry.name).target
        except Exception:  # noqa: BLE001 - a task that needs options cannot be tried blind
            continue
        if declared not in targets:
            targets.append(declared)
    return targets


def open_for_inspection(host, spec: str, task: str | None):
    """Open the source for the given task's targets, or for the first registered task's it serves."""
    from mtssl.data.prepare import open_source

    from mtssl.targets import UnservedTarget

    errors: list[ValueError] = []
    for target in task_targets(host, task):
        try:
            return open_source(host, spec, target, seed=0, skip_bad=True)
        except ValueError as exc:
            errors.append(exc)
    # a problem with the data itself (a missing folder) says more than "serves masks, not classes"
    errors.sort(key=lambda exc: isinstance(exc, UnservedTarget))
    raise errors[0] if errors else ValueError("no task is registered to inspect the source for")


def inspect_source(source, progress=None) -> dict:
    """Decode every item once and gather the report."""
    from mtssl.data.arrays import prepare_sample
    from mtssl.data.errors import DataError, Skipped
    from mtssl.data.prepare import listing_skips
    from mtssl.targets import known_mask

    bad = listing_skips(source)
    listed_bad = len(bad)
    sizes, modes, labels, targets = Counter(), Counter(), Counter(), Counter()
    class_labels = source.class_labels()
    for index in range(len(source)):
        try:
            sample = source.load(index)
            _, target = prepare_sample(source, index, 8)  # the checks training applies (mask values and size)
        except DataError as exc:
            bad.append(Skipped.of(exc))
        else:
            image = np.asarray(sample.image)
            sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
            modes[describe_array(image)] += 1
            known = known_mask(target, source.target)
            targets["complete" if known.all() else "partial" if known.any() else "none"] += 1
            if class_labels is not None and known.any():
                label = class_labels[index]
                names = source.class_names
                labels[names[label] if 0 <= label < len(names) else str(label)] += 1
        if progress:
            progress()
    target = source.target
    report = {"items": len(source), "good": len(source) - (len(bad) - listed_bad),
              "target": target.kind, "target_spec": target.as_dict(), "channels": source.channels,
              "sizes": dict(sizes.most_common()), "modes": dict(modes.most_common()),
              "bad": [b.as_dict() for b in bad], "remarks": list(source.remarks()),
              "unlabeled": targets["none"]}
    if targets["partial"]:
        report["partly_labeled"] = targets["partial"]
    if class_labels is not None:
        report["classes"] = {name: labels.get(name, 0) for name in source.class_names} or dict(labels)
    if target.spatial:
        missing = sum(1 for b in bad if b.reason.startswith(f"{target.kind} missing"))
        report["maps"] = {"found": len(source), "missing": missing,
                          "channels": list(source.class_names) or target.channels}
    groups = source.groups()
    if groups is not None:
        report["groups"] = len(set(groups))
    return report


def print_report(console: Console, spec: str, report: dict) -> None:
    table = Table(title=plain(f"{spec} ({report['target']} targets)"), show_header=True)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("items listed", str(report["items"]))
    table.add_row("good", str(report["good"]))
    table.add_row("image channels", str(report["channels"]))
    table.add_row("unlabeled (no target)", str(report["unlabeled"]))
    if "partly_labeled" in report:
        table.add_row(plain(f"{report['target']} targets partly missing"), str(report["partly_labeled"]))
    for name, count in report.get("classes", {}).items():
        table.add_row(plain(f"class {name}"), str(count))
    if "maps" in report:
        kind, maps = report["target"], report["maps"]
        channels = maps["channels"]
        table.add_row(plain(f"{kind} channels"), plain(", ".join(channels) if isinstance(channels, list)
                                                        else str(channels)))
        table.add_row(plain(f"{kind}s found"), str(maps["found"]))
        table.add_row(plain(f"{kind}s missing"), str(maps["missing"]))
    if "groups" in report:
        table.add_row("patients", str(report["groups"]))
    table.add_row("sizes (WxH)", plain(", ".join(f"{k} ×{v}" for k, v in report["sizes"].items()) or "-"))
    table.add_row("pixel formats", plain(", ".join(f"{k} ×{v}" for k, v in report["modes"].items()) or "-"))
    table.add_row("bad files", str(len(report["bad"])))
    console.print(table)
    for item in report["bad"]:
        say(console, "bad:", "red", f"{item['path']}: {item['reason']}")
    for remark in report["remarks"]:
        say(console, "note:", "yellow", remark)


@click.group()
def data() -> None:
    """Look at datasets before training on them."""


@data.command()
@click.argument("spec")
@click.option("--task", "task", metavar="TASK[:k=v]",
              help="Inspect for this task's targets, e.g. seg:channels=3 (default: the first registered task "
                   "whose targets the source serves).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@max_pixels_option
@friendly_errors
def inspect(spec, task, as_json, max_pixels):
    """Count classes, sizes, pixel formats, masks, patients and bad files of SPEC (e.g. kermany:chest_xray)."""
    source = open_for_inspection(load_host(err_console()), spec, task)
    with pixel_limit(max_pixels), Progress(TextColumn("inspecting"), BarColumn(), MofNCompleteColumn(),
                                           console=err_console(), transient=True, disable=as_json) as bar:
        task = bar.add_task("inspect", total=len(source))
        report = inspect_source(source, lambda: bar.advance(task))
    report["spec"] = spec
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(Console(), spec, report)
