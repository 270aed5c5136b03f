"""User-supplied text is printed as written, never parsed as Rich markup: errors, warnings, tables,
progress labels."""
from __future__ import annotations

import io
import json

from rich.console import Console

from conftest import flat, invoke
from data_trees import class_tree
from mtssl.console.progress import TrainingProgress, decode_progress
from tiny_run import tiny_run

WIDE = {"COLUMNS": "1000"}


def test_error_quoting_a_closing_tag_prints_verbatim(tmp_path):
    folder = tmp_path / "ward[bold]"
    folder.mkdir()
    config = folder / "x[/b].toml"
    result = invoke(["train", "--config", str(config)], env=WIDE)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Error: {config}: cannot read config file" in result.stderr


def test_spec_with_markup_in_an_error_prints_verbatim(tmp_path):
    result = invoke(["train", "--check", "--task", "cls:[/b]", "--out", str(tmp_path)], env=WIDE)
    assert result.exit_code == 2 and "unknown strategy '[/b]'" in result.stderr


def test_a_bracketed_folder_in_a_table_and_bad_file_lines(tmp_path):
    root = class_tree(tmp_path / "ward[bold]" / "[red]d", {"a": 2, "b": 2})
    (root / "a" / "junk[bold red].png").write_bytes(b"not an image")
    spec = f"folders:{root}"
    result = invoke(["data", "inspect", spec], env=WIDE)
    assert result.exit_code == 0, result.output
    assert flat(f"{spec} (class targets)") in flat(result.stdout)  # the table title
    assert f"bad: {root / 'a' / 'junk[bold red].png'}: cannot decode image" in result.stdout


def test_a_plugin_error_with_markup_is_listed_verbatim(plugin_factory):
    plugin_factory.install("mtssl-markup", {"mtssl_demo_markup": "raise ImportError('needs [bold]libfoo[/bold] [/]')\n"},
                           {"markup": "mtssl_demo_markup"})
    result = invoke(["plugins"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "ImportError: needs [bold]libfoo[/bold] [/]" in result.stdout
    warned = invoke(["train", "--check", "--task", "cls", "--out", "unused"], env=WIDE)
    assert "needs [bold]libfoo[/bold] [/]" in warned.stderr


def test_eval_tables_print_test_set_labels_verbatim(tmp_path, tmp_path_factory):
    root = class_tree(tmp_path / "x[/b]y", {"normal": 2, "pneumonia": 2})
    result = invoke(["eval", str(tiny_run(tmp_path_factory)), "--cls-test", f"folders:{root}"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert f"folders:{root} (n=4)" in result.stdout


def test_progress_labels_are_plain_text():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with decode_progress(console) as progress:
        tick = progress("cls: folders:/data/[/b]scans", 2)
        tick(2)
    with TrainingProgress(console, 2) as bar:
        bar.update(1, {"loss": 1.0, "[/b]/sup": 0.5, "step_time": 0.1})
    assert "[/b]" in out.getvalue()


def test_plugins_json_is_unchanged_by_markup(plugin_factory):
    plugin_factory.install("mtssl-markup2", {"mtssl_demo_markup2": "raise ImportError('[/b]')\n"},
                           {"markup2": "mtssl_demo_markup2"})
    failures = json.loads(invoke(["plugins", "--json"]).stdout)["failures"]
    assert failures[0]["error"].endswith("ImportError: [/b]")
