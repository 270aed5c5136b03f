"""Run files damaged after the fact: cut short, deleted or edited. Each is named in one line, or repaired."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import flat, invoke, read_metrics, spaced, tiny_trainer, train_run
from mtssl.run import checkpoint
from mtssl.run.rundir import RunDir

TASKS = ["cls:fixmatch", "seg:kl"]


def cut(file, keep: float = 0.5) -> None:
    text = file.read_text()
    file.write_text(text[:int(len(text) * keep)])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return train_run("cls", out=tmp_path_factory.mktemp("finished"), name="done")


def test_truncated_config_json_is_named(tmp_path, finished):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text((finished / "config.json").read_text())
    cut(run / "config.json")
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 2
    assert flat(f"{run / 'config.json'}: damaged JSON") in flat(result.stderr)


def test_truncated_split_listing_is_named(finished):
    listing = finished / "splits" / "cls.json"
    kept = listing.read_text()
    try:
        cut(listing)
        result = invoke(["eval", str(finished)])
        assert result.exit_code == 2
        assert flat(f"{listing}: damaged JSON") in flat(result.stderr)
    finally:
        listing.write_text(kept)


def test_truncated_metrics_line_is_named(tmp_path, finished):
    run = tmp_path / "copy"
    run.mkdir()
    (run / "metrics.jsonl").write_text((finished / "metrics.jsonl").read_text()[:-20])
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 2 is not JSON"):
        RunDir(run).metrics()


def test_resume_of_a_finished_run_says_so_and_restores_its_log(finished):
    log = finished / "metrics.jsonl"
    before = log.read_text()
    cut(log)
    result = invoke(["train", "--resume", str(finished)])
    assert result.exit_code == 0
    assert flat(f"Already finished: {finished} ran all 2 steps") in flat(result.output)
    assert "Done:" not in result.output
    assert log.read_text() == before


def stopped_at_step_two(host, out):
    """A 3-step run stopped (as by SIGTERM) after step 2, with ``last`` saved there."""
    from mtssl.training.stopping import TrainingStopped

    trainer = tiny_trainer(host, out, TASKS, steps=3)
    with pytest.raises(TrainingStopped):
        trainer.fit(on_step=lambda step, logs: trainer.stop.request() if step == 2 else None)
    return trainer.run.path


@pytest.mark.parametrize("damage", ["truncate", "delete", "drop a line"])
def test_resume_restores_a_damaged_metrics_log_to_match_an_uninterrupted_run(host, tmp_path, damage):
    reference = tiny_trainer(host, tmp_path / "ref", TASKS, steps=3)
    reference.fit()
    run = stopped_at_step_two(host, tmp_path / "stopped")
    log = run / "metrics.jsonl"
    if damage == "truncate":
        cut(log, 0.3)
    elif damage == "delete":
        log.unlink()
    else:
        lines = log.read_text().splitlines(keepends=True)
        log.write_text(lines[1])
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    drop = {"step_time"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(run)] == \
           [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(reference.run.path)]


def test_a_state_path_leading_out_of_the_run_is_refused(host, tmp_path):
    run = stopped_at_step_two(host, tmp_path)
    weights_file = run / "checkpoints" / "last.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    state = next((run / "checkpoints" / "state").glob("last-*.safetensors"))
    outside.write_bytes(state.read_bytes())  # a valid state file, but outside the run folder
    weights, meta = checkpoint.load(weights_file)
    meta["resume"]["states"] = ["../../../elsewhere.safetensors"]
    checkpoint.atomic_save(weights, weights_file, meta)
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 2
    assert "names the state file '../../../elsewhere.safetensors'" in spaced(result.stderr)
    assert json.loads((run / "config.json").read_text())["steps"] == 3


def test_links_and_fifos_named_like_images_are_reported_as_bad_files(tmp_path):
    import os

    from data_trees import class_tree

    root = class_tree(tmp_path / "data", {"NORMAL": 3, "PNEUMONIA": 3})
    folder = root / "NORMAL"
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    os.mkfifo(folder / "pipe.png")  # opening it would wait for a writer forever
    result = invoke(["data", "inspect", f"folders:{root}", "--task", "cls", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    reasons = {Path(b["path"]).name: b["reason"] for b in report["bad"]}
    assert reasons == {"dangling.png": f"broken symbolic link (to {folder / 'gone.png'})",
                       "loop.png": "symbolic link loop", "pipe.png": "is a named pipe (FIFO), not an image file"}
    assert report["good"] == 6


def test_inspecting_pairs_without_a_masks_folder_says_so():
    result = invoke(["data", "inspect", "pairs:imgs"])
    assert result.exit_code == 2
    assert "needs two folders: pairs:IMAGES_DIR,MASKS_DIR (got 'imgs': no masks folder)" in " ".join(
        result.stderr.split())


def test_the_log_copy_follows_every_save_and_keeps_the_lines_of_a_log_deleted_mid_run(host, tmp_path):
    """Each save appends what the log gained; a log deleted during the run is a new file, appended whole."""
    def steps(file: Path) -> list[int]:
        return [json.loads(line)["step"] for line in file.read_text().splitlines()]

    reference = tiny_trainer(host, tmp_path / "ref", TASKS, steps=4, save_every=1)
    reference.fit()
    log, copy = reference.run.path / "metrics.jsonl", reference.run.checkpoints / "metrics.jsonl"
    assert copy.read_text() == log.read_text() and steps(copy) == [1, 2, 3, 4]

    trainer = tiny_trainer(host, tmp_path / "deleted", TASKS, steps=4, save_every=1)
    log, copy = trainer.run.path / "metrics.jsonl", trainer.run.checkpoints / "metrics.jsonl"
    trainer.fit(on_step=lambda step, logs: log.unlink() if step == 2 else None)
    assert steps(log) == [3, 4]
    assert steps(copy) == [1, 2, 3, 4]  # step 2 was saved before the log was deleted
    result = invoke(["train", "--resume", str(trainer.run.path)])  # a finished run: its log is restored
    assert result.exit_code == 0, result.output
    assert steps(log) == steps(copy)
