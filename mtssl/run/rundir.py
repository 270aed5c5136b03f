"""The run directory: resolved config, split file lists, metrics log, checkpoints."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mtssl.run.config import RunConfig
from mtssl.run.runlock import RunLock
from mtssl.run.values import check_run_name


def read_json(file: Path) -> Any:
    """A run file's JSON; a truncated or edited file is one ValueError naming it, not a bare decoder error."""
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: damaged JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                         "the file was cut short or edited") from None


class RunDir:
    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    SUMMARY = "summary.json"  # written when training reaches its last step

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
        return RunConfig.from_dict(read_json(file), origin=str(file))

    def read_json(self, name: str) -> Any:
        return read_json(self.path / name)

    def finished_steps(self) -> int | None:
        """The step count of a run that trained to the end, else None."""
        file = self.path / self.SUMMARY
        if not file.is_file():
            return None
        return int(self.read_json(self.SUMMARY)["steps"])

    def write_json(self, name: str, value: Any) -> None:
        self.write_text(name, json.dumps(value, indent=2, sort_keys=True))

    def write_text(self, name: str, text: str) -> None:
        """Write through a temporary file and a rename, so a crash leaves the old file or the new one."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        try:
            tmp.write_text(text)
        except OSError as exc:  # e.g. disk full: name the file, keep the old one
            tmp.unlink(missing_ok=True)
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        tmp.replace(target)

    def log(self, record: dict[str, Any]) -> None:
        file = self.path / self.METRICS
        try:
            with open(file, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:  # e.g. disk full: name the file
            raise OSError(exc.errno, exc.strerror, str(file)) from exc

    def metrics(self) -> list[dict[str, Any]]:
        file = self.path / self.METRICS
        if not file.exists():
            return []
        records = []
        for number, line in enumerate(file.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{file}: line {number} is not JSON ({exc.msg}); the file was cut short "
                                     "or edited (a resume rewrites it from the checkpoint's copy)") from None
        return records
