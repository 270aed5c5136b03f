"""Every command in the code blocks of README.md and of the documentation pages (docs/) runs as written,
at tiny sizes, so a documented command cannot silently break.

The pages are parsed, not copied: each command of a ``bash`` block (and each ``$ `` line of an output
block) becomes one test case; a command shown on several pages runs once. Sizes, steps, seeds and data are made tiny (``--size 32 --steps 1`` and
small synthetic sources); placeholders (``RUN``, ``scans/``) get a tiny trained run and a few images.
Skipped, with the reason in pytest's summary: environment setup (venv, pip), the test suite itself,
commands whose real datasets are absent, and -- unless ``MTSSL_README_SLOW=1`` -- full runs of the
benchmark scripts, which take minutes even at tiny sizes (their options are still checked against
``--help``).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_DATA, flat, invoke
from tiny_run import tiny_run

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PLUGIN_GUIDE = ROOT / "docs" / "plugins"  # its commands need a plugin installed: tests/test_docs.py runs them
PAGES = [README, *sorted(p for p in (ROOT / "docs").rglob("*.md") if PLUGIN_GUIDE not in p.parents)]
SLOW = os.environ.get("MTSSL_README_SLOW") == "1"


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    expected: tuple[str, ...] = ()  # output lines shown under a `$ command` in the README
    line: int = 0
    page: str = "README.md"

    def __str__(self) -> str:
        return " ".join(self.words)


def readme_commands(text: str, page: str = "README.md") -> list[Command]:
    """Commands of fenced code blocks: bash blocks line by line, other blocks only their ``$ `` lines."""
    commands: list[Command] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[i])  # fences may be indented (inside a list item)
        if not fence:
            i += 1
            continue
        indent, language, start = len(fence.group(1)), fence.group(2), i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].strip().startswith("```"))
        block = [line[indent:] if line[:indent].isspace() else line for line in lines[start:end]]
        if language in ("bash", "sh", "console"):
            joined, first = "", start
            for k, raw in enumerate(block):
                if not joined:
                    first = start + k + 1
                joined += raw.rstrip()[:-1] + " " if raw.rstrip().endswith("\\") else raw
                if not raw.rstrip().endswith("\\"):
                    if joined.strip():
                        for part in joined.split("&&"):
                            words = shlex.split(part, comments=True)
                            if words:
                                commands.append(Command(tuple(words), line=first, page=page))
                    joined = ""
        elif language == "":
            for k, raw in enumerate(block):
                if raw.startswith("$ "):
                    output = tuple(o for o in block[k + 1:] if o.strip() and not o.startswith("$ "))
                    commands.append(Command(tuple(shlex.split(raw[2:])), output, start + k + 1, page))
        i = end + 1
    return commands


def documented_commands(pages: list[Path]) -> list[Command]:
    """Every page's commands, each distinct command (with its shown output) once, where it first appears."""
    seen, commands = set(), []
    for page in pages:
        for command in readme_commands(page.read_text(), str(page.relative_to(ROOT))):
            if (command.words, command.expected) not in seen:
                seen.add((command.words, command.expected))
                commands.append(command)
    return commands


COMMANDS = documented_commands(PAGES)


def set_option(words: list[str], name: str, value: str) -> list[str]:
    """Replace ``name VALUE`` (or ``name=VALUE``) in ``words``, or append it."""
    out, i, found = [], 0, False
    while i < len(words):
        if words[i] == name:
            out += [name, value]
            i, found = i + 2, True
        elif words[i].startswith(name + "="):
            out += [name, value]
            i, found = i + 1, True
        else:
            out.append(words[i])
            i += 1
    return out if found else out + [name, value]


def spec_paths(words: list[str]) -> list[str]:
    """Dataset folders named in data specs (``kermany:/data/x:split=test``, ``pairs:a,b``)."""
    paths = []
    for word in words:
        if ":" not in word or word.startswith("-") or word.startswith("synthetic"):
            continue
        name, _, rest = word.partition(":")
        if name in {"kermany", "folders", "pairs", "jsrt", "montgomery", "shenzhen", "nih"}:
            for segment in rest.split(":"):
                if "=" not in segment:
                    paths += [p for p in segment.split(",") if p]
    return paths


