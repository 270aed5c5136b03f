"""``mtssl plugins``: every loaded plugin, what it registers, and the ones that failed to load.

The table imports no component's code (nor torch). ``--json`` also lists each component's options
(name, type, default, range, choices, description) from its pydantic options model, which lives in the
component's module: it imports every component (torch included), a few seconds once per call.
"""
from __future__ import annotations

import json

import click
from rich import box
from rich.console import Console
from rich.table import Table

from mtssl.cli.common import friendly_errors
from mtssl.console.output import load_host, plain, say
from mtssl.registry import Entry


@click.command()
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output, with each component's options (imports every component: slower).")
@friendly_errors
def plugins(as_json):
    """List loaded plugins and every component they register."""
    host = load_host()
    rows = []
    for kind, registry in host.registries.items():
        for entry in registry:
            info = host.plugins[entry.plugin]
            rows.append({"kind": kind, "name": entry.name, "aliases": list(entry.aliases), "plugin": entry.plugin,
                         "distribution": info.distribution, "version": info.version,
                         "description": entry.description, **(listed_options(entry) if as_json else {})})
    failures = [{"plugin": f.plugin, "distribution": f.distribution, "error": f.error} for f in host.failures]
    if as_json:
        click.echo(json.dumps({"components": rows, "failures": failures}, indent=2))
        return
    console = Console()
    console.print(components_table(rows))
    for f in failures:
        say(console, "disabled:", "red", f"{f['plugin']} ({f['distribution']}): {f['error']}")


def components_table(rows: list[dict]) -> Table:
    """Kind, name (aliases below it) and description, the description taking the width a terminal has left;
    where third-party distributions are loaded, a column says which distribution each component is from."""
    table = Table(title="mtssl components", box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("description", ratio=1, overflow="fold")
    third_party = any(row["distribution"] != "mtssl" for row in rows)
    if third_party:
        table.add_column("from", no_wrap=True)
    for row in rows:
        name = "\n".join([row["name"], *(f"({alias})" for alias in row["aliases"])])
        cells = [row["kind"], name, row["description"]]
        if third_party:
            cells.append(f"{row['distribution']} {row['version']}".strip())
        table.add_row(*(plain(cell) for cell in cells))
    return table


def listed_options(entry: Entry) -> dict:
    """``{"options": [...]}`` for a component (None: it declares no options model), or also
    ``options_error`` when its code cannot be imported (the listing goes on)."""
    from mtssl.options import declared_options, describe_options

    try:
        model = declared_options(entry.resolve())
    except Exception as exc:  # noqa: BLE001 - a broken component must not take the listing down
        return {"options": None, "options_error": str(exc)}
    return {"options": None if model is None else describe_options(model)}
