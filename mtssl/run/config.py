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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mtssl.errors import ConfigError
from mtssl.registry import did_you_mean
from mtssl.run.settings import RunSettings, TaskDataSettings, explain, validate_settings
from mtssl.run.settings_table import DATA_SETTINGS, SETTINGS, Setting, value_type

import tomllib

def declared_fields(settings: tuple[Setting, ...], data: Any = None):
    """Give a class one dataclass field per setting of ``settings``, with its type and default, in its order
    (``data``: the type of a ``data`` setting's value)."""
    def declare(cls):
        cls.__annotations__ = {s.key: value_type(s, data) for s in settings}
        for setting in settings:
            mutable = setting.kind in ("list", "data")
            setattr(cls, setting.key, field(default_factory=type(setting.default)) if mutable else setting.default)
        return dataclass(cls)

    return declare


@declared_fields(DATA_SETTINGS)
class TaskData:
    """Where one task's images come from and how many of them keep their labels (``data.TASK``)."""


@declared_fields(SETTINGS, data=dict[str, TaskData])
class RunConfig:
    """A run's settings: one field per entry of :data:`~mtssl.run.settings_table.SETTINGS`."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str = "config") -> "RunConfig":
        """Build from a mapping (config file, config.json); a wrong key, type or range is a ConfigError."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: expected a mapping of settings, got {type(raw).__name__}")
        try:
            settings = validate_settings(raw)
        except ValidationError as exc:
            raise ConfigError(f"{origin}: {explain(exc)}{key_hints(exc)}") from None
        if settings.steps is not None and settings.epochs is not None:
            raise ConfigError(f"{origin}: steps ({settings.steps}) and epochs ({settings.epochs}) are both "
                              "given; give one (--steps or --epochs)")
        values = settings.model_dump()
        data = {task: TaskData(**spec) for task, spec in values.pop("data").items()}
        return cls(data=data, **values)

    def check(self, origin: str = "settings") -> None:
        """Re-validate after programmatic or command-line changes (see :mod:`mtssl.run.settings`)."""
        RunConfig.from_dict(self.to_dict(), origin)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``), YAML (``.yaml``/``.yml``) or JSON file into a plain dict."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from exc
    return load_config(text, str(path))


def key_hints(error: ValidationError) -> str:
    """`` Did you mean 'steps'?`` for each unknown key close to a known one (``step``), as for CLI names."""
    hints = []
    for item in error.errors():
        if item["type"] == "extra_forbidden":
            parent = item["loc"][:-1]
            known = TaskDataSettings.model_fields if parent[:1] == ("data",) else RunSettings.model_fields
            if hint := did_you_mean(str(item["loc"][-1]), known):
                hints.append(f"; {'.'.join(str(p) for p in item['loc'])}:{hint}")
    return "".join(hints)


def unique_keys(pairs, name: str) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (TOML refuses it too; JSON would keep the last value)."""
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise ConfigError(f"{name}: key '{key}' is given twice")
        mapping[key] = value
    return mapping


def load_yaml(text: str, name: str) -> Any:
    """YAML without aliases (``*name``: a few hundred bytes of nested aliases expand to gigabytes) and
    without duplicate keys."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ConfigError(f"{name}: line {mark.line + 1}: YAML aliases (*name) are not allowed in "
                                  "config files; write the value out")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            self.flatten_mapping(node)
            mapping: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in mapping:
                    raise ConfigError(f"{name}: line {key_node.start_mark.line + 1}: key '{key}' is given twice")
                mapping[key] = self.construct_object(value_node, deep=deep)
            return mapping

    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def load_config(text: str, name: str) -> dict[str, Any]:
    """Parse config ``text`` by the suffix of ``name``; errors are one line naming ``name``."""
    suffix = Path(name).suffix
    try:
        if suffix == ".toml":
            raw = tomllib.loads(text)
        elif suffix in {".yaml", ".yml"}:
            raw = load_yaml(text, name)
            raw = {} if raw is None else raw
        elif suffix == ".json":
            raw = json.loads(text, object_pairs_hook=lambda pairs: unique_keys(pairs, name))
        else:
            raise ConfigError(f"{name}: unknown config format '{suffix}' (use .toml, .yaml or .json)")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - parser errors differ per format
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{name}: not valid {suffix[1:].upper()}: {detail}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping of settings at the top level")
    return raw
