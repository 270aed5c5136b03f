"""``pairs:IMAGES_DIR,MASKS_DIR`` — images and binary masks in two folders, matched by file stem.

A mask belongs to the image whose stem it repeats, optionally followed by
``_mask``, ``-mask``, ``_seg`` or ``_label`` (``a.png`` <- ``a.png``,
``a_mask.png``, ``a-mask.gif``); the extension may differ. An image with no
mask, a mask with no image, or an image with two matching masks is a bad item.
"""
from __future__ import annotations

from mtssl.api import DataError, read_options
from mtssl_plugins.sources.files import FileOptions, FileSource, list_images, pair_by_stem, require_dir, target_mode


def open_pairs(images_dir: str, masks_dir: str, channels: int = 1) -> FileSource:
    images = require_dir(images_dir, "images folder")
    masks = require_dir(masks_dir, "masks folder")
    image_files = list_images(images)
    if not image_files:
        raise DataError(images, "holds no images (.png, .jpg, .tif, .bmp, .gif, .dcm)")
    items, problems = pair_by_stem(image_files, list_images(masks), masks)
    return FileSource("mask", items, (), problems, channels=channels)


def build(name: str, path: str | None = None, target=None, seed: int = 0, **options) -> FileSource:
    settings = read_options(f"source '{name}'", options, FileOptions)
    target_mode(name, target, ("mask",))
    parts = [p.strip() for p in (path or "").split(",")]
    if len(parts) != 2 or not all(parts):
        missing = ": no masks folder" if len([p for p in parts if p]) == 1 else ""
        raise ValueError(f"source '{name}' needs two folders: {name}:IMAGES_DIR,MASKS_DIR (got '{path or ''}'"
                         f"{missing})")
    return open_pairs(parts[0], parts[1], settings.channels).group_by(settings.group)
