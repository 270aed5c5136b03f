"""The resolved description of a run: what the CLI, a config file and a run directory share.

A config file (TOML or YAML) holds the same keys as the dataclass below;
command-line options override it. ``data`` maps a task name to its sources
and label budget::

    tasks = ["cls:fixmatch", "seg:kl"]
    bridges = ["saliency"]
    size = 64
    [data.cls]
    train = "kermany:/data/chest_xray"
    labels = 100
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_SOURCE = "synthetic"


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the file or key."""


@dataclass
class TaskData:
    """Where one task's images come from and how many of them keep their labels."""

    train: str = DEFAULT_SOURCE
    labels: int | str | None = None  # None: the task's default budget; "all": every training image
    val_fraction: float = 0.1
    val: str | None = None  # a separate validation source instead of a carved split
    test: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    tasks: list[str] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)
    backbone: str = "unet"
    data: dict[str, TaskData] = field(default_factory=dict)
    size: int = 64
    batch_size: int = 10
    steps: int | None = None
    epochs: float | None = None
    lr: float = 1e-4
    lr_step_epochs: float = 8.0
    lr_gamma: float = 0.1
    seed: int = 0
    device: str = "auto"
    strong_ops: int = 2
    eval_every: int = 100
    save_every: int = 100
    select_by: str = "mean"  # "mean" of task selection scores, or "TASK/METRIC"
    out: str = "runs"
    name: str | None = None
    cache_dir: str | None = None
    skip_bad: bool = False
    deterministic: bool = False
    channels: int | None = None  # image channels; None: what the sources declare (resolved at training)
    amp: bool = False  # older spelling of precision = "bf16"; kept so earlier run directories load
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (mtssl.precision); config.json holds the resolved one
    compile: bool = False  # torch.compile the backbone and heads
    device_memory_budget: float | None = None  # MB of training arrays kept on the device; None: automatic
    max_loss: float | None = None  # a loss term beyond this (in absolute value) counts as divergence
    skip_nonfinite: int = 0  # bad steps to skip (no update) before a divergence stops the run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str = "config") -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{origin}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(raw)
        data = {}
        task_keys = {f.name for f in fields(TaskData)}
        for task, spec in (values.pop("data", None) or {}).items():
            if isinstance(spec, str):
                spec = {"train": spec}
            bad = sorted(set(spec) - task_keys)
            if bad:
                raise ConfigError(f"{origin}: data.{task}: unknown key(s) {', '.join(bad)}; "
                                  f"known: {', '.join(sorted(task_keys))}")
            if isinstance(spec.get("test"), str):
                spec["test"] = [spec["test"]]
            data[task] = TaskData(**spec)
        for key in ("tasks", "bridges"):
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        return cls(data=data, **values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a plain dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from exc
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix in {".yaml", ".yml"}:
            import yaml

            raw = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            raw = json.loads(text)
        else:
            raise ConfigError(f"{path}: unknown config format '{path.suffix}' (use .toml, .yaml or .json)")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - parser errors differ per format
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return raw
