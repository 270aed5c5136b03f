"""The Python API runs the commands' engine: the same settings through the CLI, a config file and
``mtssl.train`` give the same weights and the same errors; a stop from Python resumes bit-exactly; a run
opened from Python evaluates, predicts, reports and exports as the commands do."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mtssl
from conftest import TINY_TASK_DATA, flat, invoke, tiny_train_args
from run_files import state_tensors
from mtssl.run import checkpoint
from tiny_run import tiny_run

TASKS = ["cls:fixmatch", "seg:kl"]
BRIDGES = ["saliency"]
# the settings tiny_train_args gives the CLI, as config keys
SETTINGS = dict(tasks=TASKS, bridges=BRIDGES, size=32, batch_size=2, steps=2, eval_every=1, save_every=1, seed=0,
                precision="fp32", data={name: dict(spec) for name, spec in TINY_TASK_DATA.items()})


def weights(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run / "checkpoints" / "last.safetensors")[0]


def assert_same_tensors(mine: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert mine.keys() == theirs.keys() and mine
    assert [k for k in mine if not torch.equal(mine[k], theirs[k])] == []


def toml_value(value) -> str:
    return json.dumps(value)  # strings, numbers and lists of strings are written alike in TOML


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli")
    result = invoke(tiny_train_args(*TASKS, bridges=tuple(BRIDGES), out=out, name="run"))
    assert result.exit_code == 0, result.output
    return out / "run"


def test_cli_config_file_and_python_give_bit_identical_weights(cli_run, tmp_path):
    lines = [f"{key} = {toml_value(value)}" for key, value in SETTINGS.items() if key != "data"]
    for task, spec in SETTINGS["data"].items():
        lines += [f"[data.{task}]", *(f"{key} = {toml_value(value)}" for key, value in spec.items())]
    file = tmp_path / "run.toml"
    file.write_text("\n".join(lines) + "\n")
    result = invoke(["train", "--quiet", "--config", str(file), "--out", str(tmp_path / "toml"), "--name", "run"])
    assert result.exit_code == 0, result.output

    run = mtssl.train(**SETTINGS, out=str(tmp_path / "py"), name="run", quiet=True)
    assert isinstance(run, mtssl.Run) and run.path == tmp_path / "py" / "run"
    assert run.config.to_dict() == {**mtssl.open_run(cli_run).config.to_dict(), "out": str(tmp_path / "py")}
    assert_same_tensors(weights(run.path), weights(cli_run))
    assert_same_tensors(weights(tmp_path / "toml" / "run"), weights(cli_run))
    from_file = mtssl.train(config=file, steps=3, out=str(tmp_path / "file"), name="run", quiet=True)
    assert from_file.config.steps == 3 and from_file.config.data == mtssl.open_run(cli_run).config.data
    assert [m["loss"] for m in run.metrics] == [m["loss"] for m in mtssl.open_run(cli_run).metrics]


def cli_error(args: list[str]) -> str:
    result = invoke(args)
    assert result.exit_code == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    return line.removeprefix("Error: ")


@pytest.mark.parametrize("settings, cli_args", [
    (dict(tasks=["cls:fixmatch:threshold=2"]), ["--task", "cls:fixmatch:threshold=2"]),
    (dict(tasks=["cls"], select_by="seg/dice"), ["--task", "cls", "--select-by", "seg/dice"]),
    (dict(tasks=["cls"], data={"seg": {"train": "synthetic"}}), ["--task", "cls", "--seg-data", "synthetic"]),
], ids=["spec option", "select-by task", "stray data"])
def test_a_bad_setting_is_the_same_one_line_error_as_on_the_command_line(tmp_path, settings, cli_args):
    expected = cli_error(["train", "--out", str(tmp_path), *cli_args])
    with pytest.raises(ValueError) as caught:  # ConfigError, SpecError and RegistryError are ValueErrors
        mtssl.train(**settings, out=str(tmp_path), quiet=True)
    message = str(caught.value)
    assert "\n" not in message
    # a settings error names where the settings came from: the command line, or mtssl.train
    assert message.replace("mtssl.train: ", "") == expected.replace("command-line options: ", "")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_keyword_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(ValueError, match=r"mtssl.train: unknown key\(s\) step; .*Did you mean 'steps'"):
        mtssl.train(tasks=["cls"], step=3, out=str(tmp_path))


def test_the_callback_sees_every_step_and_a_stop_from_it_resumes_bit_exactly(tmp_path):
    straight = mtssl.train(**{**SETTINGS, "steps": 3}, out=str(tmp_path), name="straight", quiet=True)
    seen: list[int] = []

    def stop_at_one(step, logs):
        seen.append(step)
        assert logs["step"] == step and "loss" in logs
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(mtssl.TrainingStopped) as caught:
        mtssl.train(**{**SETTINGS, "steps": 3}, out=str(tmp_path), name="stopped", quiet=True, on_step=stop_at_one)
    stopped = caught.value
    assert seen == [1] and stopped.step == 1 and stopped.run.path == tmp_path / "stopped"
    assert flat(f"mtssl.open_run('{stopped.run.path}').resume()") in flat(str(stopped))
    assert stopped.run.summary is None
    resumed = stopped.run.resume(quiet=True, on_step=lambda step, logs: seen.append(step))
    assert seen == [1, 2, 3] and resumed.summary["steps"] == 3
    assert_same_tensors(state_tensors(resumed.path), state_tensors(straight.path))
    assert ([{k: v for k, v in m.items() if k != "step_time"} for m in resumed.metrics]
            == [{k: v for k, v in m.items() if k != "step_time"} for m in straight.metrics])


SIGINT_AT_STEP_ONE = """
import os, signal, sys, torch
import mtssl
torch.set_num_threads(1)
settings = {settings!r}
send = lambda step, logs: os.kill(os.getpid(), signal.SIGINT) if step == 1 else None
try:
    mtssl.train(**settings, on_step=send)