def tiny_train(words: list[str], out: Path) -> list[str]:
    words = words + ["--quiet"]
    for option, value in (("--size", "32"), ("--steps", "1"), ("--batch-size", "2"), ("--eval-every", "1"),
                          ("--out", str(out))):
        words = set_option(words, option, value)
    tasks = [words[i + 1].split(":")[0] for i, w in enumerate(words) if w == "--task"]
    for task in dict.fromkeys(tasks):
        tiny = dict(zip(TINY_DATA.get(task, [])[::2], TINY_DATA.get(task, [])[1::2]))
        data, labels = f"--{task}-data", f"--{task}-labels"
        if data in words:  # keep the README's source, at the tiny size
            given = words[words.index(data) + 1]
            if given.startswith("synthetic") and "n=" not in given and data in tiny:
                count = tiny[data].split("n=")[1]
                words = set_option(words, data, given + ("," if ":" in given else ":") + f"n={count}")
        elif data in tiny:
            words += [data, tiny[data]]
        if labels not in words and labels in tiny:
            words += [labels, tiny[labels]]
    return words


def tiny_grid(words: list[str], out: Path) -> list[str]:
    for option, value in (("--seeds", "1"), ("--size", "32"), ("--steps", "1"), ("--batch-size", "2"),
                          ("--eval-every", "1"), ("--out", str(out)), ("--models", "MultiMix"),
                          ("--cls-labels", "8"), ("--seg-labels", "4"), ("--cls-data", "synthetic:n=24"),
                          ("--seg-data", "synthetic:n=16"), ("--cls-test", "synthetic:n=4"),
                          ("--seg-test", "synthetic:n=4")):
        words = set_option(words, option, value)
    return words


TINY_SCRIPT_ARGS = {
    "benchmarks/speed.py": {"--sizes": "32", "--m": "2", "--steps": "1", "--warmup": "0", "--no-memory": None},
    "benchmarks/synthetic_baselines.py": {"--size": "32", "--steps": "1", "--seeds": "1"},
}


def run_script(script: Path, args: list[str]) -> tuple[int, str]:
    """Run a Python script in this process (``__main__``), return its exit code and output."""
    out = io.StringIO()
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    return code, out.getvalue()


