"""Every model of every grid file shipped in benchmarks/ (and the packaged paper grid) passes the checks
``mtssl train --check`` makes, so a grid does not fail hours in on a misspelt method or option."""
from __future__ import annotations

from pathlib import Path

import pytest

from mtssl.bench.grid import cell_config, expand_cells, load_grid, paper_grid
from mtssl.run.preflight import check_run

GRID_FILES = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.toml"))


GRIDS = {path.name: lambda path=path: load_grid(path) for path in GRID_FILES} | {"paper (packaged)": paper_grid}


@pytest.mark.parametrize("name", list(GRIDS))
def test_every_model_of_a_shipped_grid_passes_the_training_checks(name, host, tmp_path):
    grid = GRIDS[name]()
    grid.check()
    first_seed = [cell for cell in expand_cells(grid) if cell.seed == grid.seeds[0]]
    assert {cell.model.name for cell in first_seed} == {model.name for model in grid.models}
    for cell in first_seed:
        check_run(cell_config(grid, cell, tmp_path), host)


def test_train_accepts_the_held_out_split_as_a_test_set(tmp_path):
    """``--TASK-test val`` (what grids on one's own data default to) is the run's own validation split, not a
    source to open: ``--check`` passes it."""
    from conftest import invoke

    result = invoke(["train", "--check", "--out", str(tmp_path), "--task", "seg", "--seg-test", "val"])
    assert result.exit_code == 0, result.output


def test_a_setting_added_at_its_neutral_value_keeps_stored_cells_current(monkeypatch):
    """Cells finished before ``architecture`` existed (their settings had no such key) stay finished under the
    default hard sharing; another architecture is another result."""
    from mtssl.bench.grid import settings_fingerprint
    from mtssl.run.config import RunConfig

    config = RunConfig(tasks=["cls"])
    now = settings_fingerprint(config, "best")
    assert settings_fingerprint(RunConfig(tasks=["cls"], architecture="mtan"), "best") != now
    settings_now = RunConfig.to_dict
    monkeypatch.setattr(RunConfig, "to_dict",
                        lambda self: {k: v for k, v in settings_now(self).items() if k != "architecture"})
    assert settings_fingerprint(config, "best") == now  # what a grid stored before the setting existed
