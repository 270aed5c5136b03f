"""The ``mtssl`` command group; each command's module is imported only when that command is used.

``mtssl --help`` lists the commands from :data:`COMMANDS` without importing
them, so it starts in the time Python and click take (no torch, numpy or
Rich). A test keeps each listed summary equal to its command's own.
"""
from __future__ import annotations

import importlib

import click

# name -> (module, attribute, one-line summary shown by ``mtssl --help``)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("mtssl.cli.train", "train", "Train a model."),
    "eval": ("mtssl.cli.evaluate", "eval_command", "Score a run on its validation split or on test sources."),
    "predict": ("mtssl.cli.evaluate", "predict", "Predict image files or folders."),
    "report": ("mtssl.cli.evaluate", "report", "Figures and a self-contained HTML page in RUN/report/."),
    "export": ("mtssl.cli.export", "export_command", "Write the model as TorchScript/ONNX for inference."),
    "data": ("mtssl.cli.data", "data", "Look at datasets before training on them."),
    "bench": ("mtssl.cli.bench", "bench", "Benchmarks: ablation grids with statistics."),
    "plugins": ("mtssl.cli.plugins", "plugins", "List loaded plugins and every component they register."),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def __call__(self, *args, **kwargs):
        """The ``mtssl`` program: once its command has ended, a late SIGTERM cannot turn the exit status it
        chose into death by signal while the interpreter shuts down (tests call :meth:`main` instead)."""
        try:
            return super().__call__(*args, **kwargs)
        finally:
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mtssl")
def main() -> None:
    """Multi-task semi-supervised learning for medical images."""


if __name__ == "__main__":
    main()
