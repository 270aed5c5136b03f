"""mtssl from Python: train, open, evaluate, predict, report and export runs in a script or a notebook.

::

    import mtssl

    run = mtssl.train(tasks=["cls:fixmatch", "seg:kl"], bridges=["saliency"], size=64, steps=300,
                      data={"cls": {"train": "synthetic:n=200", "labels": 20}}, out="runs", name="first")
    run.evaluate()                     # as mtssl eval RUN
    run.predict(images)                # numpy arrays or image files
    mtssl.open_run("runs/first").report()

Each call runs the code of its command (``mtssl train``, ``eval``, ``predict``, ``report``, ``export``):
the same settings give the same checks, the same one-line errors and the same weights. A stop
(Ctrl-C in a notebook, SIGINT/SIGTERM, a KeyboardInterrupt raised by ``on_step``) ends training at a step
boundary with the run saved and raises :class:`TrainingStopped`; ``exc.run.resume()`` continues it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from rich.console import Console

from mtssl.console.output import load_host
from mtssl.console.progress import DEFAULT_EVERY_S
from mtssl.data.pixel_limit import DEFAULT_MAX_PIXELS, pixel_limit
from mtssl.export import TOLERANCE
from mtssl.run.config import RunConfig, load_config_file
from mtssl.run.launch import Display, Interrupted, StepCallback, resumed_config, settle, train_run
from mtssl.run.rundir import RunDir
from mtssl.run.settings import task_tables
from mtssl.training import stopping

__all__ = ["Run", "TrainingStopped", "open_run", "train"]


class TrainingStopped(BaseException):
    """Training stopped with its run saved: ``run`` (a :class:`Run`) continues with ``run.resume()``.

    A BaseException, like the KeyboardInterrupt it usually comes from, so ``except Exception`` does not
    swallow a stop. ``step`` is the step the saved checkpoint holds.
    """

    def __init__(self, run: "Run", step: int, how: str):
        self.run, self.step = run, step
        super().__init__(f"{how}; the run is saved at step {step}: resume with "
                         f"mtssl.open_run({str(run.path)!r}).resume() (or mtssl train --resume {run.path})")


def train(*, config: str | Path | None = None, quiet: bool = False, verbose: bool = False,
          progress_every: float = DEFAULT_EVERY_S, max_pixels: int = DEFAULT_MAX_PIXELS,
          on_step: StepCallback | None = None, **settings: Any) -> "Run":
    """Train a run and return it.

    ``settings`` are the keys of a config file (``tasks``, ``bridges``, ``size``, ``steps``, ``data``, ``out``,
    ``name``, ``device``, ``threads``, ...; see the option table), checked by the same rules as
    ``mtssl train``. ``config`` names a TOML/YAML/JSON config file that ``settings`` override (``data`` key by
    key within each task, as the ``--TASK-...`` flags override it). ``on_step(step, logs)`` is called after every step; ``quiet`` hides the progress display.
    Raises :class:`TrainingStopped` when a signal or a KeyboardInterrupt stops the run.
    """
    raw = load_config_file(config) if config else {}
    merged = {**raw, **settings}
    if isinstance(raw.get("data"), dict) and isinstance(settings.get("data"), dict):
        merged["data"] = merged_data(raw["data"], settings["data"])
    origin = f"{config} with mtssl.train arguments" if config else "mtssl.train"
    run_config = settle(RunConfig.from_dict(merged, origin=origin), origin)
    return launch(run_config, None, Display.on_stderr(quiet, progress_every, verbose), on_step, max_pixels)


def merged_data(from_file: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The config file's ``data`` with ``given`` on top, key by key within each task (``labels`` alone keeps the
    file's ``train``), as ``mtssl train --config FILE --TASK-labels N`` does; a bare spec on either side is the
    task's ``train`` (``data.cls = "SPEC"``), so it keeps the other side's ``labels`` and ``test``."""
    merged = task_tables(from_file)
    for task, fields in task_tables(given).items():
        kept = merged.get(task)
        merged[task] = {**kept, **fields} if isinstance(kept, Mapping) and isinstance(fields, Mapping) else fields
    return merged



def open_run(path: str | Path) -> "Run":
    """The run in ``path`` (a folder ``mtssl train`` or :func:`train` wrote)."""
    run = Run(path)
    run.config  # noqa: B018 - a folder without a readable config.json fails here, naming it
    return run


def launch(config: RunConfig, resume: RunDir | None, display: Display, on_step: StepCallback | None,
           max_pixels: int) -> "Run":
    """:func:`~mtssl.run.launch.train_run`, with a stop turned into :class:`TrainingStopped`."""
    try:
        done = train_run(config, load_host(display.alerts), resume, display, on_step, max_pixels)
    except stopping.TrainingStopped as exc:
        raise TrainingStopped(Run(exc.run), exc.step, f"stopped by {stopping.signal_name(exc.signum)}") from None
    except Interrupted as exc:
        if exc.saved_step is None:
            raise
        raise TrainingStopped(Run(exc.path), exc.saved_step, "interrupted") from None
    return Run(done.path)


