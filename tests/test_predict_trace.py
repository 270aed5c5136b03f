"""mtssl predict outputs that trace back to their inputs: a path column, distinct names for colliding stems,
files that are not images named, and no half-written output folder when a bad file stops the run."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mtssl.cli.app import main
from mtssl.evaluation.prediction import output_names
from tiny_run import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20 + seed, 24), dtype=np.uint8)).save(path)
    return path


def predict(run, *args):
    return CliRunner().invoke(main, ["predict", str(run), *map(str, args), "--quiet"])


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_colliding_stems_get_distinct_names_and_each_row_names_its_file(run, tmp_path):
    files = [image(tmp_path / "in" / "a" / "x.png", 1), image(tmp_path / "in" / "b" / "x.png", 2),
             image(tmp_path / "in" / "x-2.png", 3), image(tmp_path / "in" / "c" / "X.png", 4)]
    out = tmp_path / "out"
    result = predict(run, tmp_path / "in", "--out", out)
    assert result.exit_code == 0, result.output
    table = rows(out / "cls.csv")
    assert sorted(Path(r["path"]) for r in table) == sorted(files)
    names = [r["image"] for r in table]
    assert len({n.lower() for n in names}) == 4  # distinct even on a case-insensitive file system
    index = {r["path"]: r for r in rows(out / "index.csv")}
    for row in table:
        assert index[row["path"]]["name"] == row["image"] and index[row["path"]]["status"] == "predicted"
        height = np.asarray(Image.open(row["path"])).shape[0]
        assert np.asarray(Image.open(out / "seg" / f"{row['image']}.png")).shape[0] == height  # its own mask
    x2 = next(r for r in table if Path(r["path"]).name == "x-2.png")
    assert x2["image"] == "x-2"  # a suffixed duplicate never takes another input's own stem


def test_output_names_by_hand():
    paths = [Path("a/x.png"), Path("b/x.png"), Path("x-2.png"), Path("c/X.png"), Path("y.png")]
    assert output_names(paths) == ["x", "x-3", "x-2", "X-4", "y"]


def test_files_that_are_not_images_are_named(run, tmp_path):
    image(tmp_path / "in" / "scan.png", 1)
    for name in ("notes.txt", "labels.csv", ".DS_Store", "sub/readme.md", "sub/report.pdf"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_text("x")
    out = tmp_path / "out"
    result = predict(run, tmp_path / "in", "--out", out)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "not images" in line]
    assert len(lines) == 1 and "5 file(s)" in lines[0] and "and 2 more" in lines[0], result.stderr
    ignored = [r for r in rows(out / "index.csv") if r["status"].startswith("ignored")]
    assert sorted(Path(r["path"]).name for r in ignored) == sorted(
        [".DS_Store", "labels.csv", "notes.txt", "readme.md", "report.pdf"])


def test_a_folder_without_images_says_what_it_holds(run, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "scan.txt").write_text("x")
    result = predict(run, tmp_path / "in", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "scan.txt" in result.stderr


def test_a_bad_file_stops_the_run_and_writes_nothing(run, tmp_path):
    image(tmp_path / "in" / "a.png", 1)
    (tmp_path / "in" / "b.png").write_bytes(b"not an image")
    image(tmp_path / "in" / "c.png", 2)
    result = predict(run, tmp_path / "in", "--out", tmp_path / "out", "--batch-size", "1")
    assert result.exit_code == 2
    (message,) = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert "b.png" in message and "1 of 3" in message
    assert "--skip-bad" in message and "wrote nothing" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no header-only cls.csv, no temporary folder


def test_a_stopped_run_leaves_earlier_predictions_intact(run, tmp_path):
    image(tmp_path / "in" / "a.png", 1)
    out = tmp_path / "out"
    assert predict(run, tmp_path / "in", "--out", out).exit_code == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (tmp_path / "in" / "b.png").write_bytes(b"not an image")
    assert predict(run, tmp_path / "in", "--out", out).exit_code == 2
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_skipped_files_are_listed_in_the_index(run, tmp_path):
    image(tmp_path / "in" / "a.png", 1)
    (tmp_path / "in" / "b.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = predict(run, tmp_path / "in", "--out", out, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "b.png" in result.stderr  # named even under --quiet
    status = {Path(r["path"]).name: r for r in rows(out / "index.csv")}
    assert status["a.png"]["status"] == "predicted" and status["a.png"]["name"] == "a"
    assert status["b.png"]["status"].startswith("skipped:") and status["b.png"]["name"] == ""
    assert [r["image"] for r in rows(out / "cls.csv")] == ["a"]
