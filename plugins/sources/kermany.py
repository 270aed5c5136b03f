"""``kermany:PATH`` — the Kermany pediatric pneumonia set, ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``.

PATH is the dataset root (the ``split`` option picks the sub-folder, train by
default) or one split folder holding NORMAL/ and PNEUMONIA/. NORMAL is class
0 and PNEUMONIA class 1, whatever else the folder holds.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from mtssl.api import DataError, read_options
from mtssl_plugins.sources.files import (FileSource, PatientPattern, SourceOptions, require_dir, scan_class_folders,
                                         subfolders, target_mode)

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
PATIENT = r"^(person\d+|(?:NORMAL2-)?IM-\d+)"
"""The child in a Kermany file name: ``person1234_bacteria_5678`` -> ``person1234``, ``IM-0115-0001`` -> ``IM-0115``."""


def _holds_classes(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in CLASS_NAMES)


def find_split(path: str | Path, split: str) -> Path:
    """The folder with NORMAL/ and PNEUMONIA/: PATH itself, or PATH/<split>."""
    root = require_dir(path)
    if _holds_classes(root):
        return root
    if _holds_classes(root / split):
        return root / split
    found = ", ".join(p.name for p in subfolders(root)) or "nothing"
    raise DataError(root, f"matches no known layout for 'kermany': expected {'/ and '.join(CLASS_NAMES)}/ "
                          f"in it or in its {split}/ folder (found: {found})")


class KermanyOptions(SourceOptions):
    split: str = Field("train", min_length=1, description="sub-folder of the root: train, val or test")
    group: PatientPattern = Field(
        PATIENT, description="regex whose first group (else match) in a file name is the patient")


def build(name: str, path: str | None = None, target=None, seed: int = 0, **options) -> FileSource:
    settings = read_options(f"source '{name}'", options, KermanyOptions)
    target_mode(name, target, ("class",))
    if not path:
        raise ValueError(f"source '{name}' needs a path: {name}:chest_xray or {name}:chest_xray/train")
    folder = find_split(path, settings.split)
    items, problems = scan_class_folders(folder, CLASS_NAMES)
    return FileSource("class", items, CLASS_NAMES, problems).group_by(settings.group)
