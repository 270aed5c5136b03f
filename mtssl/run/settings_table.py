"""Every run setting, declared once: its type, range, default, help text, config key, command-line flag,
whether ``--resume`` takes it and whether a benchmark grid offers it.

Everything else is derived from :data:`SETTINGS`: the fields of
:class:`~mtssl.run.config.RunConfig`, the rules config files are checked by
(:class:`~mtssl.run.settings.RunSettings`), the options of ``mtssl train`` and
``mtssl bench grid`` (:func:`mtssl.cli.params.setting_options`), the run keys a
grid file takes, the settings ``--resume`` accepts, and the option table of
the documentation (:func:`markdown_table`). Free of pydantic and click, so a
command's ``--help`` reads it without loading either.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from mtssl.run.values import DEVICE_HELP, DEVICE_PATTERN, check_budget, check_run_name, check_select_by

DEFAULT_STEPS = 300
"""Optimizer steps of a run that gives neither steps nor epochs."""

Kind = Literal["int", "float", "str", "bool", "list", "data", "budget"]


KINDS = {"int": int, "float": float, "str": str, "bool": bool, "list": list[str], "budget": int | str}
"""The Python type of each kind of value (``data`` is a mapping of a task to its data settings)."""


def value_type(setting: "Setting", data: Any = None) -> Any:
    """The type of a setting's value: its kind, its choices, None when optional; ``data`` for a ``data`` kind."""
    kind = data if setting.kind == "data" else Literal[setting.choices] if setting.choices else KINDS[setting.kind]
    return Optional[kind] if setting.optional else kind


