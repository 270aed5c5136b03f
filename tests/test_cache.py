"""The decoded-image cache: reused when files are unchanged, rebuilt when they change, never half-written."""
from __future__ import annotations

import os

import numpy as np
import pytest
from data_trees import class_tree, gradient, write

from mtssl.data.cache import cache_key
from mtssl_plugins.targets import CLASS_LABEL
from mtssl.data.prepare import load_arrays, open_source


class Bars:
    """A progress factory that records the bars it was asked for and can stop a build midway."""

    def __init__(self, stop_after: int | None = None):
        self.labels: list[str] = []
        self.stop_after, self.ticks = stop_after, 0

    def __call__(self, label, total):
        self.labels.append(label)

        def tick(n=1):
            self.ticks += n
            if self.stop_after is not None and self.ticks >= self.stop_after:
                raise KeyboardInterrupt

        return tick


@pytest.fixture
def tree(tmp_path):
    return class_tree(tmp_path / "data", {"a": 4, "b": 4})


def entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_second_load_reuses_the_cache_without_decoding(host, tree, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    source = open_source(host, f"folders:{tree}", CLASS_LABEL, 0)
    bars = Bars()
    first = load_arrays(source, 16, bars, "cls", cache)
    assert bars.labels == ["cls (caching)"] and len(entries(cache)) == 1

    again = open_source(host, f"folders:{tree}", CLASS_LABEL, 0)
    monkeypatch.setattr(type(again), "load", lambda self, i: pytest.fail("decoded despite a valid cache"))
    second = load_arrays(again, 16, bars, "cls", cache)
    assert bars.labels == ["cls (caching)"]
    assert isinstance(second.images, np.memmap)
    assert np.array_equal(first.images, second.images) and np.array_equal(first.targets, second.targets)
    assert second.keys == first.keys and second.class_names == ("a", "b")


def test_size_is_part_of_the_key(host, tree, tmp_path):
    source = open_source(host, f"folders:{tree}", CLASS_LABEL, 0)
    assert cache_key(source, 16) != cache_key(source, 32)


def test_touching_or_replacing_a_file_rebuilds(host, tree, tmp_path):
    cache = tmp_path / "cache"
    spec = f"folders:{tree}"
    before = load_arrays(open_source(host, spec, CLASS_LABEL, 0), 16, cache_dir=cache)
    target = sorted((tree / "a").iterdir())[0]
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    bars = Bars()
    touched = load_arrays(open_source(host, spec, CLASS_LABEL, 0), 16, bars, cache_dir=cache)
    assert bars.labels and len(entries(cache)) == 2
    assert np.array_equal(before.images, touched.images)

    replacement = target.with_suffix(".png")
    target.unlink()
    write(replacement, np.full((40, 40), 200, np.uint8))
    replaced = load_arrays(open_source(host, spec, CLASS_LABEL, 0), 16, cache_dir=cache)
    row = replaced.keys.index(str(replacement))
    assert (replaced.images[row] == 200).all()


def test_interrupted_build_leaves_nothing_reusable(host, tree, tmp_path):
    cache = tmp_path / "cache"
    source = open_source(host, f"folders:{tree}", CLASS_LABEL, 0)
    with pytest.raises(KeyboardInterrupt):
        load_arrays(source, 16, Bars(stop_after=3), cache_dir=cache)
    assert entries(cache) == []
    bars = Bars()
    arrays = load_arrays(source, 16, bars, cache_dir=cache)
    assert bars.ticks == 8 and len(arrays) == 8 and len(entries(cache)) == 1


def test_unreadable_entry_is_rebuilt(host, tree, tmp_path):
    cache = tmp_path / "cache"
    source = open_source(host, f"folders:{tree}", CLASS_LABEL, 0)
    load_arrays(source, 16, cache_dir=cache)
    (cache / entries(cache)[0] / "images.npy").write_bytes(b"broken")
    arrays = load_arrays(source, 16, cache_dir=cache)
    assert arrays.images.shape == (8, 1, 16, 16)


def test_generated_sources_and_cache_off_bypass_the_cache(host, tree, tmp_path):
    cache = tmp_path / "cache"
    load_arrays(open_source(host, "synthetic:n=4", CLASS_LABEL, 0), 16, cache_dir=cache)
    load_arrays(open_source(host, f"folders:{tree}", CLASS_LABEL, 0), 16, cache_dir="off")
    assert not cache.exists() and not (tmp_path / "off").exists()


def test_default_cache_dir_is_in_the_working_directory(host, tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tree / "b" / "extra.png", gradient(1))
    load_arrays(open_source(host, f"folders:{tree}", CLASS_LABEL, 0), 16)
    assert len(entries(tmp_path / ".mtssl-cache")) == 1
