"""Checkpoint files: atomic writes, damage detection, no pickle, optimizer state round trip."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from mtssl.run import checkpoint
from mtssl.run.checkpoint import CheckpointError, atomic_save, flatten_optimizer, load, unflatten_optimizer


def refuse(*args, **kwargs):
    raise AssertionError("pickle used while loading a checkpoint")


class RefusingUnpickler(pickle.Unpickler):
    def __init__(self, *args, **kwargs):
        refuse()


@pytest.fixture
def no_pickle(monkeypatch):
    """Any unpickling (pickle or torch.load) fails the test."""
    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_round_trip_keeps_tensors_and_metadata(tmp_path, no_pickle):
    tensors = {"a": torch.arange(6.0).view(2, 3), "b.c": torch.tensor([1, 2], dtype=torch.int64)}
    atomic_save(tensors, tmp_path / "sub" / "m.safetensors", {"config": {"size": 32}, "step": 4})
    loaded, meta = load(tmp_path / "sub" / "m.safetensors")
    assert set(loaded) == {"a", "b.c"} and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert meta == {"config": {"size": 32}, "step": 4}
    assert leftovers(tmp_path / "sub") == []


def test_second_save_replaces_the_file_whole(tmp_path):
    path = tmp_path / "m.safetensors"
    atomic_save({"big": torch.zeros(1000), "old": torch.ones(3)}, path, {"step": 1})
    atomic_save({"new": torch.full((2,), 7.0)}, path, {"step": 2})
    loaded, meta = load(path)
    assert list(loaded) == ["new"] and meta["step"] == 2
    assert leftovers(tmp_path) == []


def test_failed_write_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    atomic_save({"w": torch.ones(4)}, path, {"step": 1})

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 10)  # half-written
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(CheckpointError, match=f"{tmp_path}: could not write m.safetensors \\(disk full\\)"):
        atomic_save({"w": torch.zeros(4)}, path, {"step": 2})
    loaded, meta = load(path)
    assert torch.equal(loaded["w"], torch.ones(4)) and meta["step"] == 1
    assert leftovers(tmp_path) == []


def test_truncated_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path):
    path = tmp_path / "last.safetensors"
    atomic_save({"w": torch.randn(256)}, path, {"step": 1})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load(path)
    assert str(path) in str(info.value) and "truncated" in str(info.value)


def test_garbage_and_missing_files_are_checkpoint_errors(tmp_path):
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="g.safetensors"):
        load(garbage)
    with pytest.raises(CheckpointError, match="missing.safetensors: checkpoint not found"):
        load(tmp_path / "missing.safetensors")


def test_foreign_safetensors_file_is_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"other.safetensors: not an mtssl checkpoint \(format 'pt'\)"):
        load(path)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.ones(2)}, str(bare))
    with pytest.raises(CheckpointError, match="not an mtssl checkpoint"):
        load(bare)


def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        optimizer.step()
    tensors, meta = flatten_optimizer(optimizer.state_dict())
    atomic_save(tensors, tmp_path / "s.safetensors", {"optimizer": meta})
    with monkeypatch.context() as patch:
        patch.setattr(pickle, "loads", refuse)
        patch.setattr(torch, "load", refuse)
        loaded, loaded_meta = load(tmp_path / "s.safetensors")
    restored = unflatten_optimizer(loaded, loaded_meta["optimizer"])
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    twin_opt = torch.optim.Adam(twin.parameters(), lr=0.1)
    twin_opt.load_state_dict(restored)
    original = optimizer.state_dict()
    for pid, slots in original["state"].items():
        for slot, value in slots.items():
            assert torch.equal(twin_opt.state_dict()["state"][pid][slot], value)
    x = torch.randn(4, 3)
    for m, o in ((model, optimizer), (twin, twin_opt)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(model.weight, twin.weight)
