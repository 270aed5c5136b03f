"""Streaming from host arrays: same batches as device-resident streams, resumable, chosen by the budget."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mtssl.data.placement import budget_bytes, make_stream, streamed_tasks
from mtssl.data.streams import BatchStream, HostBatchStream
from tests.conftest import tiny_trainer

CPU = torch.device("cpu")


def arrays(n=23, size=8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 3, n).astype(np.int64)
    return images, labels


def both_streams(rows, batch_size=4, seed=7, rank=0, world=1):
    images, labels = arrays()
    targets = lambda r: torch.from_numpy(labels[r])  # noqa: E731
    common = dict(batch_size=batch_size, seed=seed, device=CPU, rank=rank, world=world)
    return (make_stream(images, rows, targets, streamed=False, **common),
            make_stream(images, rows, targets, streamed=True, **common), images, labels)


@pytest.mark.parametrize("world", [1, 2])
def test_streamed_and_resident_streams_give_identical_batches(world):
    rows = np.array([3, 1, 4, 15, 9, 2, 6, 5, 22, 8, 17])
    resident, streamed, images, labels = both_streams(rows, rank=world - 1, world=world)
    assert isinstance(resident, BatchStream) and isinstance(streamed, HostBatchStream)
    assert len(resident) == len(streamed) == len(rows)
    for _ in range(9):  # several passes over the 11 rows
        (xr, yr), (xs, ys) = resident.next(), streamed.next()
        assert xs.shape == xr.shape == (4, 1, 8, 8) and xs.dtype == torch.uint8
        assert torch.equal(xr, xs) and torch.equal(yr, ys)
        # and both are what the rows say: image and label of the same source row
        for image, label in zip(xs, ys):
            match = [r for r in rows if np.array_equal(images[r], image[0].numpy())]
            assert len(match) == 1 and labels[match[0]] == label
    streamed.close()


def test_streamed_state_is_the_state_before_its_look_ahead():
    rows = np.arange(23)
    resident, streamed, _, _ = both_streams(rows, batch_size=5)
    for _ in range(3):
        resident.next(), streamed.next()
    saved, expected = streamed.state(), resident.state()
    assert torch.equal(saved["order"], expected["order"]) and int(saved["epoch"]) == int(expected["epoch"])
    assert torch.equal(saved["generator"], expected["generator"])
    later = [streamed.next()[0] for _ in range(6)]
    _, restored, _, _ = both_streams(rows, batch_size=5, seed=99)
    restored.load_state(saved)
    assert all(torch.equal(a, restored.next()[0]) for a in later)  # a resume continues the same sequence
    restored.close()
    streamed.close()


def test_unlabeled_stream_has_no_targets():
    images, _ = arrays()
    stream = make_stream(images, np.arange(5), None, batch_size=2, seed=0, device=CPU, streamed=True)
    x, y = stream.next()
    assert y is None and x.shape == (2, 1, 8, 8)
    stream.close()


def test_largest_tasks_stream_until_the_rest_fits_the_budget():
    sizes = {"a": 600, "b": 300, "c": 100}
    assert streamed_tasks(sizes, 1000) == set()
    assert streamed_tasks(sizes, 999) == {"a"}
    assert streamed_tasks(sizes, 300) == {"a", "b"}
    assert streamed_tasks(sizes, 0) == {"a", "b", "c"}


def test_budget_in_megabytes_and_automatic_default():
    assert budget_bytes(CPU, 512) == 512 * 2**20
    assert budget_bytes(CPU, None) > 0  # a fraction of the available RAM
    with pytest.raises(ValueError, match="--device-memory-budget"):
        budget_bytes(CPU, -1)


def test_trainer_streams_over_budget_and_trains_the_same(host, tmp_path):
    """A zero budget streams every task; the run matches a device-resident one step for step."""
    tasks = ["cls:fixmatch", "seg:kl"]
    resident = tiny_trainer(host, tmp_path, tasks, ["saliency"], name="resident")
    streamed = tiny_trainer(host, tmp_path, tasks, ["saliency"], name="streamed", device_memory_budget=0)
    assert resident.streamed == set() and streamed.streamed == {"cls", "seg"}
    assert isinstance(streamed.unlabeled["cls"], HostBatchStream)
    for _ in range(2):
        torch.manual_seed(1)
        a = resident.train_step()
        torch.manual_seed(1)
        b = streamed.train_step()
        assert a == b
