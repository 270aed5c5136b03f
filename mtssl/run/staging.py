"""Outputs written aside and moved into place only when complete, so a failure leaves the destination as it was."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def staging_beside(out: Path) -> Iterator[Path]:
    """A fresh hidden folder next to ``out`` (the same file system, so moving out of it is a rename); it and
    whatever is still in it are removed on exit, success or not."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def merge_into(staging: Path, out: Path) -> None:
    """Move everything in ``staging`` to ``out``: one rename for a new folder; into an existing one file by file,
    replacing same-named files and leaving the others alone."""
    if not out.exists():
        os.replace(staging, out)
        return
    for source in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = out / source.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
