"""Shared fixtures: tiny synthetic runs, a plugin host, the CLI runner, throwaway plugin distributions."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from mtssl.cli.app import main
from mtssl.run.config import RunConfig, TaskData
from mtssl.plugins import PluginHost
from mtssl.run.rundir import RunDir

# Tiny synthetic data: enough images for a labeled, an unlabeled and a validation split.
TINY_DATA = {
    "cls": ["--cls-data", "synthetic:n=24", "--cls-labels", "8"],
    "seg": ["--seg-data", "synthetic:n=16", "--seg-labels", "4"],
}


def tiny_train_args(*tasks: str, bridges: tuple[str, ...] = (), out: str | Path, steps: int = 2,
                    name: str | None = None, seed: int = 0, extra: tuple[str, ...] = ()) -> list[str]:
    """CLI args for ``mtssl train`` on 32 px synthetic data with batch size 2."""
    args = ["train", "--quiet", "--size", "32", "--batch-size", "2", "--steps", str(steps),
            "--eval-every", "1", "--save-every", "1", "--seed", str(seed), "--out", str(out),
            "--precision", "fp32"]  # the tests' numbers do not depend on the machine's bf16 support
    if name:
        args += ["--name", name]
    for task in tasks:
        args += ["--task", task]
    for bridge in bridges:
        args += ["--bridge", bridge]
    for task_name in dict.fromkeys(t.split(":", 1)[0] for t in tasks):
        args += TINY_DATA.get(task_name, [])
    return args + list(extra)


TINY_TASK_DATA = {"cls": dict(train="synthetic:n=24", labels=8), "seg": dict(train="synthetic:n=16", labels=4)}


def tiny_config(out: str | Path, tasks: list[str], bridges: list[str] = (), **overrides) -> RunConfig:
    """The same tiny run as :func:`tiny_train_args`, as a config for building a Trainer directly."""
    names = [t.split(":", 1)[0] for t in tasks]
    settings = dict(size=32, batch_size=2, steps=2, eval_every=1, save_every=1, out=str(out), precision="fp32")
    settings.update(overrides)
    return RunConfig(tasks=list(tasks), bridges=list(bridges),
                     data={n: TaskData(**TINY_TASK_DATA[n]) for n in names if n in TINY_TASK_DATA}, **settings)


def tiny_trainer(host: PluginHost, out: str | Path, tasks: list[str], bridges: list[str] = (), **overrides):
    from mtssl.training.trainer import Trainer

    config = tiny_config(out, tasks, bridges, **overrides)
    return Trainer(config, host, RunDir.create(config))


def invoke(args: list[str], **kwargs) -> Result:
    """Run the CLI in-process; exceptions propagate so a failing test shows the real traceback."""
    return CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)


def spaced(text: str) -> str:
    """Text with every run of whitespace made one space: Rich wraps long lines at the terminal width, so a
    sentence of CLI output compared this way keeps its word boundaries whatever the width."""
    return " ".join(text.split())


def flat(text: str) -> str:
    """Text with all whitespace removed: Rich wraps tables and long lines at the terminal width, so compare
    CLI output this way and a long temporary path or a narrow terminal cannot break an assertion."""
    return "".join(text.split())


def train_run(*tasks: str, **kwargs) -> Path:
    """Train through the CLI and return the run directory it printed."""
    result = invoke(tiny_train_args(*tasks, **kwargs))
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def host() -> PluginHost:
    """The installed plugins (first-party ones included), loaded once."""
    loaded = PluginHost()
    assert not loaded.failures, loaded.failures
    return loaded


@pytest.fixture(autouse=True)
def _quiet_plugin_env(monkeypatch):
    """Tests start without plugin allow-lists or strict mode from the caller's shell."""
    monkeypatch.delenv("MTSSL_PLUGINS", raising=False)
    monkeypatch.delenv("MTSSL_PLUGINS_STRICT", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Tiny tensors run fastest single-threaded, and results stay bit-for-bit stable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class PluginFactory:
    """Writes a one-module package plus a ``*.dist-info`` with ``mtssl`` entry points into a folder on sys.path."""

    def __init__(self, root: Path, monkeypatch):
        self.root, self.monkeypatch = root, monkeypatch
        self.modules: list[str] = []
        monkeypatch.syspath_prepend(str(root))

    def install(self, distribution: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
        """``modules`` maps an importable module name to its source; ``entry_points`` maps name -> target."""
        for module, source in modules.items():
            (self.root / f"{module}.py").write_text(textwrap.dedent(source))
            self.modules.append(module)
        info = self.root / f"{distribution.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[mtssl]\n{lines}")

    def cleanup(self) -> None:
        for module in self.modules:
            sys.modules.pop(module, None)


@pytest.fixture
def plugin_factory(tmp_path, monkeypatch):
    """Install throwaway plugin distributions that importlib.metadata finds for this test only."""
    (tmp_path / "site").mkdir()
    factory = PluginFactory(tmp_path / "site", monkeypatch)
    yield factory
    factory.cleanup()
