"""``shenzhen:ROOT`` — Shenzhen TB set: ``CXR_png/<stem>.png`` with ``mask/<stem>_mask.png``.

Not every Shenzhen image has a mask: those are reported as missing masks
(skip them with --skip-bad). For class targets the stem's last digit is the
label (``_0`` normal, ``_1`` TB).
"""
from __future__ import annotations

from mtssl.api import DataError, read_options
from mtssl_plugins.sources.files import FileSource, SourceOptions, list_images, pair_by_stem, require_dir, target_mode
from mtssl_plugins.sources.montgomery import CLASS_NAMES, image_folder, labelled_items


def open_shenzhen(path: str, mode: str) -> FileSource:
    root = require_dir(path)
    images = list_images(image_folder(root, "CXR_png"))
    if mode == "class":
        items, problems = labelled_items(images)
        return FileSource(mode, items, CLASS_NAMES, problems)
    masks = root / "mask"
    if not masks.is_dir():
        raise DataError(root, "matches no known layout for 'shenzhen' masks: mask/ folder missing")
    items, problems = pair_by_stem(images, list_images(masks), masks)
    return FileSource(mode, items, (), problems)


def build(name: str, path: str | None = None, target=None, seed: int = 0, **options) -> FileSource:
    read_options(f"source '{name}'", options, SourceOptions)
    mode = target_mode(name, target, ("class", "mask"))
    if not path:
        raise ValueError(f"source '{name}' needs a path: {name}:ROOT (holding CXR_png/ and mask/)")
    return open_shenzhen(path, mode)