def named_run(word: str, out: Path | None) -> Path | None:
    """``runs/NAME`` made by an earlier README command ``mtssl train ... --name NAME``: train it (tiny) into
    ``out`` and return its folder; with ``out`` None only say whether there is such a command."""
    name = Path(word).name
    if not word.startswith("runs/"):
        return None
    for command in COMMANDS:
        words = list(command.words)
        if words[:2] == ["mtssl", "train"] and "--name" in words and words[words.index("--name") + 1] == name:
            if out is None:
                return Path(word)
            result = invoke(tiny_train(words[1:], out / "runs"))
            assert result.exit_code == 0, result.output
            return Path(result.stdout.strip().splitlines()[-1])
    return None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory)


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.page}:L{c.line}:{c}"[:90] for c in COMMANDS])
def test_readme_command_runs(command, tmp_path, monkeypatch, run_dir):
    words = list(command.words)
    monkeypatch.chdir(tmp_path)
    head = words[0]
    if words[:3] == ["python", "-m", "pytest"]:
        pytest.skip("the test suite itself")
    if head in {"python3", "pip", "."} or words[:3] == ["python", "-m", "venv"]:
        pytest.skip(f"environment setup, not an mtssl command: {command}")
    missing = [p for p in spec_paths(words) if not Path(p).exists()]
    if missing:
        pytest.skip(f"needs real data that is not here: {', '.join(missing)}")

    shown_errors = [line for line in command.expected if line.startswith("Error:")]
    if head == "mtssl" and shown_errors:  # an example of an error message: reproduce it exactly
        result = invoke(words[1:] + ["--out", str(tmp_path / "runs")])
        assert result.exit_code == 2, result.output
        assert flat(shown_errors[0]) in flat(result.stderr)
        return
    if words[:3] == ["mtssl", "train", "--resume"] and not Path(words[3]).exists():
        # a placeholder run folder: resume a copy of a finished tiny run
        copy = shutil.copytree(run_dir, tmp_path / words[3])
        result = invoke([*words[1:3], str(copy), *words[4:], "--quiet"])
        assert result.exit_code == 0, result.output
        return
    if head == "tensorboard" or words[:2] == ["mkdocs", "serve"]:
        pytest.skip(f"starts a server that runs until stopped: {command}")
    if head == "mtssl" and words[1] == "train":
        if "--log" in words:  # MLflow in a folder of this test, not wherever MLflow would put it by default
            monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
            monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        result = invoke(tiny_train(words[1:], tmp_path / "runs"))
        assert result.exit_code == 0, result.output
        assert (Path(result.stdout.strip().splitlines()[-1]) / "checkpoints" / "last.safetensors").is_file()
        return
    if head == "mtssl" and words[1] in {"eval", "predict", "report", "export"}:
        if words[1] == "predict" and words[2] == "exported/":  # the folder the README's export command writes
            made = invoke(["export", str(run_dir), "--format", "torchscript", "--out", str(tmp_path / "exported")])
            assert made.exit_code == 0, made.output
        words = [str(run_dir) if w == "RUN" else str(named_run(w, tmp_path)) if named_run(w, None) else w
                 for w in words]
        if words[1] == "predict":
            for name in [w for w in words[3:] if not w.startswith("-")][:-1]:
                target = tmp_path / name
                if name.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                    target = target / "scan1.png"
                Image.fromarray(np.full((40, 36), 120, np.uint8)).save(target)
        result = invoke(words[1:])
        assert result.exit_code == 0, result.output
        return
    if head == "mtssl" and words[1:3] == ["bench", "grid"]:
        result = invoke(tiny_grid(words[1:], tmp_path / "grid"))
        assert result.exit_code == 0, result.output
        assert "1cellsok,0failed" in flat(result.stderr)
        return
    if head == "python" and words[1].startswith("benchmarks/"):
        script = ROOT / words[1]
        assert script.is_file(), f"README names {words[1]}, which does not exist"
        code, usage = run_script(script, ["--help"])
        assert code == 0, usage
        for flag in [w.split("=")[0] for w in words[2:] if w.startswith("--")]:
            assert flag in usage, f"{words[1]} has no option {flag}"
        if not SLOW:
            pytest.skip(f"benchmark script (minutes even at tiny sizes; MTSSL_README_SLOW=1 runs it): {command}")
        args = words[2:]
        for option, value in TINY_SCRIPT_ARGS.get(words[1], {}).items():
            args = set_option(args, option, value) if value is not None else args + [option]
        code, output = run_script(script, args)
        assert code == 0, output
        return
    pytest.fail(f"{command.page} line {command.line}: no rule for running '{command}'; teach this test about it")


def test_the_pages_have_the_commands_this_test_knows():
    """The parser finds the quickstart in the README, and the training baselines, eval/predict/report and the
    grid on some page."""
    assert any(str(c).startswith("mtssl train --task") for c in readme_commands(README.read_text()))
    for page, prefix in (("guide/training.md", "mtssl train --task"), ("guide/evaluation.md", "mtssl eval RUN")):
        assert any(str(c).startswith(prefix) for c in readme_commands((ROOT / "docs" / page).read_text())), page
    text = [str(c) for c in COMMANDS]
    assert sum(t.startswith("mtssl train --task") for t in text) >= 9
    for prefix in ("mtssl eval RUN", "mtssl predict RUN", "mtssl report RUN", "mtssl bench grid", "python -m pytest"):
        assert any(t.startswith(prefix) for t in text), prefix
