"""``mtssl data inspect``: what a data spec holds before training on it.

Lists every item (and every bad one), decodes it once, and reports counts per
class, image sizes and pixel formats, masks found or missing, and bad files
with the reason. It exits 0 whatever it finds; the report is the result.
"""
from __future__ import annotations

import json
from collections import Counter

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from mtssl.cli import err_console, friendly_errors, load_host


def describe_array(image: np.ndarray) -> str:
    """``gray8``, ``gray16``, ``rgb8``, ``rgba8``... from a decoded array."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    name = {1: "gray", 2: "gray+alpha", 3: "rgb", 4: "rgba"}.get(channels, f"{channels}ch")
    bits = "f" if np.issubdtype(image.dtype, np.floating) else str(image.dtype.itemsize * 8)
    return f"{name}{bits}"


def open_for_inspection(host, spec: str, target: str | None):
    """Open the source for the given target, or the first target kind it serves."""
    from mtssl.data.prepare import open_source

    if target:
        return open_source(host, spec, target, seed=0, skip_bad=True)
    try:
        return open_source(host, spec, "class", seed=0, skip_bad=True)
    except ValueError as first:
        try:
            return open_source(host, spec, "mask", seed=0, skip_bad=True)
        except ValueError:
            raise first from None


def inspect_source(source, progress=None) -> dict:
    """Decode every item once and gather the report."""
    from mtssl.data.arrays import prepare_sample
    from mtssl.data.errors import DataError, Skipped
    from mtssl.data.prepare import listing_skips

    bad = listing_skips(source)
    listed_bad = len(bad)
    sizes, modes, labels = Counter(), Counter(), Counter()
    class_labels = source.class_labels()
    for index in range(len(source)):
        try:
            sample = source.load(index)
            prepare_sample(source, index, 8)  # the checks training applies (mask values and size)
        except DataError as exc:
            bad.append(Skipped.of(exc))
        else:
            image = np.asarray(sample.image)
            sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
            modes[describe_array(image)] += 1
            if class_labels is not None:
                label = class_labels[index]
                names = source.class_names
                labels[names[label] if 0 <= label < len(names) else str(label)] += 1
        if progress:
            progress()
    report = {"items": len(source), "good": len(source) - (len(bad) - listed_bad),
              "target": source.target_kind, "sizes": dict(sizes.most_common()), "modes": dict(modes.most_common()),
              "bad": [b.as_dict() for b in bad], "remarks": list(source.remarks())}
    if source.target_kind == "class":
        report["classes"] = {name: labels.get(name, 0) for name in source.class_names} or dict(labels)
    else:
        missing = sum(1 for b in bad if b.reason.startswith("mask missing"))
        report["masks"] = {"found": len(source), "missing": missing}
    return report


def print_report(console: Console, spec: str, report: dict) -> None:
    table = Table(title=f"{spec} ({report['target']} targets)", show_header=True)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("items listed", str(report["items"]))
    table.add_row("good", str(report["good"]))
    for name, count in report.get("classes", {}).items():
        table.add_row(f"class {name}", str(count))
    if "masks" in report:
        table.add_row("masks found", str(report["masks"]["found"]))
        table.add_row("masks missing", str(report["masks"]["missing"]))
    table.add_row("sizes (WxH)", ", ".join(f"{k} ×{v}" for k, v in report["sizes"].items()) or "-")
    table.add_row("pixel formats", ", ".join(f"{k} ×{v}" for k, v in report["modes"].items()) or "-")
    table.add_row("bad files", str(len(report["bad"])))
    console.print(table)
    for item in report["bad"]:
        console.print(f"[red]bad:[/] {item['path']}: {item['reason']}", highlight=False)
    for remark in report["remarks"]:
        console.print(f"[yellow]note:[/] {remark}", highlight=False)


@click.group()
def data() -> None:
    """Look at datasets before training on them."""


@data.command()
@click.argument("spec")
@click.option("--target", type=click.Choice(["class", "mask"]), help="Target kind (default: what the source serves).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def inspect(spec, target, as_json):
    """Count classes, sizes, pixel formats, masks and bad files of SPEC (e.g. kermany:chest_xray)."""
    source = open_for_inspection(load_host(err_console()), spec, target)
    with Progress(TextColumn("inspecting"), BarColumn(), MofNCompleteColumn(), console=err_console(),
                  transient=True, disable=as_json) as bar:
        task = bar.add_task("inspect", total=len(source))
        report = inspect_source(source, lambda: bar.advance(task))
    report["spec"] = spec
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(Console(), spec, report)
