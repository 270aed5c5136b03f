"""An ablation grid: named models (task/bridge specs) x per-task label budgets x seeds.

Each cell is one training run (the same :class:`~mtssl.training.trainer.Trainer` as
``mtssl train``) followed by :func:`mtssl.evaluation.evaluate.evaluate_run` on the
run's checkpoint. A cell's result is a JSON file in ``OUT/cells/``; a re-run
skips every cell whose file says it finished with the same settings, and
retries failed ones. A failing cell is recorded and the grid goes on.

A signal (SIGTERM from a scheduler, Ctrl-C) stops the grid with
:class:`GridStopped`: inside training after the current step, with the
cell's ``last`` checkpoint saved as ``mtssl train`` does. The re-run
resumes that cell from its checkpoint, bit for bit as ``mtssl train
--resume`` would, instead of training it again.

A task without test sources is scored on its run's held-out validation
split (``val``): drawn from the training data, so it is the only test set
that matches a user's own data without further options.

A model varies only the budgets of the tasks it has, so a single-task model
is not trained again for every budget of a task it does not have.

The grid itself is data (a TOML/YAML/JSON file or ``--model`` options)::

    reference = "B"                 # the model the t-tests compare against
    seeds = 5
    [models]
    A = "--task TASK1"
    B = "--task TASK1:STRATEGY --task TASK2 --bridge BRIDGE"
    [budgets]
    TASK1 = [100, 1000, "all"]
    [main_metrics]
    TASK1 = ["acc", "f1_*"]         # fnmatch patterns over the evaluation's metric names
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import shutil
import signal
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from mtssl.run.config import ConfigError, RunConfig, TaskData, load_config, load_config_file
from mtssl.run.settings_table import BY_KEY, DEFAULT_STEPS, GRID_RUN_KEYS
from mtssl.spec import parse_source, parse_task
from mtssl.training.stopping import StartupStopped, TrainingStopped, signal_name, stop_startup_on_signals

Budget = int | str
CHECKPOINTS = ("best", "last")
SYNTHETIC = "synthetic"
"""The built-in phantom source: the paper grid's training and test data."""
CELL_MARK = "grid-cell.json"
"""Written into a cell's run folder when it starts: which cell and settings the folder belongs to."""


class GridError(ValueError):
    """A grid definition that cannot be run; the message names the file or option."""


class GridStopped(BaseException):
    """The grid stopped on a signal; a re-run of the same command continues it.

    A BaseException like :class:`~mtssl.training.stopping.TrainingStopped`,
    so the per-cell ``except Exception`` does not record it as a failed cell.
    ``step`` is the step the cell's ``last`` checkpoint holds when training
    stopped cleanly, else None.
    """

    def __init__(self, signum: int, cell: str | None, step: int | None = None):
        self.signum, self.cell, self.step = int(signum), cell, step
        where = f" in cell {cell}" if cell else ""
        saved = f" after step {step} (its checkpoint is kept)" if step is not None else ""
        super().__init__(f"stopped by {signal_name(self.signum)}{where}{saved}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass(frozen=True)
class ModelSpec:
    """A named model: the task, bridge and weighting specs ``mtssl train`` would get."""

    name: str
    tasks: tuple[str, ...]
    bridges: tuple[str, ...] = ()
    weighting: str | None = None  # None: the grid's run setting, else the default (equal)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(parse_task(t).name for t in self.tasks)

    @classmethod
    def parse(cls, name: str, spec: str | dict, origin: str = "grid") -> "ModelSpec":
        """From ``"--task a:s --task b --bridge x [--weighting w]"`` or ``{tasks = [...], bridges = [...]}``."""
        weighting = None
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"tasks", "bridges", "weighting"})
            if unknown:
                raise GridError(f"{origin}: model '{name}': unknown key(s) {', '.join(unknown)} "
                                "(tasks, bridges, weighting)")
            tasks, bridges = list(spec.get("tasks", [])), list(spec.get("bridges", []))
            weighting = spec.get("weighting")
        else:
            tasks, bridges = [], []
            words = shlex.split(str(spec))
            for flag, value in zip(words[::2], words[1::2]):
                if flag == "--task":
                    tasks.append(value)
                elif flag == "--bridge":
                    bridges.append(value)
                elif flag == "--weighting":
                    weighting = value
                else:
                    raise GridError(f"{origin}: model '{name}': expected '--task SPEC', '--bridge SPEC' and "
                                    f"'--weighting SPEC' pairs, got '{flag}'")
            if len(words) % 2:
                raise GridError(f"{origin}: model '{name}': '{words[-1]}' has no value")
        if not tasks:
            raise GridError(f"{origin}: model '{name}' has no --task")
        return cls(name, tuple(tasks), tuple(bridges), weighting)

    def describe(self) -> str:
        return " ".join([*(f"--task {t}" for t in self.tasks), *(f"--bridge {b}" for b in self.bridges),
                         *([f"--weighting {self.weighting}"] if self.weighting else [])])


