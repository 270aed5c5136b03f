"""``montgomery:ROOT`` — Montgomery County TB set: ``CXR_png/`` with ``ManualMask/{leftMask,rightMask}/``.

Left and right lung masks share the image's file name and are merged (OR).
For class targets the stem's last digit is the label (``_0`` normal, ``_1`` TB).
"""
from __future__ import annotations

from pathlib import Path

from mtssl.api import DataError, read_options
from mtssl_plugins.sources.files import (FileSource, Item, SourceOptions, list_images, require_dir, stem_class,
                                         target_mode)

CLASS_NAMES = ("normal", "tuberculosis")


def labelled_items(images: list[Path]) -> tuple[list[Item], list[DataError]]:
    """Class from each file name's ``_0``/``_1`` ending; a name without one is a problem."""
    items, problems = [], []
    for image in images:
        label = stem_class(image, CLASS_NAMES)
        if label is None:
            problems.append(DataError(image, "file name does not end in _0 (normal) or _1 (tuberculosis)"))
        else:
            items.append(Item(image, label))
    return items, problems


def image_folder(root: Path, name: str) -> Path:
    folder = root / name
    if not folder.is_dir():
        raise DataError(root, f"matches no known layout: expected a {name}/ folder of images")
    images = list_images(folder)
    if not images:
        raise DataError(folder, "holds no images")
    return folder


def open_montgomery(path: str, mode: str) -> FileSource:
    root = require_dir(path)
    images = list_images(image_folder(root, "CXR_png"))
    if mode == "class":
        items, problems = labelled_items(images)
        return FileSource(mode, items, CLASS_NAMES, problems)
    sides = [root / "ManualMask" / "leftMask", root / "ManualMask" / "rightMask"]
    for side in sides:
        if not side.is_dir():
            raise DataError(root, f"matches no known layout for 'montgomery' masks: {side.relative_to(root)}/ missing")
    items, problems = [], []
    for image in images:
        masks = tuple(side / image.name for side in sides)
        missing = [m for m in masks if not m.is_file()]
        if missing:
            problems.append(DataError(image, f"mask missing: {', '.join(str(m) for m in missing)}"))
        else:
            items.append(Item(image, masks=(masks,)))
    known = {image.name for image in images}
    for side in sides:
        for orphan in list_images(side):
            if orphan.name not in known:
                problems.append(DataError(orphan, "mask matches no image in CXR_png/"))
    return FileSource(mode, items, (), problems)


def build(name: str, path: str | None = None, target=None, seed: int = 0, **options) -> FileSource:
    read_options(f"source '{name}'", options, SourceOptions)
    mode = target_mode(name, target, ("class", "mask"))
    if not path:
        raise ValueError(f"source '{name}' needs a path: {name}:ROOT (holding CXR_png/ and ManualMask/)")
    return open_montgomery(path, mode)
