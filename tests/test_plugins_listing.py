"""``mtssl plugins`` as a person reads it: an 80-column terminal shows every description whole, and a
third-party component says which distribution it comes from."""
from __future__ import annotations

import json

from conftest import flat, invoke

NARROW = {"COLUMNS": "80"}


def descriptions() -> dict[str, str]:
    listing = json.loads(invoke(["plugins", "--json"]).stdout)["components"]
    return {f"{c['kind']} {c['name']}": c["description"] for c in listing}


def test_an_80_column_listing_keeps_every_description_whole():
    result = invoke(["plugins"], env=NARROW)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout
    header = next(line for line in lines if line.split()[:3] == ["kind", "name", "description"])
    assert "from" not in header.split()  # first-party only: no distribution column
    column = header.index("description")
    text = flat("".join(line[column:] for line in lines))  # the description column, top to bottom
    for component, description in descriptions().items():
        assert flat(description) in text, component


def test_a_third_party_component_names_its_distribution(plugin_factory):
    source = '''
from mtssl.hookspecs import hookimpl


@hookimpl
def register_strategies(register):
    register("shiny", "mtssl_plugins.strategies.fixmatch:FixMatch", description="a strategy from elsewhere")
'''
    plugin_factory.install("mtssl-shiny", {"mtssl_demo_shiny": source}, {"shiny": "mtssl_demo_shiny"})
    result = invoke(["plugins"], env=NARROW)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "shiny" in line)
    assert "a strategy from elsewhere" in row and "mtssl-shiny" in row