class Run:
    """A run directory: its settings, its log, and what the commands do with a trained run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def config(self) -> RunConfig:
        """The run's resolved settings (its ``config.json``)."""
        return RunDir(self.path).config()

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One record per step: losses, learning rate and validation scores (its ``metrics.jsonl``)."""
        return RunDir(self.path).metrics()

    @property
    def summary(self) -> dict[str, Any] | None:
        """What the finished run reported (``summary.json``); None while it has not finished."""
        return RunDir(self.path).read_json(RunDir.SUMMARY) if (self.path / RunDir.SUMMARY).is_file() else None

    def resume(self, device: str | None = None, threads: int | None = None, quiet: bool = False,
               verbose: bool = False, progress_every: float = DEFAULT_EVERY_S, max_pixels: int = DEFAULT_MAX_PIXELS,
               on_step: StepCallback | None = None) -> "Run":
        """Continue a stopped run from its ``last`` checkpoint with its own settings (as ``mtssl train --resume``);
        only the machine's ``device`` and ``threads`` may change."""
        run = RunDir(self.path)
        config = resumed_config(run, device=device, threads=threads)
        return launch(config, run, Display.on_stderr(quiet, progress_every, verbose), on_step, max_pixels)

    def evaluate(self, tests: Mapping[str, str | Iterable[str]] | None = None, checkpoint: str = "best",
                 batch_size: int = 32, device: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                 save: bool = True) -> dict:
        """Scores as ``mtssl eval``: ``{task: {set: {"n", "aggregate", "per_image", ...}}}``, on the validation
        split, or on ``tests`` (``{task: spec or [specs]}``); ``save`` writes them into the run as the command
        does."""
        from mtssl.evaluation.evaluate import evaluate_run, save_evaluation

        chosen = test_specs(tests)
        with pixel_limit(max_pixels):
            results = evaluate_run(self.path, chosen, checkpoint, plugin_host(), batch_size, device=device)
        if save:
            save_evaluation(self.path, chosen, checkpoint, results)
        return results

    def predict(self, inputs, out: str | Path | None = None, checkpoint: str = "best", batch_size: int = 16,
                device: str = "auto", skip_bad: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS):
        """Predict images.

        ``inputs``: image files or folders, numpy images (HxW or HxWxC, 8/16-bit or float), a stack of them
        (an array ``[N, H, W]`` or ``[N, H, W, C]``), or a list mixing files and arrays. With ``out``, files and
        folders are predicted into that folder as ``mtssl predict`` does and its summary is returned;
        without it, the :class:`~mtssl.evaluation.inference.Predictions` (probabilities per task, bridge maps
        at the model's size) come back in memory.
        """
        from mtssl.data.decode import read_image
        from mtssl.evaluation.inference import load_model
        from mtssl.evaluation.prediction import predict_files, predict_images, scan_inputs

        items = input_items(inputs)
        loaded = load_model(self.path, checkpoint, plugin_host(), device)
        with pixel_limit(max_pixels):
            if out is None and skip_bad:
                raise ValueError("predict(skip_bad=True) skips unreadable files while writing them into out=...; "
                                 "without out, predictions come back in memory and a bad file is an error")
            if out is not None:
                if any(isinstance(item, np.ndarray) for item in items):
                    raise ValueError("predict(out=...) writes files for image files and folders; give arrays "
                                     "without out to get their predictions back")
                return predict_files(loaded, items, out, batch_size, skip_bad)
            images = [image for item in items for image in
                      ([item] if isinstance(item, np.ndarray) else map(read_image, scan_inputs([item]).images))]
            return predict_images(loaded, images, batch_size)

    def report(self, tests: Mapping[str, str | Iterable[str]] | None = None, checkpoint: str = "best",
               batch_size: int = 32, device: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS) -> Path:
        """Figures and an HTML page in ``RUN/report/`` (as ``mtssl report``); returns the page's path."""
        from mtssl.evaluation.report import build_report

        with pixel_limit(max_pixels):
            return build_report(self.path, checkpoint, test_specs(tests), plugin_host(), batch_size, device=device)

    def export(self, out: str | Path, format: str = "both", checkpoint: str = "best",
               tolerance: float = TOLERANCE) -> Path:
        """TorchScript and/or ONNX files with ``metadata.json`` in ``out`` (as ``mtssl export``); returns the
        metadata's path."""
        from mtssl.evaluation.inference import load_model
        from mtssl.export.write import export_run

        host = plugin_host()
        return export_run(load_model(self.path, checkpoint, host, device="cpu"), out, format, host, checkpoint,
                          tolerance)


def plugin_host():
    """The installed plugins; one that fails to load is a warning on standard error, as in the commands."""
    return load_host(Console(stderr=True))


def test_specs(tests: Mapping[str, str | Iterable[str]] | None) -> dict[str, list[str]] | None:
    """``{task: spec}`` or ``{task: [specs]}`` as the evaluation takes them (None: the validation split)."""
    if not tests:
        return None
    return {task: [specs] if isinstance(specs, str) else list(specs) for task, specs in tests.items()}


def input_items(inputs) -> list:
    """Paths and single images from what :meth:`Run.predict` accepts."""
    if isinstance(inputs, np.ndarray):
        return [inputs] if inputs.ndim == 2 else list(inputs)
    if isinstance(inputs, (str, Path)):
        return [Path(inputs)]
    items = [item if isinstance(item, np.ndarray) else Path(item) for item in inputs]
    if not items:
        raise ValueError("predict: no inputs given")
    return items
