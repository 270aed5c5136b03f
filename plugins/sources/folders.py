"""``folders:PATH`` — any class-per-sub-folder tree; sorted sub-folder names are the classes."""
from __future__ import annotations

from pathlib import Path

from mtssl.api import DataError, read_options
from mtssl_plugins.sources.files import (FileOptions, FileSource, list_images, require_dir, scan_class_folders,
                                         subfolders, target_mode)


def open_folders(path: str, channels: int = 1) -> FileSource:
    root = require_dir(path)
    names = [p.name for p in subfolders(root)]
    if len(names) < 2:
        loose = len(list_images(root))
        raise DataError(root, f"matches no known layout: 'folders' needs one sub-folder per class "
                              f"(at least 2), found {len(names)} sub-folder(s) and {loose} loose image(s)")
    items, problems = scan_class_folders(root, names)
    loose = len(list_images(root))
    remarks = [f"{loose} image(s) directly in {root} ignored (not in a class folder)"] if loose else []
    return FileSource("class", items, names, problems, remarks, channels)


def build(name: str, path: str | None = None, target=None, seed: int = 0, **options) -> FileSource:
    settings = read_options(f"source '{name}'", options, FileOptions)
    target_mode(name, target, ("class",))
    if not path:
        raise ValueError(f"source '{name}' needs a path: {name}:ROOT with one sub-folder per class")
    return open_folders(str(Path(path)), settings.channels).group_by(settings.group)