@dataclass
class GridSpec:
    """Everything a grid run needs: models, budgets, seeds, data, run settings, statistics."""

    models: list[ModelSpec]
    budgets: dict[str, list[Budget]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: list(range(5)))
    reference: str | None = None
    main_metrics: dict[str, list[str]] = field(default_factory=dict)
    data: dict[str, TaskData] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = "best"

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise GridError(f"no model named '{name}' in this grid (models: {', '.join(m.name for m in self.models)})")

    def check(self) -> None:
        if not self.models:
            raise GridError("the grid has no models: give --grid FILE or --model NAME='--task ...'")
        for model in self.models:  # every run setting, as `mtssl train` would check it
            try:
                RunConfig.from_dict({**self.run, "tasks": list(model.tasks), "bridges": list(model.bridges),
                                     "data": {t: asdict(d) for t, d in self.data.items()}},
                                    origin=f"grid model '{model.name}'")
            except ConfigError as exc:
                raise GridError(str(exc)) from None
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise GridError(f"model names must be unique, got {names}")
        if self.reference is not None:
            self.model(self.reference)
        if not self.seeds:
            raise GridError("no seeds to run")
        if self.checkpoint not in CHECKPOINTS:
            raise GridError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got '{self.checkpoint}'")
        known = {t for m in self.models for t in m.task_names}
        for kind, mapping in (("budgets", self.budgets), ("data", self.data), ("main_metrics", self.main_metrics)):
            stray = sorted(set(mapping) - known)
            if stray:
                raise GridError(f"{kind} given for task(s) {', '.join(stray)} that no model has "
                                f"(tasks: {', '.join(sorted(known))})")
        for task, values in self.budgets.items():
            if not values:
                raise GridError(f"budgets for task '{task}' are empty")


GRID_KEYS = {"models", "budgets", "seeds", "reference", "main_metrics", "data", "run", "checkpoint"}


def parse_seeds(value: int | str | Iterable[int]) -> list[int]:
    """``5`` -> 0..4; ``"0,3,7"`` or ``[0, 3, 7]`` -> those seeds."""
    if isinstance(value, int):
        if value < 1:
            raise GridError(f"seeds: a count must be at least 1, got {value} (for seed 0 alone write '0,')")
        return list(range(value))
    if isinstance(value, str):
        text = value.strip()
        if "," not in text:
            if not text.isdigit():
                raise GridError(f"seeds: expected a count or a comma-separated list, got '{value}'")
            return parse_seeds(int(text))
        value = [v for v in text.split(",") if v.strip()]
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise GridError(f"seeds: expected integers, got {value!r}") from None


def parse_budgets(value: Budget | str | Iterable[Budget]) -> list[Budget]:
    """``"10,50,all"`` or ``[10, 50, "all"]`` -> ``[10, 50, "all"]``."""
    items = str(value).split(",") if isinstance(value, (str, int)) else list(value)
    result: list[Budget] = []
    for item in items:
        text = str(item).strip()
        if text.lower() == "all":
            result.append("all")
        elif text.isdigit() and int(text) > 0:
            result.append(int(text))
        else:
            raise GridError(f"label budget '{text}': expected a positive number or 'all'")
    return result


