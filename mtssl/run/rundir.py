"""The run directory: resolved config, split file lists, metrics log, checkpoints."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mtssl.run.config import RunConfig
from mtssl.run.runlock import RunLock
from mtssl.run.values import check_run_name


class RunDir:
    CONFIG = "config.json"
    METRICS = "metrics.jsonl"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, config: RunConfig) -> "RunDir":
        name = check_run_name(config.name) if config.name else time.strftime("%Y%m%d-%H%M%S")
        base = Path(config.out) / name
        if base.resolve().parent != Path(config.out).resolve():  # e.g. a symlinked name pointing elsewhere
            raise ValueError(f"--name {name}: the run directory must be inside --out {config.out}")
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        path.mkdir(parents=True)
        run = cls(path)
        run.write_json(cls.CONFIG, config.to_dict())
        return run

    def lock(self) -> RunLock:
        """``with run.lock():`` makes this process the only writer (see :mod:`mtssl.run.runlock`)."""
        return RunLock(self.path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def config(self) -> RunConfig:
        file = self.path / self.CONFIG
        if not file.is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no {self.CONFIG})")
        return RunConfig.from_dict(json.loads(file.read_text()), origin=str(file))

    def write_json(self, name: str, value: Any) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True))
        tmp.replace(target)

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path / self.METRICS, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        file = self.path / self.METRICS
        if not file.exists():
            return []
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
