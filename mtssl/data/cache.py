"""Decode a file source once; later runs memory-map the result.

An entry is a folder ``<cache_dir>/<key>/`` holding ``images.npy``
(``[N, C, S, S]`` uint8), ``targets.npy`` (dtype and shape from the source's
target declaration; both read with ``mmap_mode='c'``) and ``meta.json``.
The key hashes the training size, the source's type, target declaration,
channels, keys, class labels and every item's fingerprint (path, size, mtime), so touching, replacing, adding
or removing a file selects a new entry. An entry is built in a temporary
folder and renamed into place only when complete, so an interrupted build is
never reused. Old entries are not pruned: delete the folder to reclaim space.

Sources that render items themselves at any size (they override
``Source.load_resized``, e.g. the synthetic phantom) are never cached:
drawing them again is as cheap as reading them back.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

from mtssl.data.arrays import SourceArrays, decode_into, source_arrays
from mtssl.data.pixel_limit import max_pixels
from mtssl.data.errors import DataError, Skipped
from mtssl.interfaces import Source

DEFAULT_CACHE_DIR = ".mtssl-cache"
FORMAT = 2
META = "meta.json"


def is_cacheable(source: Source) -> bool:
    return type(source).load_resized is Source.load_resized


def cache_key(source: Source, size: int) -> str:
    digest = hashlib.sha256()
    kind = type(source)
    header = {"format": FORMAT, "size": size, "source": f"{kind.__module__}.{kind.__qualname__}",
              "target": source.target.as_dict(), "channels": source.channels, "classes": list(source.class_names),
              "labels": source.class_labels(), "max_pixels": max_pixels()}  # a different limit may skip different files
    digest.update(json.dumps(header, sort_keys=True).encode())
    for index in range(len(source)):
        digest.update(source.fingerprint(index).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _load_entry(folder: Path, source: Source) -> SourceArrays | None:
    try:
        meta = json.loads((folder / META).read_text())
        images = np.load(folder / "images.npy", mmap_mode="c")
        targets = np.load(folder / "targets.npy", mmap_mode="c")
        kept = [int(i) for i in meta["kept"]]
        skipped = [Skipped(**s) for s in meta["skipped"]]
        if not (int(meta["count"]) == len(kept) <= min(len(images), len(targets))
                and all(0 <= i < len(source) for i in kept)):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or incomplete entry (a field missing, a wrong type): rebuild it
    return source_arrays(source, images, targets, kept, skipped)


def _build_entry(source: Source, size: int, folder: Path, progress: Callable[[int], None] | None,
                 skip_bad: bool) -> None:
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        n = len(source)
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, source.channels, size, size))
        targets = np.lib.format.open_memmap(tmp / "targets.npy", "w+", np.dtype(source.target.dtype),
                                            (n, *source.target.storage_shape(size)))
        kept, skipped = decode_into(source, size, images, targets, progress, skip_bad)
        images.flush()
        targets.flush()
        del images, targets
        meta = {"count": len(kept), "kept": kept, "skipped": [s.as_dict() for s in skipped], "size": size}
        (tmp / META).write_text(json.dumps(meta))
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / META).is_file():  # no finished entry took our place: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_arrays(source: Source, size: int, cache_dir: str | Path | None = None,
                  progress: Callable[[str, int], Callable[[int], None]] | None = None, label: str = "",
                  skip_bad: bool = False) -> SourceArrays:
    """The source's arrays at ``size``, from the cache when the files are unchanged."""
    root = Path(cache_dir or DEFAULT_CACHE_DIR)
    folder = root / cache_key(source, size)
    arrays = _load_entry(folder, source) if (folder / META).is_file() else None
    if arrays is None:
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)  # an unreadable entry: replace it
        tick = progress(f"{label or 'decoding'} (caching)", len(source)) if progress else None
        _build_entry(source, size, folder, tick, skip_bad)
        arrays = _load_entry(folder, source)
        if arrays is None:
            raise DataError(folder, "cache entry could not be read back after building it")
    if arrays.skipped and not skip_bad:
        first = arrays.skipped[0]
        raise DataError(first.path, f"{first.reason} ({len(arrays.skipped)} bad item(s) in this source; "
                                    "--skip-bad leaves them out)")
    return arrays