def grid_from_dict(raw: dict[str, Any], origin: str = "grid") -> GridSpec:
    unknown = sorted(set(raw) - GRID_KEYS)
    if unknown:
        raise GridError(f"{origin}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(GRID_KEYS))}")
    models = [ModelSpec.parse(n, s, origin) for n, s in (raw.get("models") or {}).items()]
    run = dict(raw.get("run") or {})
    bad = sorted(set(run) - GRID_RUN_KEYS)
    if bad:
        raise GridError(f"{origin}: run: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(GRID_RUN_KEYS))}")
    try:
        data = RunConfig.from_dict({"data": raw.get("data") or {}}, origin).data
        RunConfig.from_dict(run, f"{origin}: run")  # types and ranges, as `mtssl train` checks them
    except ConfigError as exc:
        raise GridError(str(exc)) from None
    return GridSpec(
        models=models,
        budgets={t: parse_budgets(v) for t, v in (raw.get("budgets") or {}).items()},
        seeds=parse_seeds(raw.get("seeds", 5)),
        reference=raw.get("reference"),
        main_metrics={t: [str(p) for p in ([v] if isinstance(v, str) else v)]
                      for t, v in (raw.get("main_metrics") or {}).items()},
        data=data,
        run=run,
        checkpoint=str(raw.get("checkpoint", "best")),
    )


def load_grid(path: str | Path) -> GridSpec:
    return grid_from_dict(load_config_file(path), origin=str(path))


PAPER_GRID = "multimix_grid.toml"
"""The MultiMix paper's ablation grid (Table 2), shipped with the package."""


def paper_grid() -> GridSpec:
    """The default grid of ``mtssl bench grid``: the paper's nine models, budgets, seeds and synthetic data."""
    from importlib.resources import files

    resource = files("mtssl.bench").joinpath(PAPER_GRID)
    return grid_from_dict(load_config(resource.read_text(), PAPER_GRID), origin=f"mtssl/bench/{PAPER_GRID}")


@dataclass(frozen=True)
class Cell:
    """One training run of the grid: a model, a budget per task it has, a seed."""

    model: ModelSpec
    budgets: tuple[tuple[str, Budget], ...]
    seed: int

    @property
    def cell_id(self) -> str:
        parts = [_slug(self.model.name), *(f"{_slug(t)}-{b}" for t, b in self.budgets), f"s{self.seed}"]
        return "__".join(parts)

    @property
    def row(self) -> tuple[str, tuple[tuple[str, Budget], ...]]:
        """What the seeds of one table row share."""
        return self.model.name, self.budgets


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def task_budgets(grid: GridSpec, task: str) -> list[Budget]:
    """The grid's budgets for ``task``; else its data's ``labels``; else the task's own default."""
    if grid.budgets.get(task):
        return grid.budgets[task]
    labels = grid.data[task].labels if task in grid.data else None
    return [labels if labels is not None else "default"]


def expand_cells(grid: GridSpec, models: Iterable[str] | None = None) -> list[Cell]:
    """Every cell, seed by seed (so a grid stopped early has every model at fewer seeds).

    Each model crosses only the budgets of its own tasks.
    """
    chosen = [grid.model(n) for n in models] if models else grid.models
    cells = []
    for seed in grid.seeds:
        for model in chosen:
            tasks = model.task_names
            for combo in itertools.product(*(task_budgets(grid, t) for t in tasks)):
                cells.append(Cell(model, tuple(zip(tasks, combo)), seed))
    return cells


def cell_config(grid: GridSpec, cell: Cell, runs_dir: Path) -> RunConfig:
    """The RunConfig ``mtssl train`` would build for this cell."""
    data = {}
    for task, budget in cell.budgets:
        base = grid.data.get(task, TaskData())
        data[task] = replace(base, labels=None if budget == "default" else budget, test=list(base.test))
    run = dict(grid.run)
    if run.get("steps") is None and run.get("epochs") is None:
        run["steps"] = DEFAULT_STEPS
    run.setdefault("eval_every", min(100, int(run["steps"])) if run.get("steps") else 100)
    config = RunConfig(tasks=list(cell.model.tasks), bridges=list(cell.model.bridges), data=data,
                       seed=cell.seed, out=str(runs_dir), name=cell.cell_id, **run)
    if cell.model.weighting:
        config.weighting = cell.model.weighting
    if "save_every" not in run:  # one resumable checkpoint at the end, unless asked (a stop saves one too)
        config.save_every = config.steps or config.save_every
    return config


def is_synthetic(spec: str) -> bool:
    """Whether a data spec names the built-in synthetic source."""
    return parse_source(spec).name == SYNTHETIC


