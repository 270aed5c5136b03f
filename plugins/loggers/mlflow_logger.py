"""MLflow: the config as params, every step's scalars and the validation metrics, the run directory as artifacts.

The tracking server comes from ``MLFLOW_TRACKING_URI`` (or
``mlflow:tracking_uri=URI``; MLflow's default otherwise); the experiment is
``mtssl`` unless ``mlflow:experiment=NAME``. The MLflow run is named after the
run directory and ends FINISHED, or FAILED when training stopped early.
Metric names use "." where the metrics file uses "/" (``val.seg.dice``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from mtssl.api import Logger, ValidationImages, check_options, require

PARAM_LIMIT = 500  # MLflow's limit on a param value's length


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"data.cls.labels": "100", ...}`` with values as text."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:PARAM_LIMIT]
    return flat


def metric_name(key: str) -> str:
    """``cls/fixmatch/mask_rate`` -> ``cls.fixmatch.mask_rate``: MLflow's file store turns "/" into folders, and
    ``cls/fixmatch`` (a metric) would then clash with the folder of ``cls/fixmatch/mask_rate``."""
    return key.replace("/", ".")


class MLflowLogger(Logger):
    """Logs through ``MlflowClient`` (no global active run, so several runs in one process stay apart)."""

    def __init__(self, name: str, **options: Any):
        check_options(f"logger '{name}'", options, {"tracking_uri", "experiment"})
        super().__init__(name, **options)
        require("mlflow", "mlflow", f"logger '{name}'")
        self.client = self.run_id = self.run_dir = None

    def start(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._start(Path(run_dir), config)
        except MlflowException as exc:  # e.g. an unusable tracking URI: one line, not a traceback
            raise ValueError(f"logger '{self.name}': {exc.message}") from exc

    def _start(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.run_dir = run_dir
        self.client = MlflowClient(tracking_uri=self.options.get("tracking_uri"))
        experiment_name = str(self.options.get("experiment", "mtssl"))
        experiment = self.client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(experiment_name)
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_dir.name).info.run_id
        params = [Param(k, v) for k, v in sorted(flatten(config).items())]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def _metrics(self, step: int, values: Mapping[str, float], prefix: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(metric_name(prefix + k), float(v), now, step)
                                                    for k, v in values.items()])

    def log_step(self, step: int, scalars: Mapping[str, float]) -> None:
        self._metrics(step, scalars, "")

    def log_validation(self, step: int, metrics: Mapping[str, float],
                       images: Sequence[ValidationImages] = ()) -> None:
        self._metrics(step, metrics, "val.")

    def close(self) -> None:
        if self.client is None:
            return
        self.client.log_artifacts(self.run_id, str(self.run_dir))
        self.client.set_terminated(self.run_id, "FINISHED" if (self.run_dir / "summary.json").exists() else "FAILED")
        self.client = None
