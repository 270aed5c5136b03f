"""`--log mlflow` with the mlflow-skinny package of the `[test]` extra and no tracking URI, as a newcomer runs it."""
from __future__ import annotations

import importlib.util

import pytest

from conftest import invoke, read_metrics, tiny_train_args

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="needs mlflow(-skinny)")


@pytest.fixture
def no_tracking_setup(tmp_path, monkeypatch):
    """No MLflow settings from the caller's shell, and a clean current folder (MLflow's own default lands there)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.setenv(name, "")  # recorded, so the test's changes are undone afterwards
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_default_store_is_a_folder_beside_the_runs(no_tracking_setup):
    from mlflow.tracking import MlflowClient

    out = no_tracking_setup / "runs"
    result = invoke(tiny_train_args("cls", out=out, name="real1", extra=("--log", "mlflow")))
    assert result.exit_code == 0, result.output
    assert "INFO" not in result.stderr and "mlflow" not in result.stderr.lower()
    assert not (no_tracking_setup / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("mtssl").experiment_id])
    assert found.info.run_name == "real1" and found.info.status == "FINISHED"
    history = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "loss")}
    assert history == pytest.approx({r["step"]: r["loss"] for r in read_metrics(out / "real1")})
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.json", "metrics.jsonl", "summary.json", "checkpoints", "splits"} <= artifacts
    assert ".lock" not in artifacts  # the lock is held while the artifacts are copied


def test_a_database_uri_without_the_full_package_is_one_line_and_leaves_no_folder(no_tracking_setup, monkeypatch):
    if importlib.util.find_spec("sqlalchemy") is not None:
        pytest.skip("the full mlflow package is installed")
    out = no_tracking_setup / "runs"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    failed = invoke(tiny_train_args("cls", out=out, name="real1", extra=("--log", "mlflow")))
    assert failed.exit_code == 2
    assert len(failed.stderr.strip().splitlines()) == 1 and "mtssl[mlflow]" in failed.stderr
    assert not (out / "real1").exists()  # the name stays free
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    again = invoke(tiny_train_args("cls", out=out, name="real1", extra=("--log", "mlflow")))
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().splitlines()[-1] == str(out / "real1")

