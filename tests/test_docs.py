"""The documentation site builds without a warning, and the code the pages show runs as shown.

``mkdocs build --strict`` turns every warning (a broken link, a page missing from the navigation, an API
name mkdocstrings cannot render) into a failure. A Python block after ``<!-- test: run -->`` runs as it is
(its own asserts check what the page says it does). The worked-examples page is a package spelled out file
by file (``<!-- file: PATH -->`` before each code block); the test writes those files, installs the
package's entry point and runs the page's training command, so the guide's code is the code that runs.
(Shell commands on the other pages run in tests/test_readme_commands.py.)
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import flat, invoke, read_metrics
from test_readme_commands import readme_commands

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "plugins" / "examples.md"
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>\S+) -->\s*```\w*\n(?P<code>.*?)```", re.S)
RUN_BLOCK = re.compile(r"<!-- test: run -->\s*```python\n(?P<code>.*?)```", re.S)


def runnable_blocks() -> list[tuple[str, int, str]]:
    """(page, line, code) of every Python block marked ``<!-- test: run -->`` on any page."""
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text()
        for match in RUN_BLOCK.finditer(text):
            found.append((str(page.relative_to(ROOT)), text[:match.start()].count("\n") + 1, match["code"]))
    return found


BLOCKS = runnable_blocks()


def page_files(text: str) -> dict[str, str]:
    """``{path: content}`` of every code block a ``<!-- file: PATH -->`` comment names."""
    return {m["path"]: m["code"] for m in FILE_BLOCK.finditer(text)}


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]'; .ci/run installs it)")
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert not re.search(r"^(WARNING|ERROR)\b", result.stderr, re.M), result.stderr[-4000:]
    reference = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("ViewRequest", "ModelName", "StrategyContext", "read_options", "hookimpl"):
        assert f'id="mtssl.api.{name}"' in reference, name


def test_the_guide_marks_its_code_for_running():
    pages = {page for page, _, _ in BLOCKS}
    assert {"docs/plugins/options.md", "docs/plugins/targets.md", "docs/plugins/state.md",
            "docs/plugins/testing.md"} <= pages


@pytest.mark.parametrize("page, line, code", BLOCKS, ids=[f"{page}:L{line}" for page, line, _ in BLOCKS])
def test_a_marked_block_runs(page, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page}:{line}", "exec"), {"__name__": f"docs_block_{line}"})


def install_package(files: dict[str, str], site: Path) -> list[str]:
    """Write a package's files under ``site`` and a ``.dist-info`` carrying its ``mtssl`` entry points."""
    project = tomllib.loads(files["pyproject.toml"])["project"]
    modules = []
    for path, code in files.items():
        if path.endswith(".py"):
            target = site / path
            target.parent.mkdir(parents=True, exist_ok=True)
            (target.parent / "__init__.py").touch()
            target.write_text(code)
            modules.append(path[:-3].replace("/", "."))
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    points = "".join(f"{name} = {target}\n" for name, target in project["entry-points"]["mtssl"].items())
    (info / "entry_points.txt").write_text(f"[mtssl]\n{points}")
    return modules


@pytest.fixture
def brightness_package(tmp_path, monkeypatch):
    files = page_files(EXAMPLES.read_text())
    site = tmp_path / "site"
    modules = install_package(files, site)
    monkeypatch.syspath_prepend(str(site))
    yield files
    for module in [*modules, "mtssl_brightness"]:
        sys.modules.pop(module, None)


def test_the_page_spells_out_every_kind():
    files = page_files(EXAMPLES.read_text())
    hooks = re.findall(r"def (register_\w+)", files["mtssl_brightness/plugin.py"])
    assert sorted(hooks) == sorted(["register_sources", "register_tasks", "register_backbones", "register_strategies",
                                    "register_bridges", "register_weightings", "register_loggers"])
    for reference in re.findall(r'"(mtssl_brightness\.\w+):\w+"', files["mtssl_brightness/plugin.py"]):
        assert reference.replace(".", "/") + ".py" in files, reference


def test_the_worked_examples_train_as_the_page_shows(brightness_package, tmp_path):
    listed = invoke(["plugins"])
    assert listed.exit_code == 0, listed.output
    for name in ("tiny", "brightness", "consistency", "level", "ramp", "csv"):
        assert name in listed.stdout

    train = next(c for c in readme_commands(EXAMPLES.read_text()) if c.words[:2] == ("mtssl", "train"))
    result = invoke([*train.words[1:], "--out", str(tmp_path / "runs"), "--quiet", "--eval-every", "1"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    assert run.name == "brightness-demo"

    steps = [line for line in read_metrics(run) if "loss" in line]
    assert len(steps) == 3
    assert [s["weight/cls"] for s in steps] == [0.0, 0.5, 1.0]  # ramp:steps=2 over steps 0, 1, 2
    assert all(s["weight/brightness"] == 1.0 for s in steps)
    averages = [s["brightness/consistency/average"] for s in steps]
    assert all(0 < a < 1 for a in averages) and len(set(averages)) == 3  # the state moves every step
    assert "val/brightness/mae" in steps[-1]
    rows = (run / "scalars.csv").read_text().splitlines()
    assert any(",brightness/consistency/average," in row for row in rows)
    assert any(",val/brightness/mae," in row for row in rows)
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "tiny:width=8" and config["bridges"] == ["level:brightness->cls"]

    scored = invoke(["eval", str(run)])
    assert scored.exit_code == 0, scored.output
    assert "mae" in flat(scored.stdout)


def test_a_bad_option_of_an_example_is_one_line(brightness_package, tmp_path):
    result = invoke(["train", "--check", "--task", "brightness:consistency:momentum=1", "--size", "32",
                     "--backbone", "tiny", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == \
        "Error: strategy 'consistency': option momentum: must satisfy 0 <= x < 1, got 1"