def number(value: float) -> str:
    """``8``, ``0.0001``, ``1e+30``: as short as it stays exact for the whole numbers of the table."""
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """One run setting. ``low``/``high`` bound a number (``*_open``: the bound itself is refused); ``optional``
    allows None (not given). ``flag`` is the ``mtssl train`` option (None: config files only); ``repeat``: a
    list flag given once per item (else one comma-separated value). ``resume``: ``--resume`` takes it anew (the
    machine's settings). ``grid``: "" not in grids, "file" a key of a grid file's ``run`` table, "flag" also an
    option of ``mtssl bench grid`` (help: ``grid_help`` when it means something else there)."""

    key: str
    kind: Kind
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    choices: tuple[str, ...] = ()
    nonempty: bool = False
    pattern: str | None = None
    allowed: str | None = None  # what ``pattern`` allows, in words
    check: Any = None  # a function value -> value raising ValueError, from mtssl.run.values
    flag: str | None = ""  # "": --KEY-WITH-DASHES
    metavar: str | None = None
    repeat: bool = False
    negatable: bool = False
    shown_default: str | None = None  # how the help states the default, when the value alone says too little
    resume: bool = False
    grid: Literal["", "file", "flag"] = ""
    grid_help: str | None = None

    @property
    def option(self) -> str | None:
        """The command-line flag, or None for a config-only setting."""
        return None if self.flag is None else self.flag or f"--{self.key.replace('_', '-')}"

    def default_text(self) -> str | None:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None or self.kind in ("list", "data") or self.kind == "bool":
            return None
        return number(self.default) if isinstance(self.default, (int, float)) else str(self.default)

    def bounds(self, name: str = "x") -> str | None:
        """``1 <= x <= 15``, ``x > 0``: the range of a number, None for an unbounded one."""
        low = None if self.low is None else f"{number(self.low)} {'<' if self.low_open else '<='} {name}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {number(self.high)}"
        if low and high:
            return f"{low} {high}"
        if low:
            return f"{name} {'>' if self.low_open else '>='} {number(self.low)}"
        return f"{name} {high}" if high else None

    def contains(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return low_ok and (self.high is None or (value < self.high if self.high_open else value <= self.high))

    def range_text(self) -> str:
        """``int, 1 <= x <= 15``, ``float, x > 0``, the choices, or the kind alone; ``or none`` when optional."""
        if self.choices:
            text = " | ".join(self.choices)
        elif bounds := self.bounds():
            text = f"{self.kind}, {bounds}"
        else:
            text = {"list": "list of strings", "data": "a table per task", "budget": "N or all"}.get(self.kind,
                                                                                                  self.kind)
        return f"{text}, or none" if self.optional else text

    def full_help(self, grid: bool = False) -> str:
        """The option's help: its text, then the default."""
        text = self.grid_help if grid and self.grid_help else self.help
        shown = None if grid and self.grid_help else self.default_text()
        return f"{text} (default {shown})." if shown else f"{text}."


SETTINGS: tuple[Setting, ...] = (
    Setting("tasks", "list", [], "A task and its SSL strategies, e.g. cls:fixmatch or seg:kl; repeat for several "
            "tasks", flag="--task", metavar="NAME[:STRATEGY[+STRATEGY]][:k=v]", repeat=True),
    Setting("bridges", "list", [], "A bridge between two tasks, e.g. saliency or saliency:cls->seg",
            flag="--bridge", metavar="NAME[:SRC->DST][:k=v]", repeat=True),
    Setting("backbone", "str", "unet", "Shared encoder, e.g. unet or timm:model=resnet18", nonempty=True,
            grid="flag", grid_help="Shared encoder spec of every cell"),
    Setting("weighting", "str", "equal", "How task losses combine, e.g. equal, uncertainty or pcgrad",
            nonempty=True, metavar="NAME[:k=v]", grid="file"),
    Setting("architecture", "str", "shared", "How tasks share the encoder: shared, mtan (task attention) or "
            "mmoe (mixture of experts)", nonempty=True, metavar="NAME[:k=v]", grid="flag"),
    Setting("data", "data", {}, "Per task (data.TASK): the keys of the table below", flag=None),
    Setting("size", "int", 64, "Training image side in pixels", low=1, grid="flag"),
    Setting("batch_size", "int", 10, "Images per stream per step, m", low=1, grid="flag"),
    Setting("steps", "int", None, "Optimizer steps", low=1, optional=True, shown_default=f"{DEFAULT_STEPS} unless "
            "--epochs", grid="flag", grid_help="Optimizer steps per cell"),
    Setting("epochs", "float", None, "Epochs over the longest stream, instead of --steps", low=0, low_open=True,
            optional=True, grid="file"),
    # 1e30: far above any useful rate, and below what torch can hold (a float32 overflows near 3.4e38)
    Setting("lr", "float", 1e-4, "Adam learning rate", low=0, low_open=True, high=1e30, grid="flag"),
    Setting("lr_step_epochs", "float", 8.0, "Multiply lr by lr_gamma every this many epochs", low=0,
            low_open=True, grid="file"),
    Setting("lr_gamma", "float", 0.1, "Factor of each learning-rate step", low=0, low_open=True, high=1, flag=None),
    Setting("seed", "int", 0, "Seed for splits, initialisation and augmentation", low=0, high=2**63 - 1),
    Setting("device", "str", "auto", f"Where to train: {DEVICE_HELP}", pattern=DEVICE_PATTERN, allowed=DEVICE_HELP,
            resume=True,
            grid="flag"),
    Setting("threads", "int", None, "CPU threads for torch's operators; fewer are often faster on a busy machine",
            low=1, optional=True, shown_default="torch's choice", resume=True, grid="flag",
            grid_help="CPU threads for torch's operators in every cell (see mtssl train)"),
    Setting("strong_ops", "int", 2, "Operations per image in the strong augmentation", low=1, high=15,
            grid="file"),
    Setting("eval_every", "int", 100, "Validate and keep the best checkpoint every N steps", low=1, grid="flag",
            grid_help="Validate (for the best checkpoint) every N steps"),
    Setting("save_every", "int", 100, "Write the resumable 'last' checkpoint every N steps", low=1, grid="flag",
            grid_help="Write a cell's resumable checkpoint every N steps (default: at its end; a stop writes "
                      "one too)"),
    Setting("select_by", "str", "mean", "Model selection metric: mean (of task scores) or TASK/METRIC, e.g. "
            "seg/dice", nonempty=True, check=check_select_by, metavar="mean|TASK/METRIC", grid="file"),
    Setting("out", "str", "runs", "Folder for run directories", nonempty=True),
    Setting("name", "str", None, "Run directory name inside --out", optional=True, check=check_run_name,
            shown_default="a timestamp"),
    Setting("cache_dir", "str", None, "Where decoded images are cached", optional=True, nonempty=True,
            shown_default=".mtssl-cache", grid="flag"),
    Setting("skip_bad", "bool", False, "Skip unreadable or inconsistent files (and count them) instead of "
            "stopping", grid="file"),
    Setting("deterministic", "bool", False, "Deterministic torch kernels: repeatable GPU runs, often slower"),
    Setting("channels", "int", None, "Image channels (what the sources declare unless given)", low=1,
            optional=True, flag=None),
    Setting("amp", "bool", False, "Same as --precision bf16", grid="flag"),
    Setting("precision", "str", "auto", "Autocast precision; auto: bf16 where the device runs it natively, "
            "else fp32", choices=("auto", "fp32", "bf16", "fp16"), grid="flag"),
    Setting("compile", "bool", False, "torch.compile backbone and heads", negatable=True),
    Setting("device_memory_budget", "float", None, "Training arrays above this many MB stream from the host "
            "cache", low=0, optional=True, metavar="MB", shown_default="automatic"),
    Setting("max_loss", "float", None, "Treat a loss term above this as divergence", low=0, low_open=True,
            optional=True, shown_default="only nan/inf"),
    Setting("skip_nonfinite", "int", 0, "Skip up to N diverged steps (no update) instead of stopping", low=0),
    Setting("log", "list", [], "Also log to these tracking tools, e.g. tensorboard,mlflow (see mtssl plugins)",
            metavar="NAMES"),
    Setting("log_grad_shares", "int", 0, "Every N steps, log each loss term's share of the shared encoder's "
            "gradient norm; 0: never", low=0, metavar="N"),
)

DATA_SETTINGS: tuple[Setting, ...] = (
    Setting("train", "str", None, "The training source spec", optional=True, nonempty=True, flag="--TASK-data",
            metavar="SPEC", shown_default="the task's default source"),
    Setting("labels", "budget", None, "How many training images keep their labels: N or all", optional=True,
            check=check_budget, flag="--TASK-labels", metavar="N|all", shown_default="the task's default"),
    Setting("val_fraction", "float", 0.1, "The share of the training images held out for validation", low=0.0,
            high=1.0, high_open=True, flag="--TASK-val-fraction", metavar="F"),
    Setting("val", "str", None, "A validation source instead of the held-out share", optional=True,
            nonempty=True, flag="--TASK-val", metavar="SPEC"),
    Setting("test", "list", [], "Test sources, in-domain first (mtssl eval and the grid score on them); "
            "repeat the flag for several", repeat=True, flag="--TASK-test", metavar="SPEC"),
)
"""One task's data: ``data.TASK`` in a config file, the ``--TASK-...`` flags of the commands."""

BY_KEY = {setting.key: setting for setting in SETTINGS}
RESUME_KEEPS = tuple(s.key for s in SETTINGS if s.resume)
"""The only settings ``--resume`` takes from the command line (the machine's); everything else comes from the run."""
GRID_RUN_KEYS = frozenset(s.key for s in SETTINGS if s.grid)
"""The keys of a grid file's ``run`` table."""


def flags(keys) -> str:
    """``--device, --threads`` for the settings ``keys``."""
    return ", ".join(BY_KEY[key].option for key in keys)


def markdown_table() -> str:
    """The documentation's tables of every setting and of a task's data settings (a test keeps the page's copy
    equal to them)."""
    data = table_rows(DATA_SETTINGS, prefix="data.TASK.")
    return f"{table_rows(SETTINGS)}\nA task's data, `data.TASK` (`TASK` is the task's name, e.g. `cls`):\n\n{data}"


def table_rows(settings, prefix: str = "") -> str:
    """A markdown table with a row per setting."""
    rows = ["| Config key | Flag | Type and range | Default | Help |", "|---|---|---|---|---|"]
    for s in settings:
        flag = f"`{s.option}`" if s.option else "(config only)"
        extra = " `--resume` takes it." if s.resume else ""
        default = s.default_text() or (str(s.default).lower() if s.kind == "bool" else "—")
        cells = [f"`{prefix}{s.key}`", flag, s.range_text(), default, f"{s.help}.{extra}"]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"