except mtssl.TrainingStopped as exc:
    print(exc.step, exc.run.path)
    print(exc)
    sys.exit(0)
sys.exit("the run was not stopped")
"""


def test_sigint_stops_at_a_step_boundary_and_the_run_resumes_bit_exactly(tmp_path):
    settings = {**SETTINGS, "steps": 3, "out": str(tmp_path), "quiet": True}
    straight = mtssl.train(**settings, name="straight")
    child = subprocess.run([sys.executable, "-c", SIGINT_AT_STEP_ONE.format(settings={**settings, "name": "run"})],
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    step, path = child.stdout.splitlines()[0].split(" ", 1)
    assert step == "1" and Path(path) == tmp_path / "run"
    assert "stopped by SIGINT" in child.stdout
    resumed = mtssl.open_run(path).resume(quiet=True)
    assert_same_tensors(state_tensors(resumed.path), state_tensors(straight.path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory)


def test_evaluate_gives_what_mtssl_eval_saves(trained):
    results = mtssl.open_run(trained).evaluate(tests={"cls": "synthetic:n=12,domain=2"})
    from mtssl.evaluation.evaluate import eval_file_name

    saved = json.loads((trained / eval_file_name({"cls": ["synthetic:n=12,domain=2"]})).read_text())
    listed = invoke(["eval", str(trained), "--cls-test", "synthetic:n=12,domain=2", "--json"])
    assert listed.exit_code == 0, listed.output
    assert results == saved["results"] == json.loads(listed.stdout)
    assert results["cls"]["synthetic:n=12,domain=2"]["n"] == 12


def test_predict_arrays_and_files_as_mtssl_predict_does(trained, tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (45, 37), dtype=np.uint8), rng.integers(0, 65536, (30, 50), dtype=np.uint16)]
    folder = tmp_path / "in"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    run = mtssl.open_run(trained)
    in_memory = run.predict(images)
    from_files = run.predict(folder)
    assert in_memory.probabilities.keys() == {"cls", "seg"} and in_memory.maps.keys() == {"saliency"}
    assert in_memory.probabilities["cls"].shape == (2, 2) and in_memory.maps["saliency"].shape == (2, 32, 32)
    for key in in_memory.probabilities:
        np.testing.assert_array_equal(in_memory.probabilities[key], from_files.probabilities[key])

    summary = run.predict(folder, out=tmp_path / "py")
    result = invoke(["predict", str(trained), str(folder), "--out", str(tmp_path / "cli"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert summary.images == 2
    written = sorted(p.relative_to(tmp_path / "py") for p in (tmp_path / "py").rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    for name in written:
        assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    with open(tmp_path / "py" / "cls.csv") as handle:
        rows = list(csv.reader(handle))
    assert np.allclose([[float(v) for v in row[-2:]] for row in rows[1:]], in_memory.probabilities["cls"], atol=1e-6)


def test_predict_skips_a_bad_file_only_into_a_folder(trained, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(folder / "good.png")
    (folder / "bad.png").write_bytes(b"not an image")
    run = mtssl.open_run(trained)
    assert run.predict(folder, out=tmp_path / "out", skip_bad=True).images == 1
    with pytest.raises(ValueError, match=r"skip_bad=True.*out="):
        run.predict(folder, skip_bad=True)


def test_report_and_export_as_the_commands_do(trained, tmp_path):
    run = mtssl.open_run(trained)
    page = run.report()
    assert page == trained / "report" / "index.html" and "<html" in page.read_text().lower()
    assert list((trained / "report").glob("*.png"))
    meta = run.export(tmp_path / "py", format="torchscript")
    result = invoke(["export", str(trained), "--format", "torchscript", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert meta == tmp_path / "py" / "metadata.json" and (tmp_path / "py" / "model.pt").is_file()
    assert json.loads(meta.read_text()) == json.loads((tmp_path / "cli" / "metadata.json").read_text())


def test_open_run_of_a_folder_that_is_no_run_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        mtssl.open_run(tmp_path)


def test_importing_mtssl_stays_light_and_the_api_loads_on_first_use():
    probe = ("import sys, mtssl; light = not any(m.split('.')[0] in {'torch', 'pydantic', 'numpy'} "
             "for m in sys.modules); print(light, callable(mtssl.train), 'mtssl.python_api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]


@pytest.mark.parametrize("widgets", [True, False])
def test_a_notebook_shows_live_progress_when_rich_can_draw_it_there(monkeypatch, widgets):
    import importlib.util

    from rich.console import Console

    from mtssl.console.progress import TrainingProgress

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: (real("json") if widgets else None) if name == "ipywidgets"
                        else real(name, *args))
    assert TrainingProgress(Console(force_jupyter=True), total=2).live is widgets
    assert TrainingProgress(Console(force_jupyter=True, quiet=True), total=2).live is False
    assert TrainingProgress(Console(force_jupyter=False, force_terminal=False), total=2).live is False


def test_data_from_python_overrides_the_config_file_key_by_key(tmp_path):
    """``mtssl.train(config=FILE, data={"cls": {"labels": 8}})`` keeps the file's ``train`` for cls, as
    ``mtssl train --config FILE --cls-labels 8`` does; a task the file lacks is added as given."""
    from mtssl.python_api import merged_data

    from_file = {"cls": {"train": "synthetic:n=24", "labels": 100}, "seg": {"train": "synthetic:n=16"}}
    given = {"cls": {"labels": 8}, "reg": {"train": "reg-phantom"}}
    assert merged_data(from_file, given) == {"cls": {"train": "synthetic:n=24", "labels": 8},
                                             "seg": {"train": "synthetic:n=16"}, "reg": {"train": "reg-phantom"}}
    # a bare spec is the task's train set, on either side
    assert merged_data({"seg": "synthetic:n=16"}, {"seg": {"labels": 4}}) == {
        "seg": {"train": "synthetic:n=16", "labels": 4}}
    assert merged_data({"cls": {"train": "a", "labels": 8}}, {"cls": "b"}) == {"cls": {"train": "b", "labels": 8}}
