"""``shenzhen:ROOT`` — Shenzhen TB set: ``CXR_png/<stem>.png`` with ``mask/<stem>_mask.png``.

Not every Shenzhen image has a mask: those are reported as missing masks
(skip them with --skip-bad). For class targets the stem's last digit is the
label (``_0`` normal, ``_1`` TB).
"""
from __future__ import annotations

from mtssl.api import DataError, check_options, hookimpl
from mtssl_plugins.sources.files import FileSource, list_images, pair_by_stem, require_dir, require_target
from mtssl_plugins.sources.montgomery import CLASS_NAMES, image_folder, labelled_items


def open_shenzhen(path: str, target: str) -> FileSource:
    root = require_dir(path)
    images = list_images(image_folder(root, "CXR_png"))
    if target == "class":
        items, problems = labelled_items(images)
        return FileSource(target, items, CLASS_NAMES, problems)
    masks = root / "mask"
    if not masks.is_dir():
        raise DataError(root, "matches no known layout for 'shenzhen' masks: mask/ folder missing")
    items, problems = pair_by_stem(images, list_images(masks), masks)
    return FileSource(target, items, (), problems)


def build(name: str, path: str | None = None, target: str = "mask", seed: int = 0, **options) -> FileSource:
    check_options(f"source '{name}'", options, set())
    require_target(name, target, ("class", "mask"))
    if not path:
        raise ValueError(f"source '{name}' needs a path: {name}:ROOT (holding CXR_png/ and mask/)")
    return open_shenzhen(path, target)


@hookimpl
def register_sources(register):
    register("shenzhen", build, description="shenzhen:ROOT, CXR_png/ + mask/<stem>_mask.png (masks, or TB labels)")
