"""MLflow: the config as params, every step's scalars and the validation metrics, the run directory as artifacts.

The tracking store comes from ``mlflow:tracking_uri=URI`` or ``MLFLOW_TRACKING_URI``;
without either, runs go to a folder store ``mlruns/`` beside the run
directories (inside ``--out``), which every MLflow package reads and writes,
mlflow-skinny included (MLflow's own default, ``sqlite:///mlflow.db`` in the
current folder, needs the full package). The experiment is ``mtssl`` unless
``mlflow:experiment=NAME``. The MLflow run is named after the run directory
and ends FINISHED, or FAILED when training stopped early. Metric names use
"." where the metrics file uses "/" (``val.seg.dice``). MLflow's own INFO
messages stay off the console.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import ConfigDict, Field

from mtssl.api import Logger, Options, ValidationImages, read_options, require

PARAM_LIMIT = 500  # MLflow's limit on a param value's length
STORE_FOLDER = "mlruns"  # the default store, beside the run directories
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # stores only the full mlflow package can open


def tracking_uri(option: str | None, run_dir: Path) -> str:
    """The store to log to: the option, else ``MLFLOW_TRACKING_URI``, else a folder beside the run directory.

    MLflow 3 refuses folder stores unless ``MLFLOW_ALLOW_FILE_STORE`` is set; it is
    set (for this process) only when the folder store is this logger's own default.
    """
    uri = option or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (run_dir.resolve().parent / STORE_FOLDER).as_uri()


def check_store_support(uri: str, component: str) -> None:
    """A database store with mlflow-skinny (no SQLAlchemy): one line naming the package to install."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in DATABASE_SCHEMES and importlib.util.find_spec("sqlalchemy") is None:
        raise ValueError(f"{component}: tracking URI '{uri}' needs the full MLflow package "
                         "(pip install 'mtssl[mlflow]'); mlflow-skinny logs to a folder (file:) or a tracking "
                         "server (http:)")


class MLflowOptions(Options):
    model_config = ConfigDict(coerce_numbers_to_str=True)  # experiment=2024 is a name

    tracking_uri: str | None = Field(
        None, description="tracking store (default: MLFLOW_TRACKING_URI, else mlruns/ beside the runs)")
    experiment: str = Field("mtssl", description="MLflow experiment the run is logged under")


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
        self.settings = read_options(f"logger '{name}'", options, MLflowOptions)
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
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # e.g. "Creating experiment", "View run at"
        uri = tracking_uri(self.settings.tracking_uri, run_dir)
        check_store_support(uri, f"logger '{self.name}'")
        self.client = MlflowClient(tracking_uri=uri)
        experiment_name = self.settings.experiment
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

    def log_run_directory(self) -> None:
        """The run directory as artifacts, less hidden files (the run lock, leftovers of cut-short writes)."""
        for path in sorted(self.run_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
            else:
                self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        if self.client is None:
            return
        self.log_run_directory()
        self.client.set_terminated(self.run_id, "FINISHED" if (self.run_dir / "summary.json").exists() else "FAILED")
        self.client = None
