"""Loggers as plugins: TensorBoard event files and MLflow runs written during training, read back."""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import invoke, read_metrics, tiny_train_args
from mtssl.run.config import RunConfig
from mtssl.training.loggers import logger_names


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One 2-step cls+seg run with the saliency bridge, logged to TensorBoard and a file-store MLflow."""
    root = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", (root / "mlruns").as_uri())
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for a database unless told otherwise
        patch.delenv("MTSSL_PLUGINS", raising=False)
        args = tiny_train_args("cls:fixmatch", "seg:kl", bridges=("saliency",), out=root / "runs", name="logged",
                               extra=("--log", "tensorboard,mlflow"))
        result = invoke(args)
    assert result.exit_code == 0, result.output
    return root / "runs" / "logged", (root / "mlruns").as_uri()


def test_tensorboard_has_every_scalar_and_validation_images(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = logged_run
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    records = read_metrics(run)
    scalars = set(events.Tags()["scalars"])
    for record in records:
        for key, value in record.items():
            if key == "step":
                continue
            tag = key if key.startswith("val/") else f"train/{key}"
            assert tag in scalars, tag
            logged = {e.step: e.value for e in events.Scalars(tag)}
            assert logged[record["step"]] == pytest.approx(value, rel=1e-6, abs=1e-7)
    for tag in ("train/loss", "train/lr", "train/cls/fixmatch/mask_rate", "train/seg/kl", "val/seg/dice",
                "val/cls/acc", "val/score"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2]
    # one image per task at every evaluation; seg rows: image | mask probability | saliency
    assert sorted(events.Tags()["images"]) == ["val/cls", "val/seg"]
    seg = events.Images("val/seg")
    assert [e.step for e in seg] == [1, 2]
    picture = np.asarray(Image.open(io.BytesIO(seg[-1].encoded_image_string)))
    n_val = len(json.loads((run / "splits" / "seg.json").read_text())["val"])
    assert picture.shape[:2] == (min(4, n_val) * 32, 3 * 32)
    cls = np.asarray(Image.open(io.BytesIO(events.Images("val/cls")[-1].encoded_image_string)))
    assert cls.shape[1] == 32  # no dense output, no bridge map on the classification rows: the image alone


def test_mlflow_has_params_metrics_and_the_run_directory(logged_run):
    from mlflow.tracking import MlflowClient

    run, uri = logged_run
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mtssl")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "logged" and found.info.status == "FINISHED"
    params = found.data.params
    assert params["size"] == "32" and params["tasks"] == str(["cls:fixmatch", "seg:kl"])
    assert params["data.cls.labels"] == "8" and params["data.seg.train"] == "synthetic:n=16"
    records = read_metrics(run)
    history = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "loss")}
    assert history == pytest.approx({r["step"]: r["loss"] for r in records})
    rates = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "cls.fixmatch.mask_rate")}
    assert rates == pytest.approx({r["step"]: r["cls/fixmatch/mask_rate"] for r in records})
    dice = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "val.seg.dice")}
    assert dice == pytest.approx({r["step"]: r["val/seg/dice"] for r in records})
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.json", "metrics.jsonl", "summary.json", "checkpoints", "tensorboard"} <= artifacts


def test_the_jsonl_record_stays_and_loggers_do_not_change_training(logged_run, tmp_path):
    run, _ = logged_run
    plain = invoke(tiny_train_args("cls:fixmatch", "seg:kl", bridges=("saliency",), out=tmp_path, name="plain"))
    assert plain.exit_code == 0, plain.output
    logged, unlogged = read_metrics(run), read_metrics(tmp_path / "plain")
    drop = {"step_time"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in logged] == \
           [{k: v for k, v in r.items() if k not in drop} for r in unlogged]


def test_unknown_logger_suggests_the_name(tmp_path):
    result = invoke(tiny_train_args("cls", out=tmp_path, extra=("--log", "tensorbord")))
    assert result.exit_code == 2
    assert "unknown logger 'tensorbord'. Did you mean 'tensorboard'?" in result.stderr.replace("\n", "")
    assert not any(tmp_path.iterdir())  # failed before a run directory was made


@pytest.mark.parametrize("name, module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    result = invoke(tiny_train_args("cls", out=tmp_path, extra=("--log", name)))
    assert result.exit_code == 2
    assert f"mtssl[{name}]" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_log_names_from_flag_and_config():
    assert logger_names(["tensorboard,mlflow", " mlflow", ""]) == ["tensorboard", "mlflow"]
    assert RunConfig.from_dict({"log": "tensorboard"}).log == ["tensorboard"]
    assert RunConfig.from_dict({"log": ["tensorboard", "mlflow"]}).log == ["tensorboard", "mlflow"]


def test_plugins_lists_the_loggers():
    listing = json.loads(invoke(["plugins", "--json"]).stdout)
    loggers = {r["name"]: r for r in listing["components"] if r["kind"] == "logger"}
    assert set(loggers) == {"tensorboard", "mlflow"}
    assert all(r["distribution"] == "mtssl" for r in loggers.values())