def cell_tests(config: RunConfig, tasks: Iterable[str]) -> dict[str, list[str]]:
    """What each task is scored on: its test sources, else its run's held-out validation split."""
    from mtssl.evaluation.evaluate import VAL

    return {task: list(config.data[task].test) or [VAL] for task in tasks}


def describe_tests(grid: GridSpec, tasks: Iterable[str]) -> list[str]:
    """One line per task: the sets it is scored on, and where ``val`` comes from."""
    from mtssl.evaluation.evaluate import VAL

    lines = []
    for task in dict.fromkeys(tasks):
        data = grid.data.get(task, TaskData())
        tests = data.test or [VAL]
        line = f"{task} is tested on {', '.join(tests)}"
        if VAL in tests:
            origin = (f"'{data.val}'" if data.val else
                      f"{data.val_fraction:.0%} of '{data.train or 'the default source'}'")
            line += (f" ({VAL}: each run's held-out validation split, {origin}: the training data's own "
                     f"distribution; give --{task}-test SPEC for an independent test set)")
        lines.append(line)
    return lines


SETTINGS_ADDED_LATER = ("architecture",)
"""Settings newer than stored grid results: left out of the fingerprint at their default (the value that
reproduces those results), so adding a setting does not make every finished cell stale."""


def settings_fingerprint(config: RunConfig, checkpoint: str) -> str:
    """What makes a stored cell result stale: the run's settings (not where it lives) and the checkpoint."""
    settings = config.to_dict()
    settings.pop("out"), settings.pop("name")
    settings.pop("threads")  # how many CPU threads ran it says nothing about the result
    for key in SETTINGS_ADDED_LATER:
        if settings.get(key) == BY_KEY[key].default:
            settings.pop(key)
    settings["_checkpoint"] = checkpoint
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


Evaluator = Callable[..., dict]


def default_evaluator() -> Evaluator:
    try:
        from mtssl.evaluation.evaluate import evaluate_run
    except ImportError as exc:  # pragma: no cover - only while the evaluation module is missing
        raise GridError(f"the grid needs mtssl.evaluation.evaluate.evaluate_run, which cannot be imported ({exc})") from exc
    return evaluate_run


def strip_per_image(result: dict) -> dict:
    """Keep counts and aggregates; per-image records stay in the run directory's evaluation, not in the grid."""
    return {task: {test: {"n": entry.get("n"), "aggregate": entry.get("aggregate", {})}
                   for test, entry in tests.items()}
            for task, tests in result.items()}


def resumable_run(run_path: Path, fingerprint: str):
    """The run folder of an interrupted attempt at this cell with the same settings, if it has a checkpoint."""
    from mtssl.run.rundir import RunDir

    try:
        mark = json.loads((run_path / CELL_MARK).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(mark, dict) or mark.get("fingerprint") != fingerprint:
        return None
    return RunDir(run_path) if (run_path / "checkpoints" / "last.safetensors").is_file() else None


def start_trainer(config: RunConfig, cell: Cell, fingerprint: str, host, log: Callable[[str], None]):
    """The cell's trainer: resumed from an interrupted attempt's ``last`` (as ``train --resume``), else new."""
    from mtssl.run.rundir import RunDir
    from mtssl.training.trainer import Trainer

    run_path = Path(config.out) / cell.cell_id
    run = resumable_run(run_path, fingerprint)
    if run is not None:
        try:
            trainer = Trainer(run.config(), host, run)
            trainer.resume("last")
            log(f"resuming at step {trainer.step}/{trainer.total_steps}")
            return trainer
        except Exception as exc:  # noqa: BLE001 - a damaged attempt is started over, not recorded as a failure
            log(f"cannot resume the earlier attempt ({type(exc).__name__}: {exc}); starting over")
    if run_path.exists():
        shutil.rmtree(run_path)  # a failed or unresumable earlier attempt
    run = RunDir.create(config)
    run.write_json(CELL_MARK, {"cell": cell.cell_id, "fingerprint": fingerprint})
    return Trainer(config, host, run)


def run_cell(grid: GridSpec, cell: Cell, out: Path, host, evaluate: Evaluator,
             log: Callable[[str], None] = print) -> dict:
    """Train (or resume) and evaluate one cell; return its record (never raises for a cell's own failure).

    A stop (:class:`~mtssl.training.stopping.TrainingStopped`, a signal) passes through: the cell
    stays resumable. A failed attempt is not resumed: its retry starts over.
    """
    runs_dir = out / "runs"
    record: dict[str, Any] = {"cell": cell.cell_id, "model": cell.model.name, "spec": cell.model.describe(),
                              "budgets": {t: b for t, b in cell.budgets}, "seed": cell.seed}
    try:
        config = cell_config(grid, cell, runs_dir)
        record["fingerprint"] = settings_fingerprint(config, grid.checkpoint)
        trainer = start_trainer(config, cell, record["fingerprint"], host, log)
        summary = trainer.fit()
        tests = cell_tests(config, (task for task, _ in cell.budgets))
        metrics = evaluate(trainer.run.path, tests=tests, checkpoint=grid.checkpoint, host=host)
        record.update(status="ok", run_dir=str(trainer.run.path), wall_time_s=summary.get("wall_time_s"),
                      metrics=strip_per_image(metrics))
    except Exception as exc:  # noqa: BLE001 - one broken cell must not stop the grid
        (runs_dir / cell.cell_id / CELL_MARK).unlink(missing_ok=True)
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=8))
    return record


def cell_file(out: Path, cell: Cell) -> Path:
    return out / "cells" / f"{cell.cell_id}.json"


def stored_record(out: Path, cell: Cell, fingerprint: str) -> dict | None:
    """A finished result for this cell with the same settings, or None."""
    file = cell_file(out, cell)
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except json.JSONDecodeError:
        return None
    return record if record.get("status") == "ok" and record.get("fingerprint") == fingerprint else None


def write_record(out: Path, cell: Cell, record: dict) -> None:
    file = cell_file(out, cell)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    tmp.replace(file)


def run_grid(grid: GridSpec, out: str | Path, models: Iterable[str] | None = None, host=None,
             evaluate: Evaluator | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Run every cell not already finished; return all records (stored and new) in grid order.

    Raises :class:`GridStopped` (naming the cell) when a signal stops it.
    """
    from mtssl.plugins import PluginHost

    grid.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    host = host or PluginHost()
    evaluate = evaluate or default_evaluator()
    cells = expand_cells(grid, models)
    for line in describe_tests(grid, (task for cell in cells for task, _ in cell.budgets)):
        log(line)
    records: list[dict] = []
    cell = None
    try:
        # Outside a training loop (decoding data, evaluating) a signal unwinds at once, as during a run's
        # start-up; inside one, the trainer's own handler takes the first signal and stops after the step.
        with stop_startup_on_signals((signal.SIGINT, signal.SIGTERM)):
            for i, cell in enumerate(cells, 1):
                records.append(run_or_skip(grid, cell, f"[{i}/{len(cells)}] {cell.cell_id}", out, host, evaluate,
                                           log))
    except TrainingStopped as exc:
        raise GridStopped(exc.signum, cell and cell.cell_id, exc.step) from None
    except StartupStopped as exc:
        raise GridStopped(exc.signum, cell and cell.cell_id) from None
    except KeyboardInterrupt:
        raise GridStopped(signal.SIGINT, cell and cell.cell_id) from None
    return records


def run_or_skip(grid: GridSpec, cell: Cell, label: str, out: Path, host, evaluate: Evaluator,
                log: Callable[[str], None]) -> dict:
    """The cell's stored record when it finished with these settings, else a new (stored) one."""
    try:
        fingerprint = settings_fingerprint(cell_config(grid, cell, out / "runs"), grid.checkpoint)
    except (TypeError, ValueError):
        fingerprint = ""  # run_cell reports the problem
    stored = stored_record(out, cell, fingerprint)
    if stored is not None:
        log(f"{label}: done earlier, skipped")
        return stored
    log(f"{label}: training ({cell.model.describe()})")
    record = run_cell(grid, cell, out, host, evaluate, log=lambda line: log(f"{label}: {line}"))
    write_record(out, cell, record)
    if record["status"] == "ok":
        log(f"{label}: ok in {record.get('wall_time_s') or 0:.1f}s")
    else:
        log(f"{label}: FAILED: {record['error']}")
    return record


def load_records(out: str | Path) -> list[dict]:
    """Every stored cell record of a grid folder (for re-reporting without training)."""
    folder = Path(out) / "cells"
    if not folder.is_dir():
        raise FileNotFoundError(f"{out}: no grid results here (no cells/ folder)")
    return [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
